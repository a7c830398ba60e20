"""Enumeration timing: does a signup's response time tell whether the address subscribes?

The answer's body is the same for a new, a pending and an active address; since
the signup intake (issue 16) the work before it is too: one INSERT of an intake
row, whoever the address belongs to. This script seeds N active (confirmed) and
N pending subscribers in a database of its own, the way the product makes them
(``accept_signup``, the worker's intake step, ``confirm``), starts gunicorn
(gunicorn.conf.py, production app, gthread workers so that one keep-alive
connection carries every request) and one ``newsletter worker`` that drains the
intake meanwhile, as in production (``--no-worker``: none), and sends ROUNDS
rounds of one signup per class in random order: a fresh address, a pending one
and an active one, each round a different address of each class
(``--same-address``: the same pending and active address every round; a new
address can only be new once). It times each request with
``time.perf_counter_ns`` from sending to the last byte of the answer, checks
that status, body and headers are identical across classes, and prints per
class the median, p10 and p90, and per pair of classes Mann-Whitney U with its
tie-corrected z (positive: the first class is slower). A timing oracle counts as
detectable when any |z| > 3. Rate limits are counted in Redis, as in
production, with a limit the benchmark cannot reach.

    .venv/bin/python benchmarks/enumeration_timing.py [--rounds 200] [--workers 2]
        [--endpoint form|api|both] [--same-address] [--database-url ADMIN_URL]
        [--keep] [--fail-on-oracle] [--no-worker] [--tree DIR]

Exit status 0 whatever was measured; 1 when an answer differed between classes
(a plain oracle), or with ``--fail-on-oracle`` when the timing oracle is
detectable. Needs PostgreSQL on 127.0.0.1 and Redis.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from rank_statistics import mann_whitney, percentile

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ORIGIN = "https://www.example.dk"
CLASSES = ("new", "pending", "active")
PAIRS = (("new", "active"), ("pending", "active"), ("new", "pending"))
THRESHOLD = 3.0
# Headers that change from request to request whoever asks.
VOLATILE_HEADERS = {"date", "retry-after", "x-ratelimit-remaining", "x-ratelimit-reset"}
SETTINGS = {
    "SECRET_KEY": "b" * 48,
    "BASE_URL": "https://nyhedsbrev.example.dk",
    "ALLOWED_ORIGINS": ORIGIN,
    "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/15",
    "SIGNUP_RATE_LIMIT": "10000000 per minute",
    "MAIL_SERVER": "127.0.0.1",
}
Request = Callable[[str], tuple[str, bytes, dict[str, str]]]  # path, body, headers
ENDPOINTS: dict[str, Request] = {
    "form": lambda email: (
        "/subscribe",
        urllib.parse.urlencode({"email": email, "website": ""}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": ORIGIN},
    ),
    "api": lambda email: (
        "/api/v1/subscriptions",
        json.dumps({"email": email}).encode(),
        {"Content-Type": "application/json"},
    ),
}


def address(kind: str, run: str, number: int) -> str:
    """An address of the class ``kind``; every class's addresses have the same length."""
    return f"{kind[0]}{run}{number:06d}@example.org"


def seed(database_url: str, run: str, count: int, code: Path) -> None:
    """Migrate, create the default list, sign up 2 * count addresses as the
    product does (``accept_signup``, then the worker's intake step until the
    intake is empty) and confirm the first half (active); the rest stay pending."""
    sys.path.insert(0, str(code))
    from flask_migrate import upgrade
    from sqlalchemy import select

    from newsletter import create_app
    from newsletter.extensions import db
    from newsletter.ledger import Evidence
    from newsletter.models import Channel, Subscriber, Subscription
    from newsletter.subscriptions.intake import SignupRequest, accept_signup
    from newsletter.subscriptions.intake_run import process_intake
    from newsletter.subscriptions.lists import ensure_default_list
    from newsletter.subscriptions.service import confirm
    from newsletter.tokens import TokenPayload

    app = create_app({**SETTINGS, "DATABASE_URL": database_url})
    with app.app_context():
        upgrade(directory=str(code / "migrations"))
        ensure_default_list()
        db.session.commit()
    for kind in ("active", "pending"):
        for number in range(count):
            with app.test_request_context():
                accept_signup(SignupRequest(address(kind, run, number), Channel.FORM, Evidence()))
    with app.app_context():
        while process_intake():
            pass
    for number in range(count):
        with app.test_request_context():
            email = address("active", run, number)
            key = db.session.scalar(
                select(Subscriber.token_key).where(Subscriber.email_key == email)
            )
            confirm(TokenPayload(str(key)), Evidence())
    with app.app_context():
        rows = db.session.execute(
            select(Subscriber.email_key, Subscription.status).join(Subscription)
        )
        found = Counter((email[0], str(status)) for email, status in rows)
    if found != {("a", "active"): count, ("p", "pending"): count}:
        raise RuntimeError(f"seeding went wrong: {found}")


def server_env(database_url: str, code: Path) -> dict[str, str]:
    """The environment of the server and the worker: the settings, and the code's tree."""
    env = {**os.environ, **{f"NEWSLETTER_{k}": v for k, v in SETTINGS.items()}}
    env["NEWSLETTER_DATABASE_URL"] = database_url
    env["NEWSLETTER_MAIL_PORT"] = "9"  # nothing listens: the outbox backs off
    if code != ROOT:
        env["PYTHONPATH"] = str(code)
    return env


def start_worker(env: dict[str, str], code: Path, log: Any) -> subprocess.Popen[bytes]:
    """A ``newsletter worker`` draining the intake as in production (mail it
    cannot send stays queued: MAIL_SERVER points at a closed port)."""
    venv = Path(sys.executable).parent
    return subprocess.Popen([str(venv / "newsletter"), "worker"], env=env, cwd=code,
                            stdout=log, stderr=log)  # fmt: skip


def start_server(
    env: dict[str, str], code: Path, workers: int, log: Any
) -> tuple[subprocess.Popen[bytes], int]:
    """gunicorn with the production settings file and app on a free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = dict(env)
    env.update(
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS=str(workers),
        # The sync worker closes the connection after each answer; gthread
        # with one thread serves one request at a time and keeps it open.
        GUNICORN_WORKER_CLASS="gthread",
        GUNICORN_THREADS="1",
    )
    venv = Path(sys.executable).parent
    server = subprocess.Popen(
        [str(venv / "gunicorn"), "-c", "gunicorn.conf.py", "--access-logfile", "/dev/null",
         "wsgi:app"],
        env=env, cwd=code, stdout=log, stderr=log,
    )  # fmt: skip
    for _ in range(150):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server, port
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.2)
    server.terminate()
    log.seek(0)
    raise RuntimeError("gunicorn did not start:\n" + log.read()[-3000:])


def measure(
    port: int, request: Request, addresses: dict[str, list[str]], rounds: int, rng: random.Random
) -> tuple[dict[str, list[float]], dict[str, set[Any]], int]:
    """Send the rounds; return milliseconds and distinct answers per class, and
    how many connections were opened."""
    times: dict[str, list[float]] = {kind: [] for kind in CLASSES}
    answers: dict[str, set[Any]] = {kind: set() for kind in CLASSES}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    opened = 0
    for number in range(rounds):
        for kind in rng.sample(CLASSES, len(CLASSES)):
            path, body, headers = request(addresses[kind][number])
            opened += connection.sock is None
            started = time.perf_counter_ns()
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
            times[kind].append((time.perf_counter_ns() - started) / 1e6)
            stable = sorted((k.lower(), v) for k, v in response.getheaders())
            stable = [(k, v) for k, v in stable if k not in VOLATILE_HEADERS]
            answers[kind].add((response.status, content, tuple(stable)))
    connection.close()
    return times, answers, opened


def report(name: str, times: dict[str, list[float]], answers: dict[str, set[Any]]) -> bool:
    """Print the figures of one endpoint; True when a timing oracle is detectable."""
    print(f"{'class':<8} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'n':>5}")
    for kind in CLASSES:
        ms = times[kind]
        print(f"{kind:<8} {statistics.median(ms):>10.2f} {percentile(ms, 0.1):>8.2f} "
              f"{percentile(ms, 0.9):>8.2f} {len(ms):>5}")  # fmt: skip
    print(f"{'pair':<18} {'median diff ms':>14} {'U':>9} {'z':>7} {'P(first slower)':>16}")
    largest = 0.0
    for first, second in PAIRS:
        result = mann_whitney(times[first], times[second])
        diff = statistics.median(times[first]) - statistics.median(times[second])
        largest = max(largest, abs(result.z))
        print(f"{first + ' vs ' + second:<18} {diff:>+14.2f} {result.u:>9.1f} {result.z:>+7.2f} "
              f"{result.share:>16.2f}")  # fmt: skip
    distinct = set().union(*answers.values())
    if len(distinct) == 1:
        status, body, _ = next(iter(distinct))
        print(f"answers: identical across classes (status {status}, {len(body)} bytes, same "
              "headers but Date, Retry-After and X-RateLimit-Remaining/Reset)")  # fmt: skip
    else:
        print(f"FAILURE: the {name} answers differ: " + difference(answers))
    detectable = largest > THRESHOLD
    print(f"timing oracle detectable: {'yes' if detectable else 'no'} (max |z| = {largest:.1f},"
          f" threshold {THRESHOLD:g})")  # fmt: skip
    return detectable


def difference(answers: dict[str, set[Any]]) -> str:
    """What differs among the answers: statuses, bodies, header values."""
    distinct = set().union(*answers.values())
    parts = [", ".join(f"{kind}: {len(found)} distinct" for kind, found in answers.items())]
    statuses = {answer[0] for answer in distinct}
    if len(statuses) > 1:
        parts.append(f"statuses {sorted(statuses)}")
    bodies = {answer[1] for answer in distinct}
    if len(bodies) > 1:
        parts.append(f"{len(bodies)} bodies of {sorted({len(b) for b in bodies})} bytes")
    header_sets = [dict(answer[2]) for answer in distinct]
    for name in sorted(set().union(*header_sets)):
        values = {headers.get(name, "(absent)") for headers in header_sets}
        if len(values) > 1:
            parts.append(f"header {name}: {sorted(values)}")
    return "; ".join(parts)


def machine(admin_url: str, code: Path) -> str:
    """CPUs, CPU model, load, PostgreSQL and the code measured, in two lines."""
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor() or "unknown CPU",
    )  # fmt: skip
    with psycopg.connect(admin_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    git = ["git", "-C", str(ROOT)]
    if code != ROOT:
        return (
            f"machine: {os.cpu_count()} CPUs ({model}), load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; PostgreSQL "
            f"{version[0] if version else '?'}; Python {platform.python_version()}\n"
            f"code: the tree {code}"
        )
    revision = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()  # fmt: skip
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} CPUs ({model}), load average {load}; PostgreSQL "
        f"{version[0] if version else '?'}; Python {platform.python_version()}\n"
        f"code: {revision}{' + uncommitted changes' if dirty else ''}"
    )


def main() -> int:
    """Create the database, seed it, serve it, measure each endpoint, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="measured rounds (200)")
    parser.add_argument("--warmup", type=int, default=20, help="rounds not counted (20)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--endpoint", choices=("form", "api", "both"), default="both")
    parser.add_argument("--same-address", action="store_true",
                        help="one pending and one active address for every round")  # fmt: skip
    parser.add_argument("--database-url", default=ADMIN_URL,
                        help="PostgreSQL to CREATE/DROP the benchmark database from")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--seed", type=int, default=None, help="of the random order")
    parser.add_argument("--fail-on-oracle", action="store_true",
                        help="exit 1 when a timing oracle is detectable")  # fmt: skip
    parser.add_argument("--no-worker", action="store_true",
                        help="no worker while measuring (the intake only grows)")  # fmt: skip
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the code measured: a tree of it (git archive COMMIT | tar -x -C "
                        "DIR), imported by the seeding and put on the PYTHONPATH of server and "
                        "worker")  # fmt: skip
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")
    seed_value = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed_value)
    endpoints = ["form", "api"] if args.endpoint == "both" else [args.endpoint]
    run = uuid.uuid4().hex[:8]
    name = f"newsletter_bench_{run}"
    database_url = args.database_url.rsplit("/", 1)[0] + f"/{name}"
    total = args.warmup + args.rounds
    seeded = 1 if args.same_address else total
    print("enumeration timing: gunicorn (gunicorn.conf.py, wsgi:app) with "
          f"{args.workers} gthread workers of 1 thread, PostgreSQL, rate limits in Redis "
          "(raised), one keep-alive connection")  # fmt: skip
    code = args.tree.resolve()
    print(machine(args.database_url, code))
    print("command: " + shlex.join([os.path.relpath(sys.executable), *sys.argv]))
    print(f"addresses: {seeded} active, {seeded} pending, a fresh new one for every request; "
          f"{args.rounds} rounds after {args.warmup} warm-up, random order "
          f"(--seed {seed_value})")  # fmt: skip
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    log = tempfile.NamedTemporaryFile("w+", prefix="enumeration_timing_", suffix=".log")  # noqa: SIM115
    failed, detected = False, False
    try:
        started = time.monotonic()
        seed(database_url, run, seeded, code)
        print(f"seeded in {time.monotonic() - started:.1f} s")
        env = server_env(database_url, code)
        server, port = start_server(env, code, args.workers, log)
        worker = None if args.no_worker else start_worker(env, code, log)
        print(
            "worker: " + ("none" if worker is None else "one newsletter worker draining the intake")
        )
        try:
            for index, endpoint in enumerate(endpoints):
                addresses = {
                    "new": [address("new", run, index * total + i) for i in range(total)],
                    "pending": [address("pending", run, i % seeded) for i in range(total)],
                    "active": [address("active", run, i % seeded) for i in range(total)],
                }
                for kind in ("pending", "active"):
                    rng.shuffle(addresses[kind])
                request = ENDPOINTS[endpoint]
                path = request("x")[0]
                measure(port, request, addresses, args.warmup, rng)
                rest = {kind: values[args.warmup :] for kind, values in addresses.items()}
                times, answers, opened = measure(port, request, rest, args.rounds, rng)
                print(f"\n{endpoint}: POST {path}"
                      + (f" (Origin {ORIGIN})" if endpoint == "form" else "")
                      + f", {opened} connection(s) opened for the measured rounds")  # fmt: skip
                detected |= report(endpoint, times, answers)
                failed |= len(set().union(*answers.values())) != 1
        finally:
            server.terminate()
            server.wait(timeout=30)
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=60)
        print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        log.close()
        if args.keep:
            print(f"database kept: {database_url}")
        else:
            with psycopg.connect(args.database_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    return 1 if failed or (detected and args.fail_on_oracle) else 0


if __name__ == "__main__":
    raise SystemExit(main())
