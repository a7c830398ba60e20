"""Signup load: gunicorn (2 workers) on PostgreSQL, driven by wrk at 32 connections.

Runs four phases against one server, each DURATION seconds: GET /healthz (the
ceiling: a request that does one database round trip), POST /subscribe (the
hosted form, as the static site's cross-origin form posts it), POST
/api/v1/subscriptions (JSON), and POST /bench/floor: the cheapest signup that
is durable before it is answered (rate limit, JSON, validation, one INSERT and
COMMIT; benchmarks/floor_app.py). The floor shows what the stack allows; the
gap between it and the API is what our design costs. Every signup uses a new
address. Afterwards it checks the database: every accepted signup is stored,
with exactly one outbox row (its confirmation mail), and nothing else was
written.

Rate limits stay on, counted in Redis as in production, with a limit high
enough not to refuse the benchmark's single client address.

    .venv/bin/python benchmarks/signup_load.py [--duration 30] [--connections 32]

Needs wrk (apt-get install wrk), PostgreSQL on 127.0.0.1 and Redis.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ORIGIN = "https://www.example.dk"

LUA = r"""
local counter = 0
local thread_id = 0
local prefix = "%(prefix)s"
setup = function(thread) thread:set("id", thread_id); thread_id = thread_id + 1 end
init = function(args) math.randomseed(id) end
request = function()
  counter = counter + 1
  local email = prefix .. id .. "x" .. counter .. "@example.org"
  %(body)s
end
done = function(summary, latency, requests)
  io.write(string.format("STATUS non2xx=%%d\n", summary.errors.status))
  io.write(string.format("LAT p50=%%.3f p99=%%.3f\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""
FORM = (
    'return wrk.format("POST", "/subscribe", {["Content-Type"]="application/x-www-form-urlencoded",'
    ' ["Origin"]="' + ORIGIN + '"}, "email=" .. email .. "&website=")'
)
JSON = (
    'return wrk.format("POST", "/api/v1/subscriptions", {["Content-Type"]="application/json"},'
    " '{\"email\":\"' .. email .. '\"}')"
)
FLOOR = JSON.replace("/api/v1/subscriptions", "/bench/floor")
HEALTH = 'return wrk.format("GET", "/healthz")'


@dataclass
class Result:
    """One wrk phase."""

    name: str
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors + timeouts + non-2xx (303 counts as success for the form)
    accepted: int


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_wrk(name: str, url: str, body: str, prefix: str, args: argparse.Namespace) -> Result:
    """Run one wrk phase and parse its summary."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % {"prefix": prefix, "body": body})
    command = [
        "wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
        "--timeout", f"{args.timeout}s", "--latency", "-s", script.name, url,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non2xx = int(re.search(r"STATUS non2xx=(\d+)", output).group(1))  # type: ignore[union-attr]
    p50, p99 = map(float, re.search(r"LAT p50=([\d.]+) p99=([\d.]+)", output).groups())  # type: ignore[union-attr]
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    # wrk counts 3xx as non-2xx; the form answers 303 to its thank-you page.
    redirects = non2xx if name == "form" else 0
    errors = socket_errors + non2xx - redirects
    return Result(name, total, rate, p50, p99, errors, total - errors)


def main() -> int:
    """Start the server, run the phases, check the database, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    # wrk gives up on a request after --timeout and counts it as an error,
    # although the server still completes it. 2 s (wrk's default) made slow
    # but successful signups look like failures; a browser waits far longer.
    # Slowness shows in p99 instead; a request slower than this is an error.
    parser.add_argument("--timeout", type=int, default=10, help="seconds (10)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    name = f"newsletter_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    env = {
        **os.environ,
        "NEWSLETTER_SECRET_KEY": "b" * 48,
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_BASE_URL": "https://nyhedsbrev.example.dk",
        "NEWSLETTER_ALLOWED_ORIGINS": ORIGIN,
        "NEWSLETTER_RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/15",
        "NEWSLETTER_SIGNUP_RATE_LIMIT": "10000000 per minute",
        "NEWSLETTER_MAIL_SERVER": "127.0.0.1",
    }
    venv = Path(sys.executable).parent
    subprocess.run([str(venv / "newsletter"), "db", "upgrade"], env=env, cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run([str(venv / "newsletter"), "list", "ensure-default"], env=env, cwd=ROOT,
                   check=True, capture_output=True)  # fmt: skip
    port = free_port()
    env.update(GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS=str(args.workers))
    server = subprocess.Popen(
        # The production app plus the floor's route (benchmarks/floor_app.py).
        [str(venv / "gunicorn"), "-c", "gunicorn.conf.py", "--access-logfile", "/dev/null",
         "--pythonpath", str(ROOT / "benchmarks"), "floor_app:app"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)  # noqa: S310 (our http URL)
                break
            except OSError:
                time.sleep(0.2)
        results = [
            run_wrk("ceiling", f"{base}/healthz", HEALTH, "h", args),
            run_wrk("form", f"{base}/subscribe", FORM, "form", args),
            run_wrk("api", f"{base}/api/v1/subscriptions", JSON, "api", args),
            run_wrk("floor", f"{base}/bench/floor", FLOOR, "floor", args),
        ]
    finally:
        server.terminate()
        server.wait(timeout=30)
    with psycopg.connect(database_url) as conn:
        stored = {
            prefix: conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE n = 1) FROM ("
                " SELECT s.id, count(o.id) AS n FROM subscribers s"
                " LEFT JOIN outbox o ON o.subscriber_id = s.id"
                " WHERE s.email_key LIKE %s GROUP BY s.id) t",
                (prefix + "%",),
            ).fetchone()
            for prefix in ("form", "api")
        }
        floor_rows = conn.execute("SELECT count(*) FROM bench_floor").fetchone()
        stored["floor"] = (floor_rows[0], floor_rows[0]) if floor_rows else (0, 0)
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    ceiling = results[0].per_second
    print(f"signup load: gunicorn {args.workers} workers, wrk {args.connections} connections, "
          f"{args.duration} s a phase, wrk timeout {args.timeout} s, PostgreSQL, rate limits in "
          "Redis")  # fmt: skip
    print(f"{'phase':<8} {'req/s':>9} {'of ceiling':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>7} {'accepted':>9} {'stored':>7} {'lost':>5}")  # fmt: skip
    ok = True
    for r in results:
        count, one_outbox = stored.get(r.name, (None, None))
        lost = "" if count is None else str(max(0, r.accepted - one_outbox))
        print(f"{r.name:<8} {r.per_second:>9.1f} {r.per_second / ceiling:>9.0%} {r.p50_ms:>8.1f} "
              f"{r.p99_ms:>8.1f} {r.errors:>7} {r.accepted:>9} "
              f"{'' if count is None else count:>7} {lost:>5}")  # fmt: skip
        if count is not None:
            # wrk stops counting at the deadline while up to one request per
            # connection is still in flight; the server completes those too.
            in_flight = count - r.accepted
            ok &= r.errors == 0 and one_outbox == count and 0 <= in_flight <= args.connections
    floor, api = results[3].per_second, results[2].per_second
    print(f"the floor is {floor / ceiling:.0%} of the ceiling; the API signup is "
          f"{api / floor:.0%} of the floor")  # fmt: skip
    print(
        "every accepted signup is stored with exactly one outbox row (stored - accepted ="
        " requests still in flight when wrk stopped counting; the floor stores one row and"
        " no outbox)"
        if ok
        else "MISMATCH: a signup was lost, doubled or half-written"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
