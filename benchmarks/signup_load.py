"""Signup load: gunicorn (2 workers) on PostgreSQL, driven by wrk at 32 connections,
with a `newsletter worker` draining the signup intake meanwhile, as in production.

Runs four phases against one server, each DURATION seconds: GET /healthz (the
ceiling: a request that does one database round trip), POST /subscribe (the
hosted form, as the static site's cross-origin form posts it), POST
/api/v1/subscriptions (JSON), and POST /bench/floor: the cheapest signup that
is durable before it is answered (rate limit, JSON, validation, one INSERT and
COMMIT; benchmarks/floor_app.py). A signup now does what the floor does: it
stores one intake row and answers (issue 16), so the form and the API should
come close to the floor. Every signup uses a new address.

One `newsletter worker` runs through all phases with the same settings,
sending the confirmation mails to an SMTP sink (aiosmtpd, a process of its
own). The intake queue is sampled every 0.5 s: its depth at the start and end
of each phase shows whether the worker keeps up. After the load the worker
drains the queue (the drain time is from the end of the last phase to an empty
intake). Then, unless --paced-rate 0, it waits until the outbox has sent the
load's confirmations and runs a paced phase: a Python client sends API signups
at a fixed rate (200/s) for --paced-seconds, recording when each was answered,
and the worker drains again.

Afterwards it checks the database: every accepted signup is one subscriber
with exactly one confirmation in the outbox and one `requested` ledger event
(0 lost, 0 doubled), no intake row failed, and `newsletter ledger verify`
passes. Latency "request to confirmation queued" is outbox.created_at minus
the subscriber's created_at (the request's time as the intake row recorded
it, a lower bound of when it was answered); for the paced phase also minus
the moment the client had the answer.

Rate limits stay on, counted in Redis as in production, with a limit high
enough not to refuse the benchmark's single client address.

    .venv/bin/python benchmarks/signup_load.py [--duration 30] [--connections 32]
        [--paced-rate 200] [--paced-seconds 20] [--no-worker]

Needs wrk (apt-get install wrk), PostgreSQL on 127.0.0.1 and Redis.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
BODIES = {
    "ceiling": 'return wrk.format("GET", "/healthz")',
    "form": FORM,
    "api": JSON,
    "floor": JSON.replace("/api/v1/subscriptions", "/bench/floor"),
}
# The SMTP sink the worker sends the confirmations to: a process of its own.
SINK = """
import sys, time
from aiosmtpd.controller import Controller
class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
controller = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
while True:
    time.sleep(3600)
"""


@dataclass
class Result:
    """One load phase."""

    name: str
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors + timeouts + non-2xx (303 counts as success for the form)
    accepted: int
    late: int = 0  # paced: requests sent more than 50 ms after their slot
    answered: dict[str, datetime] = field(default_factory=dict)  # paced: address -> answer time


def run_wrk(name: str, url: str, args: argparse.Namespace) -> Result:
    """Run one wrk phase and parse its summary."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % {"prefix": name, "body": BODIES[name]})
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


def paced_phase(base: str, rate: float, seconds: int, clients: int = 32) -> Result:
    """API signups at a fixed rate (open loop: request i is due at i / rate s),
    from ``clients`` threads; records when each answer arrived (UTC)."""
    host, port = base.removeprefix("http://").split(":")
    count = int(rate * seconds)
    answered: dict[str, datetime] = {}
    times: list[float] = []
    errors, late = [0], [0]
    lock = threading.Lock()
    started = time.monotonic() + 0.2

    def client(k: int) -> None:
        for i in range(k, count, clients):
            due = started + i / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            email = f"paced{i}@example.org"
            sent = time.monotonic()
            try:
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
                connection.request("POST", "/api/v1/subscriptions", body=json.dumps(
                    {"email": email}), headers={"Content-Type": "application/json"})  # fmt: skip
                response = connection.getresponse()
                response.read()
                connection.close()
                ok = response.status == 202
            except OSError:
                ok = False
            now = datetime.now(UTC).replace(tzinfo=None)
            with lock:
                times.append((time.monotonic() - sent) * 1000)
                late[0] += sent - due > 0.05
                if ok:
                    answered[email] = now
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    times.sort()
    p50, p99 = times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]
    return Result("paced", count, count / elapsed, p50, p99, errors[0], len(answered), late[0],
                  answered)  # fmt: skip


def start_sink(port: int) -> subprocess.Popen[bytes]:
    """Start the SMTP sink on a loopback port and wait until it listens."""
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return sink
        except OSError:
            time.sleep(0.1)
    sink.terminate()
    raise RuntimeError("the SMTP sink did not start")


WAITING = "SELECT count(*) FROM signup_intake WHERE failed_at IS NULL"


class QueueSampler:
    """Samples the intake's depth every 0.5 s and at marks, in a thread of its own."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.samples: list[tuple[float, int]] = []
        self.marks: dict[str, int] = {}  # label -> index into samples
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.conn = psycopg.connect(database_url, autocommit=True)

    def sample(self) -> int:
        """Read the depth now and keep it; the new sample's index."""
        with self.lock:
            if self.conn.closed:
                return len(self.samples) - 1
            row = self.conn.execute(WAITING).fetchone()
            self.samples.append((time.monotonic(), int(row[0]) if row else 0))
            return len(self.samples) - 1

    def mark(self, label: str) -> None:
        """Sample now under ``label`` (a phase's start or end)."""
        self.marks[label] = self.sample()

    def run(self) -> None:
        """Sample until stopped."""
        while not self.stopped.wait(0.5):
            self.sample()

    def stop(self) -> None:
        """Stop sampling and close the connection."""
        self.stopped.set()
        with self.lock:
            self.conn.close()

    def span(self, phase: str) -> tuple[int, int, int]:
        """Depth at the start and the end of ``phase`` and the most in between."""
        first, last = self.marks[f"{phase} start"], self.marks[f"{phase} end"]
        depths = [depth for _, depth in self.samples[first : last + 1]]
        return depths[0], depths[-1], max(depths)


def wait_outbox(database_url: str, since: float, timeout: int) -> float:
    """Wait until no mail is queued in the outbox; seconds from ``since``."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() - since < timeout:
            row = conn.execute("SELECT count(*) FROM outbox WHERE status = 'queued'").fetchone()
            if row is not None and row[0] == 0:
                return time.monotonic() - since
            time.sleep(0.2)
    raise RuntimeError(f"the outbox was not sent within {timeout} s")


def wait_empty(sampler: QueueSampler, since: float, timeout: int) -> float:
    """Wait until no intake row waits; seconds from ``since``."""
    while time.monotonic() - since < timeout:
        if sampler.samples[sampler.sample()][1] == 0:
            return time.monotonic() - since
        time.sleep(0.1)
    raise RuntimeError(f"the intake was not drained within {timeout} s")


@dataclass
class Check:
    """What the signups of one phase left in the database."""

    subscribers: int
    one_outbox: int  # subscribers with exactly one confirmation in the outbox
    one_event: int  # subscribers with exactly one `requested` event
    doubled: int  # subscribers with more than one of either
    lost: int  # accepted signups with no subscriber
    in_flight: int  # subscribers - accepted: answered after the client stopped counting


def check_phase(conn: psycopg.Connection, prefix: str, accepted: int) -> Check:
    """Count the subscribers of a phase's addresses and their outbox rows and events."""
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE o = 1), count(*) FILTER (WHERE e = 1),"
        " count(*) FILTER (WHERE o > 1 OR e > 1) FROM ("
        " SELECT s.id,"
        "  (SELECT count(*) FROM outbox o WHERE o.subscriber_id = s.id AND o.kind = 'confirm') o,"
        "  (SELECT count(*) FROM consent_events c WHERE c.subscriber_id = s.id"
        "   AND c.event = 'requested') e"
        " FROM subscribers s WHERE s.email_key LIKE %s) t",
        (prefix + "%",),
    ).fetchone()
    assert row is not None
    subscribers, one_outbox, one_event, doubled = (int(x) for x in row)
    return Check(subscribers, one_outbox, one_event, doubled, max(0, accepted - subscribers),
                 subscribers - accepted)  # fmt: skip


@dataclass
class Stats:
    """Percentiles of a latency in milliseconds."""

    n: int
    p50: float
    p99: float
    max: float

    def __str__(self) -> str:
        return f"p50 {self.p50:.0f}, p99 {self.p99:.0f}, max {self.max:.0f} (n {self.n})"


def stats(values: list[float]) -> Stats:
    """p50, p99 and max of ``values`` (nearest rank)."""
    values = sorted(values) or [float("nan")]
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return Stats(len(values), pick(0.5), pick(0.99), values[-1])


def latencies(
    conn: psycopg.Connection, prefix: str, paced: Result | None
) -> tuple[Stats, Stats | None]:
    """Request (subscriber.created_at) to confirmation queued (outbox.created_at),
    ms; for the paced phase also from the client's answer time."""
    rows = conn.execute(
        "SELECT s.email_key, s.created_at, o.created_at FROM subscribers s"
        " JOIN outbox o ON o.subscriber_id = s.id AND o.kind = 'confirm'"
        " WHERE s.email_key LIKE %s",
        (prefix + "%",),
    ).fetchall()
    lower = stats([(queued - requested).total_seconds() * 1000 for _, requested, queued in rows])
    if paced is None:
        return lower, None
    answered = [
        (queued - paced.answered[key]).total_seconds() * 1000
        for key, _, queued in rows
        if key in paced.answered
    ]
    return lower, stats(answered)


def worker_rate(result: Result, start: int, end: int, seconds: float) -> float:
    """Intake rows the worker did a second during a phase: arrivals minus growth."""
    arrivals = result.accepted if result.name in ("form", "api", "paced") else 0
    return (arrivals - (end - start)) / seconds


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    """Create the database, measure, and drop the database also when the run fails."""
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
    parser.add_argument(
        "--paced-rate", type=float, default=200.0, help="API signups/s (200; 0: none)"
    )
    parser.add_argument("--paced-seconds", type=int, default=20)
    parser.add_argument("--no-worker", action="store_true",
                        help="no worker during the phases (it drains afterwards)")  # fmt: skip
    parser.add_argument("--phases", default="ceiling,form,api,floor",
                        help="the wrk phases, in this order")  # fmt: skip
    parser.add_argument("--drain-timeout", type=int, default=900, help="seconds (900)")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the code measured: a tree of it (git archive COMMIT | tar -x -C "
                        "DIR), its PYTHONPATH and cwd for server, worker and CLI")  # fmt: skip
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    name = f"newsletter_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        return measure(args, ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def measure(args: argparse.Namespace, database_url: str) -> int:
    """Start the server and the worker, run the phases, check the database, print."""
    sink_port = free_port()
    env = {
        **os.environ,
        "NEWSLETTER_SECRET_KEY": "b" * 48,
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_BASE_URL": "https://nyhedsbrev.example.dk",
        "NEWSLETTER_ALLOWED_ORIGINS": ORIGIN,
        "NEWSLETTER_RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/15",
        "NEWSLETTER_SIGNUP_RATE_LIMIT": "10000000 per minute",
        "NEWSLETTER_MAIL_SERVER": "127.0.0.1",
        "NEWSLETTER_MAIL_PORT": str(sink_port),
        "NEWSLETTER_MAIL_DEFAULT_SENDER": "Bench <nyhedsbrev@example.dk>",
    }
    code = args.tree.resolve()
    if code != ROOT:
        env["PYTHONPATH"] = str(code)
    venv = Path(sys.executable).parent
    cli = str(venv / "newsletter")
    subprocess.run([cli, "db", "upgrade"], env=env, cwd=code, check=True, capture_output=True)
    subprocess.run([cli, "list", "ensure-default"], env=env, cwd=code, check=True,
                   capture_output=True)  # fmt: skip
    port = free_port()
    web_env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(args.workers)}
    server = subprocess.Popen(
        # The production app plus the floor's route (benchmarks/floor_app.py).
        [str(venv / "gunicorn"), "-c", "gunicorn.conf.py", "--access-logfile", "/dev/null",
         "--pythonpath", str(code / "benchmarks"), "floor_app:create_floor_app()"],
        env=web_env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sink = start_sink(sink_port)
    worker_log = tempfile.NamedTemporaryFile(  # noqa: SIM115
        "w+", prefix="signup_load_worker_", suffix=".log", delete=False
    )
    worker: subprocess.Popen[bytes] | None = None

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([cli, "worker"], env=env, cwd=code, stdout=worker_log,
                                stderr=subprocess.STDOUT)  # fmt: skip

    base = f"http://127.0.0.1:{port}"
    sampler = QueueSampler(database_url)
    paced = None
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)  # noqa: S310 (our http URL)
                break
            except OSError:
                time.sleep(0.2)
        if not args.no_worker:
            worker = start_worker()
        threading.Thread(target=sampler.run, daemon=True).start()
        results: list[Result] = []
        paths = {"ceiling": "/healthz", "form": "/subscribe",
                 "api": "/api/v1/subscriptions", "floor": "/bench/floor"}  # fmt: skip
        for phase in args.phases.split(","):
            path = paths[phase]
            sampler.mark(f"{phase} start")
            results.append(run_wrk(phase, base + path, args))
            sampler.mark(f"{phase} end")
        load_end = time.monotonic()
        if worker is None:
            worker = start_worker()
        drain = wait_empty(sampler, load_end, args.drain_timeout)
        # The confirmations of the load are sent before the paced phase, so
        # that it starts from an empty outbox as a steady rate would have it.
        outbox_drain = None
        if args.paced_rate > 0:
            outbox_drain = wait_outbox(database_url, load_end, args.drain_timeout)
            sampler.mark("paced start")
            paced = paced_phase(base, args.paced_rate, args.paced_seconds)
            sampler.mark("paced end")
            paced_drain = wait_empty(sampler, time.monotonic(), args.drain_timeout)
    finally:
        sampler.stop()
        server.terminate()
        server.wait(timeout=30)
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        sink.terminate()
        sink.wait(timeout=10)
    verify = subprocess.run([cli, "ledger", "verify"], env=env, cwd=code, capture_output=True,
                            text=True)  # fmt: skip
    with psycopg.connect(database_url) as conn:
        signups = [r for r in results if r.name in ("form", "api")]
        checks = {r.name: check_phase(conn, r.name, r.accepted) for r in signups}
        if paced is not None:
            checks["paced"] = check_phase(conn, "paced", paced.accepted)
        floor_rows = conn.execute("SELECT count(*) FROM bench_floor").fetchone()
        failed_rows = conn.execute(
            "SELECT count(*) FROM signup_intake WHERE failed_at IS NOT NULL"
        ).fetchone()
        lat = {name: latencies(conn, name, paced if name == "paced" else None) for name in checks}
        sent = conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
    worker_log.seek(0)
    problems = [line for line in worker_log if " ERROR " in line or " WARNING " in line]
    worker_log.close()
    if problems:
        print(f"worker log: {worker_log.name}")
    else:
        os.unlink(worker_log.name)

    # The floor may be run more than once (--phases): a signup phase is compared
    # with the floor phases next to it (before and after), as the machine's rate
    # drifts over a run; with none next to it, with the mean of all of them.
    by_name = {r.name: r for r in results}
    floors = [r.per_second for r in results if r.name == "floor"]
    ceiling, floor = by_name["ceiling"].per_second, sum(floors) / len(floors)

    def floor_of(r: Result) -> float:
        at = results.index(r)
        near = [n.per_second for n in results[at - 1 : at + 2] if n.name == "floor"]
        return sum(near) / len(near) if near and r.name != "floor" else floor

    print(f"signup load: gunicorn {args.workers} workers, wrk {args.connections} connections, "
          f"{args.duration} s a phase, wrk timeout {args.timeout} s, PostgreSQL, rate limits in "
          f"Redis; {'no worker during the phases' if args.no_worker else '1 newsletter worker'}, "
          "SMTP sink aiosmtpd")  # fmt: skip
    print(f"{'phase':<8} {'req/s':>9} {'ceiling':>8} {'floor':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'errors':>6} {'accepted':>8} {'queue start/end/max':>20} {'worker/s':>8}")  # fmt: skip
    ok = True
    for r in results:
        start, end, peak = sampler.span(r.name)
        print(f"{r.name:<8} {r.per_second:>9.1f} {r.per_second / ceiling:>8.0%} "
              f"{r.per_second / floor_of(r):>6.0%} {r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {r.errors:>6} "
              f"{r.accepted:>8} {f'{start}/{end}/{peak}':>20} "
              f"{worker_rate(r, start, end, args.duration):>8.0f}")  # fmt: skip
    if paced is not None:
        start, end, peak = sampler.span("paced")
        print(f"{'paced':<8} {paced.per_second:>9.1f} {'':>8} {'':>6} {paced.p50_ms:>7.1f} "
              f"{paced.p99_ms:>7.1f} {paced.errors:>6} {paced.accepted:>8} "
              f"{f'{start}/{end}/{peak}':>20} "
              f"{worker_rate(paced, start, end, paced.requests / paced.per_second):>8.0f}   "
              f"(target {args.paced_rate:g}/s, "
              f"{paced.late} sent > 50 ms late)")  # fmt: skip
    print(f"floor rows stored: {floor_rows[0] if floor_rows else 0}")
    print(f"drain after the load: {drain:.1f} s from the end of the last phase to an empty "
          "intake" + (f"; after the paced: {paced_drain:.1f} s" if paced else ""))  # fmt: skip
    if outbox_drain is not None:
        print(f"all confirmations of the load sent: {outbox_drain:.1f} s after the end of the "
              "last phase (the paced phase starts then)")  # fmt: skip
    print(f"{'phase':<8} {'subscribers':>11} {'lost':>5} {'doubled':>7} {'1 outbox':>8} "
          f"{'1 event':>8} {'in flight':>9}")  # fmt: skip
    for phase, c in checks.items():
        print(f"{phase:<8} {c.subscribers:>11} {c.lost:>5} {c.doubled:>7} {c.one_outbox:>8} "
              f"{c.one_event:>8} {c.in_flight:>9}")  # fmt: skip
        in_flight_ok = 0 <= c.in_flight <= (args.connections if phase != "paced" else 64)
        ok &= c.lost == 0 and c.doubled == 0 and in_flight_ok
        ok &= c.one_outbox == c.subscribers == c.one_event
    failed = failed_rows[0] if failed_rows else 0
    ok &= failed == 0 and verify.returncode == 0
    ok &= all(r.errors == 0 for r in results if r.name != "ceiling")
    ok &= paced is None or paced.errors == 0
    print(
        f"intake rows failed: {failed}; outbox: "
        + ", ".join(f"{status} {count}" for status, count in sent)
    )
    print(
        "ledger verify: "
        + (verify.stdout.strip().splitlines() or ["?"])[0]
        + ("" if verify.returncode == 0 else f" FAILED {verify.stderr.strip()[:300]}")
    )
    print("request to confirmation queued (outbox.created_at - subscriber.created_at), ms:")
    for phase, (lower, answered) in lat.items():
        print(
            f"  {phase:<6} {lower}"
            + (f"\n  {phase:<6} from the answer: {answered}" if answered else "")
        )
    print(
        f"worker log: {len(problems)} warnings/errors"
        + (f", first: {problems[0].strip()[:200]}" if problems else "")
    )
    form, api = by_name["form"], by_name["api"]
    targets = [
        ("form >= 90 % of the floor", form.per_second >= 0.9 * floor_of(form)),
        ("api >= 90 % of the floor", api.per_second >= 0.9 * floor_of(api)),
        ("form p99 < 100 ms", form.p99_ms < 100),
        ("api p99 < 100 ms", api.p99_ms < 100),
        ("0 errors, 0 lost, 0 doubled, ledger verifies", ok),
    ]
    for phase, (lower, _) in lat.items():
        if args.no_worker and phase != "paced":
            continue  # the worker started after the load: the drain time says it
        targets.append((f"{phase}: confirmation queued within 1 s at p99", lower.p99 < 1000))
    for label, met in targets:
        print(f"{'PASS' if met else 'FAIL'} {label}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
