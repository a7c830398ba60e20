"""`newsletter worker`: send what is in the outbox."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from ..campaigns.progress import ProgressReporter
from .round import run_worker


@click.command("worker")
@click.option("--once", is_flag=True, help="Stop when nothing is due instead of waiting.")
@click.option("--poll", default=1.0, show_default=True, help="Seconds between empty polls.")
@with_appcontext
def worker_command(once: bool, poll: float) -> None:
    """Send queued mail until stopped (SIGTERM/Ctrl-C finish the batch first)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if not app.config.get("MAIL_SERVER") and not (app.debug or app.testing):
        raise click.UsageError(
            "NEWSLETTER_MAIL_SERVER is not set. Outside debug mode the worker will not "
            "pretend to send: set the SMTP settings (see README, Settings)."
        )
    click.echo("worker: sending from the outbox" + (" (once)" if once else ""))
    failures = run_worker(
        app, stop, poll_interval=poll, once=once, on_campaign_batch=ProgressReporter()
    )
    if failures:
        click.echo(f"worker: {failures} batch(es) failed; see the log", err=True)
        raise SystemExit(1)
