"""Where a signup's time goes: one process, the test client, PostgreSQL, cProfile.

Runs N signups through the WSGI app (no HTTP server, no concurrency) after a
warm-up, and prints milliseconds per request, SQL statements per request, and
the functions that take the most time. A /healthz loop in the same run is the
baseline. Rate limits are counted in Redis as in production.

    .venv/bin/python benchmarks/profile_signup.py [--requests 500] [--path api|form|floor]

``floor`` is benchmarks/floor_app.py's route: one INSERT of the request, the
least any stored signup can cost.

Needs PostgreSQL on 127.0.0.1 and Redis.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
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
ORIGIN = "https://www.example.dk"


def main() -> int:
    """Create a database, run the loops, print the figures and the profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--path", choices=("api", "form", "floor"), default="api")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    name = f"newsletter_prof_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        return run(args, ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def run(args: argparse.Namespace, database_url: str) -> int:
    """Profile the signups against DATABASE_URL."""
    from flask_migrate import upgrade

    from newsletter import create_app
    from newsletter.extensions import db
    from newsletter.subscriptions.lists import ensure_default_list

    app = create_app(
        {
            "SECRET_KEY": "b" * 48,
            "DATABASE_URL": database_url,
            "BASE_URL": "https://nyhedsbrev.example.dk",
            "ALLOWED_ORIGINS": [ORIGIN],
            "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/15",
            "SIGNUP_RATE_LIMIT": "10000000 per minute",
            "MAIL_SERVER": "127.0.0.1",
        }
    )
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        ensure_default_list()
        db.session.commit()
        statements = 0

        def count(*_: Any) -> None:
            nonlocal statements
            statements += 1

        event.listen(db.engine, "before_cursor_execute", count)

    if args.path == "floor":
        from benchmarks.floor_app import add_floor_route

        add_floor_route(app)
    client = app.test_client()
    counter = iter(range(10**9))

    def signup() -> None:
        email = f"p{next(counter)}@example.org"
        if args.path == "api":
            response = client.post("/api/v1/subscriptions", json={"email": email})
        elif args.path == "floor":
            response = client.post("/bench/floor", json={"email": email})
        else:
            response = client.post(
                "/subscribe", data={"email": email, "website": ""}, headers={"Origin": ORIGIN}
            )
        assert response.status_code in (200, 202, 303), response.status_code

    def health() -> None:
        assert client.get("/healthz").status_code == 200

    for loop in (signup, health):
        for _ in range(50):  # warm-up: imports, connection pool, template cache
            loop()
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(args.requests):
            loop()
        wall = (time.perf_counter() - started) / args.requests * 1000
        cpu = (time.process_time() - cpu_started) / args.requests * 1000
        print(
            f"{loop.__name__}: {wall:.2f} ms a request, of which {cpu:.2f} ms CPU in this"
            f" process and {wall - cpu:.2f} ms waiting (PostgreSQL, Redis)"
        )
        statements = 0
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for _ in range(args.requests):
            loop()
        profiler.disable()
        elapsed = time.perf_counter() - started
        print(
            f"{loop.__name__}: {elapsed / args.requests * 1000:.2f} ms a request (profiled), "
            f"{statements / args.requests:.1f} SQL statements a request"
        )
        if loop is signup:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
            ours = r"newsletter/|email_validator|flask_limiter|limits/|flask_babel"
            stats.sort_stats("cumulative").print_stats(ours, args.top)
            print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
