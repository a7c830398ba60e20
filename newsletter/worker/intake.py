"""The intake loop: a worker's own thread that takes signups from the intake.

A continuous worker (``newsletter worker``, ``newsletter run``) runs it beside
its main loop, so a signup waits for neither a batch of mail nor a campaign
batch: the main loop's rounds can take seconds, and a confirmation should be
in the outbox within a second of the answer. ``worker --once`` and the tests'
``deliver`` run the intake step inside the round instead (``work_once``).

When the intake is empty the loop waits for a signup:
- a signup in this process sets ``intake.arrived`` and wakes it at once;
- on PostgreSQL it also looks at the intake every INTAKE_POLL_SECONDS (one
  indexed read), so a signup taken by another process is picked up as
  promptly. Not LISTEN/NOTIFY: PostgreSQL serialises the commits of
  transactions that notify, which would make every signup's commit wait for
  the one before it (docs/architecture.md, "Signup intake"). On SQLite a read
  would take the write lock (BEGIN IMMEDIATE), so only the signal and a
  one-second look apply there.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask

from ..database import is_postgresql
from ..extensions import db
from ..lease import worker_id
from ..subscriptions.intake import arrived
from ..subscriptions.intake_run import intake_due, process_intake

log = logging.getLogger(__name__)

# The longest an idle loop waits before it looks again, whatever the database.
LONGEST_WAIT = 1.0


def start_intake_loop(app: Flask, stop: threading.Event) -> IntakeLoop:
    """Start the intake loop in a daemon thread; it ends when ``stop`` is set."""
    loop = IntakeLoop(app, stop)
    loop.thread.start()
    return loop


class IntakeLoop:
    """The thread and the number of its rounds that failed."""

    def __init__(self, app: Flask, stop: threading.Event) -> None:
        self.app = app
        self.stop = stop
        self.failures = 0
        # Set when a round queued confirmations (or the loop ended): the main
        # loop waits on it, to send them without waiting out its poll interval.
        self.did_work = threading.Event()
        self.thread = threading.Thread(target=self.run, name="intake", daemon=True)

    def run(self) -> None:
        """Process the intake until stopped; a failed round is logged and retried."""
        owner = worker_id()
        while not self.stop.is_set():
            with self.app.app_context():
                try:
                    handled = process_intake(owner)
                except Exception:
                    db.session.rollback()
                    log.exception("intake: round failed; will try again")
                    self.failures += 1
                    handled = 0
                    self.stop.wait(LONGEST_WAIT)
                finally:
                    db.session.remove()
            if handled:
                self.did_work.set()
            else:
                self.wait()
        self.did_work.set()

    def wait(self) -> None:
        """Wait until a signup may be waiting (see the module), or stop."""
        deadline = time.monotonic() + LONGEST_WAIT
        step = float(self.app.config["INTAKE_POLL_SECONDS"])
        with self.app.app_context():
            look = is_postgresql()
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if arrived.wait(min(step, left)):
                arrived.clear()
                return
            if look and self._due():
                return

    def _due(self) -> bool:
        """Whether a row waits (False when the database cannot say)."""
        with self.app.app_context():
            try:
                return intake_due()
            except Exception:
                db.session.rollback()
                return False
            finally:
                db.session.remove()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (after ``stop`` is set)."""
        self.thread.join(timeout)
