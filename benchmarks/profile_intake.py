"""Where the worker's time goes on signups: drain N intake rows in one process, cProfile.

Stores N signups the way a request does (``accept_signup``, new addresses, or
with ``--known F`` a share F of addresses that already subscribe, pending),
then drains them as the worker's round does and prints rows a second,
milliseconds of wall and of CPU per row, SQL statements per batch, and the
profile. It drains twice: once unprofiled for the figures, once under
cProfile for where the time goes (fresh rows each time).

``--round`` drains with the whole worker round (``work_once``: the intake,
then an outbox batch that sends the confirmations to an SMTP sink in a
process of its own, campaigns, retention), as ``newsletter worker`` does;
without it only the intake step (``process_intake``) runs.

    .venv/bin/python benchmarks/profile_intake.py [--rows 2000] [--batch 200]
        [--known 0.0] [--round] [--top 25]

Needs PostgreSQL on 127.0.0.1 (and Redis for the app's limiter settings).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def main() -> int:
    """Create a database, run the drains, print the figures and the profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200, help="INTAKE_BATCH_SIZE (200)")
    parser.add_argument("--known", type=float, default=0.0,
                        help="share of rows of addresses already pending")  # fmt: skip
    parser.add_argument("--round", action="store_true", help="the whole worker round")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    name = f"newsletter_prof_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    sink = None
    try:
        if args.round:
            from signup_load import start_sink

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            sink = start_sink(port)
        return run(args, ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", port if sink else None)
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(timeout=10)
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def run(args: argparse.Namespace, database_url: str, smtp_port: int | None) -> int:
    """Store rows, drain them unprofiled and profiled, print."""
    from flask_migrate import upgrade

    from newsletter import create_app
    from newsletter.extensions import db
    from newsletter.ledger import Evidence
    from newsletter.models import Channel
    from newsletter.subscriptions.intake import SignupRequest, accept_signup
    from newsletter.subscriptions.intake_run import process_intake
    from newsletter.subscriptions.lists import ensure_default_list
    from newsletter.worker.round import work_once

    settings: dict[str, Any] = {
        "SECRET_KEY": "b" * 48,
        "DATABASE_URL": database_url,
        "BASE_URL": "https://nyhedsbrev.example.dk",
        "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/15",
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": smtp_port or 9,
        "MAIL_DEFAULT_SENDER": "Bench <nyhedsbrev@example.dk>",
        "INTAKE_BATCH_SIZE": args.batch,
    }
    app = create_app(settings)
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        ensure_default_list()
        db.session.commit()
        event.listen(db.engine, "before_cursor_execute", count)
    evidence = Evidence(ip="192.0.2.1", user_agent="bench", source_url="https://www.example.dk/")
    known_rows = int(args.rows * args.known)

    def store(tag: str) -> None:
        """``known_rows`` addresses signed up and drained (pending), then N rows
        of new addresses and one more signup of each known address."""
        known = [f"{tag}k{i}@example.org" for i in range(known_rows)]
        with app.test_request_context():
            for email in known:
                accept_signup(SignupRequest(email, Channel.FORM, evidence))
        drain()
        with app.test_request_context():
            for email in [f"{tag}{i}@example.org" for i in range(args.rows)] + known:
                accept_signup(SignupRequest(email, Channel.FORM, evidence))

    def step() -> int:
        with app.app_context():
            try:
                return work_once(app, "profiler") if args.round else process_intake("profiler")
            finally:
                db.session.remove()

    def drain() -> tuple[int, int]:
        """Run steps until nothing is handled; rows handled and steps."""
        handled = steps = 0
        while done := step():
            handled += done
            steps += 1
        return handled, steps

    for label, profiler in (("unprofiled", None), ("profiled", cProfile.Profile())):
        store(label[0])
        statements = 0
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        handled, steps = drain()
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows = args.rows + known_rows
        print(
            f"{label}: {handled} handled ({rows} intake rows, {known_rows} of known addresses) in"
            f" {steps} {'rounds' if args.round else 'batches'} of up to {args.batch}:"
            f" {wall:.2f} s, {rows / wall:.0f} rows/s; per row {wall / rows * 1000:.2f} ms wall,"
            f" {cpu / rows * 1000:.2f} ms CPU in this process,"
            f" {(wall - cpu) / rows * 1000:.2f} ms waiting; {statements / max(steps, 1):.1f} SQL"
            " statements a step"
        )
        if profiler is not None:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(r"newsletter/", args.top)
            print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
