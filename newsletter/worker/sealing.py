"""The seal loop: a worker's own thread that seals new ledger events.

Events must be under a signed checkpoint at most LEDGER_SEAL_INTERVAL seconds
after they are written, whatever the main loop is doing (a campaign batch can
take longer than that). The loop looks every second at most and seals when
events wait and the last seal is half an interval old; ``worker --once`` seals
in its round instead (``work_once``). Several workers take turns on the tree
row's lock; a seal with nothing new does nothing.

Each step also queues the day's witness mail when LEDGER_WITNESS_MAILTO is
set and it is due (ledger/witness_mail.py), so it needs no loop of its own.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, current_app

from ..extensions import db
from ..ledger.seal import seal, seal_due, seal_waiting
from ..ledger.witness_mail import queue_witness_mail, witness_mail_due

log = logging.getLogger(__name__)

# The loop waits half an interval between rounds, but never longer than
# LONGEST_WAIT nor shorter than SHORTEST_WAIT (an interval of 0 would spin on
# the database).
LONGEST_WAIT = 1.0
SHORTEST_WAIT = 0.05


def seal_step(always: bool = False) -> int:
    """Seal what waits when it is due (or whenever anything waits, with
    ``always``), then queue the witness mail when it is due; returns how many
    events were sealed. Ends with no transaction open."""
    interval = 0.0 if always else float(current_app.config["LEDGER_SEAL_INTERVAL"]) / 2
    sealed = 0
    if seal_due(interval):
        sealed = sum(done.added for done in seal_waiting())
    if witness_mail_due():
        queue_witness_mail()
    db.session.rollback()
    return sealed


def start_seal_loop(app: Flask, stop: threading.Event) -> SealLoop:
    """Start the seal loop in a daemon thread; it ends when ``stop`` is set."""
    loop = SealLoop(app, stop)
    loop.thread.start()
    return loop


class SealLoop:
    """The thread and the number of its rounds that failed."""

    def __init__(self, app: Flask, stop: threading.Event) -> None:
        self.app = app
        self.stop = stop
        self.failures = 0
        self.thread = threading.Thread(target=self.run, name="seal", daemon=True)

    def run(self) -> None:
        """Seal when due until stopped; a failed round is logged and retried.

        The first round seals unconditionally: after a key rotation (a worker
        restart), the newest checkpoint then carries the new key's signature
        even when no event waits."""
        half = float(self.app.config["LEDGER_SEAL_INTERVAL"]) / 2
        wait = max(SHORTEST_WAIT, min(LONGEST_WAIT, half))
        first = True
        while not self.stop.is_set():
            with self.app.app_context():
                try:
                    if first:  # a rotated key signs the newest checkpoint at once
                        seal()
                    first = False
                    seal_step()
                except Exception:
                    db.session.rollback()
                    log.exception("seal: round failed; will try again")
                    self.failures += 1
                finally:
                    db.session.remove()
            self.stop.wait(wait)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (after ``stop`` is set)."""
        self.thread.join(timeout)
