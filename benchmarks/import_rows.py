#!/usr/bin/env python
"""CSV import throughput: N rows into one list on PostgreSQL, as a worker runs it.

What one run does:

1. creates a throw-away PostgreSQL database from an admin URL, migrates it
   and drops it at the end, also when the run fails (``--sqlite`` uses a
   temporary SQLite file instead);
2. writes a CSV of N rows in memory: a share with consent evidence
   (``--evidence``, default 0.5: those become active), the rest without
   (pending, each with a confirmation mail in the outbox);
3. stores it as a job (``create_job``, the upload request's work) and queues it;
4. claims it and runs it as the worker does (``run_claimed``), timing the
   check phase (every row validated) and the write phase (one transaction:
   subscribers, subscriptions, outbox, ledger events, audit);
5. checks the counts, runs ``ledger verify`` and prints the figures.

Usage::

    .venv/bin/python benchmarks/import_rows.py [--rows N] [--evidence SHARE]
        [--database-url ADMIN_URL] [--sqlite] [--keep-database]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from newsletter import create_app  # noqa: E402
from newsletter.extensions import db  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SECRET = "benchmark-secret-key-that-is-long-enough-0123456789"  # noqa: S105


def make_csv(rows: int, evidence: float) -> bytes:
    """A UTF-8 CSV with a header and ``rows`` distinct addresses."""
    out = io.StringIO()
    out.write("email,name,consented_at,source\n")
    with_evidence = int(rows * evidence)
    for i in range(rows):
        if i < with_evidence:
            out.write(f"person{i}@example.org,Person {i},2024-03-01T10:00:00Z,fair 2024\n")
        else:
            out.write(f"person{i}@example.org,Person {i},,\n")
    return out.getvalue().encode()


@contextlib.contextmanager
def database(admin_url: str, sqlite: bool, keep: bool) -> Iterator[str]:
    """A fresh database URL for the run; dropped afterwards unless ``keep``."""
    if sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.sqlite"
        return
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"newsletter_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def run(url: str, rows: int, evidence: float) -> None:
    """Migrate, import, check, print."""
    from flask_migrate import upgrade

    from newsletter.imports import jobs
    from newsletter.imports.run import claim_next, run_claimed
    from newsletter.ledger import verify_ledger
    from newsletter.ledger.seal import seal_waiting
    from newsletter.subscriptions.lists import DEFAULT_CONSENT_TEXT, create_list

    app = create_app({"DATABASE_URL": url, "SECRET_KEY": SECRET, "TESTING": True})
    with app.app_context():
        upgrade()
        topic = create_list("bench", "Bench", DEFAULT_CONSENT_TEXT)
        data = make_csv(rows, evidence)
        print(f"backend: {db.engine.dialect.name}; {rows} rows, {len(data) / 2**20:.1f} MB")

        started = time.perf_counter()
        job = jobs.create_job(data, "bench.csv", topic.id, actor=None, ip=None)
        jobs.queue_job(
            job,
            {"email": "0", "name": "1", "consented_at": "2", "source": "3"},
            actor=None,
            ip=None,
        )
        stored = time.perf_counter()
        claim = claim_next()
        assert claim is not None
        checked_at: list[float] = []

        def progress(done: int) -> None:
            if done == rows:
                checked_at.append(time.perf_counter())

        claim_started = time.perf_counter()
        result = run_claimed(claim, on_progress=progress)
        finished = time.perf_counter()
        assert result.status == "done", result.errors[:5]
        assert result.imported_active + result.imported_pending == rows

        seal_started = time.perf_counter()
        seal_waiting()
        verify_started = time.perf_counter()
        report = verify_ledger()
        verified = time.perf_counter()
        assert report.ok, report.problems[:5]

        checked = checked_at[0] if checked_at else claim_started
        total = finished - claim_started
        print(f"upload request (decode, count, store): {stored - started:6.2f} s")
        print(f"worker: check phase                   : {checked - claim_started:6.2f} s")
        print(f"worker: write phase (one transaction) : {finished - checked:6.2f} s")
        print(
            f"worker: total                         : {total:6.2f} s  = {rows / total:,.0f} rows/s"
        )
        print(
            f"result: {result.imported_active} active, {result.imported_pending} pending; "
            f"ledger seal of {report.events} events: {verify_started - seal_started:.2f} s, "
            f"verify: {verified - verify_started:.2f} s, ok"
        )
        db.session.remove()
        db.engine.dispose()


def main() -> None:
    """Parse the options and run once."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--evidence", type=float, default=0.5)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args()
    with database(args.database_url, args.sqlite, args.keep_database) as url:
        run(url, args.rows, args.evidence)


if __name__ == "__main__":
    main()
