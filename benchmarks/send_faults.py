#!/usr/bin/env python
"""Campaign sending under faults: two workers on two simulated hosts, one PostgreSQL, one sink.

Run as root (network namespaces, iptables). Per fault, a fresh run:

1. a database in a private PostgreSQL cluster listening on the root side of
   two veth pairs (benchmarks/fault_lab.py), migrated and seeded as
   benchmarks/send_throughput.py does (N subscribers, one campaign, enqueued);
2. two real ``newsletter worker`` processes, each started with ``ip netns
   exec`` in its own namespace, reach PostgreSQL and the SMTP sink over their
   own veth;
3. at one third of the campaign, counted at the sink, worker 0 suffers the
   fault: ``kill-between`` (SIGKILL at the first MAIL FROM of a new SMTP
   session: its last batch recorded, the next one claimed and not begun),
   ``kill-mid`` (SIGKILL once its session has delivered half a batch, that
   message counted and not answered), ``partition`` (iptables DROP of its
   packets to PostgreSQL's port for --cut seconds; SMTP still reachable);
4. once the campaign is done, the fault over and the sink quiet for 3 s, the
   workers are stopped and the deliveries per recipient counted at the sink.

Prints per fault: missing, mailed twice, the seconds until the partitioned
worker logged a warning or error, taken_over/possibly_duplicated from
``newsletter campaign status --json`` where the code has them, and PASS/FAIL
per target: 0 missing; mailed twice <= --chunk per failed worker; a
partitioned worker logs within 10 s.

    sudo .venv/bin/python benchmarks/send_faults.py [--recipients 20000] [--batch 500]
        [--lease 30] [--chunk 50] [--faults none,kill-between,kill-mid,partition,partition]
        [--cut 60] [--sink-delay 0] [--keep-db] [--fail-at setup|run]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fault_lab import (
    PG_PORT,
    SINK_PORT,
    Fault,
    Host,
    Sink,
    make_hosts,
    new_log_line,
    start_postgres,
    stop_workers,
)
from send_throughput import (
    create_database,
    drop_database,
    enqueue,
    machine_facts,
    make_app,
    newsletter_executable,
    seed,
    worker_environment,
)

FAULTS = ("none", "kill-between", "kill-mid", "partition")
LOG_TARGET = 10.0  # seconds until a partitioned worker says so
QUIET = 3.0  # seconds without a delivery before a run is over


@dataclass
class Outcome:
    """What one fault's run showed."""

    fault: str
    missing: int = 0
    twice: int = 0  # recipients mailed more than once
    extra: int = 0  # deliveries beyond the first, all recipients
    failed_workers: int = 0
    fired_at: float | None = None  # seconds after the workers started
    logged_after: float | None = None
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def chunk_settings(chunk: int) -> dict[str, str]:
    """NEWSLETTER_DELIVERY_FENCE_CHUNK = chunk where the code has it (not before fencing)."""
    from newsletter.config import DEFAULTS

    key = "DELIVERY_FENCE_CHUNK"
    return {f"NEWSLETTER_{key}": str(chunk)} if key in DEFAULTS else {}


def start_worker(
    host: Host, url: str, secret: str, args: argparse.Namespace, log: Path
) -> subprocess.Popen[bytes]:
    """A `newsletter worker` on ``host``, its database and SMTP at the host's root-side address."""
    env = worker_environment(url, secret, SINK_PORT, args.batch, chunk_settings(args.chunk))
    env.update(
        NEWSLETTER_MAIL_SERVER=host.root_addr, NEWSLETTER_DELIVERY_LEASE_SECONDS=str(args.lease)
    )
    with log.open("wb") as out:  # `ip netns exec` execs: the pid is the worker's
        return subprocess.Popen(
            [*host.exec_prefix(), newsletter_executable(), "worker", "--poll", "0.5"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def campaign_state(app: Any, campaign_id: int) -> tuple[str, dict[str, int]]:
    """The campaign's status and its deliveries by status."""
    from sqlalchemy import text

    from newsletter.extensions import db

    with app.app_context():
        status = db.session.execute(
            text("SELECT status FROM campaigns WHERE id = :id"), {"id": campaign_id}
        ).scalar_one()
        rows = db.session.execute(
            text("SELECT status, count(*) FROM deliveries WHERE campaign_id = :id GROUP BY 1"),
            {"id": campaign_id},
        )
        counts = {str(s): int(n) for s, n in rows}
        db.session.remove()
    return str(status), counts


def run_fault(kind: str, index: int, args: argparse.Namespace, lab: dict[str, Any]) -> Outcome:
    """One fresh run with one fault; see the module's docstring."""
    outcome, hosts, sink, work = Outcome(kind), lab["hosts"], lab["sink"], lab["work"]
    admin, name, url = create_database(lab["admin_url"])
    app, workers, secret = None, [], "bench-" + secrets.token_urlsafe(36)
    try:
        app = make_app(url, secret, SINK_PORT, {})
        from flask_migrate import upgrade

        with app.app_context():
            upgrade()
        _, campaign_id = seed(app, args.recipients)
        enqueue(app, campaign_id)
        sink.reset()
        logs = [work / f"run{index}-{kind}-worker{i}.log" for i in range(len(hosts))]
        for host, log in zip(hosts, logs, strict=True):
            host_url = f"postgresql+psycopg://postgres@{host.root_addr}:{PG_PORT}/{name}"
            workers.append(start_worker(host, host_url, secret, args, log))
        started = time.monotonic()
        if args.fail_at == "run":
            raise RuntimeError("--fail-at run: failing on purpose, to test the clean-up")
        fault = Fault(kind, workers[0], hosts[0], args.recipients // 3, args.batch, sink)
        cut_at = log_offset = None
        healed, done, checked = False, False, 0.0
        while True:
            now = time.monotonic()
            if kind == "partition" and fault.fired_at is not None and cut_at is None:
                hosts[0].cut_postgres()
                cut_at, log_offset = time.monotonic(), logs[0].stat().st_size
            if cut_at is not None and not healed and now - cut_at >= args.cut:
                hosts[0].heal_postgres()
                healed = True
            if (
                cut_at is not None
                and outcome.logged_after is None
                and log_offset is not None
                and new_log_line(logs[0], log_offset)
            ):
                outcome.logged_after = now - cut_at
            if now - checked >= 1.0:
                checked = now
                done = campaign_state(app, campaign_id)[0] == "done"
            over = kind == "none" or (
                fault.fired_at is not None and (kind != "partition" or healed)
            )
            quiet = now - sink.last_at >= QUIET
            if done and quiet and (over or fault.fired_at is None):
                if not over:
                    outcome.notes.append("the fault never fired: the campaign ended first")
                break
            if now - started > args.timeout:
                outcome.notes.append(f"timed out after {args.timeout:.0f} s")
                break
            if all(w.poll() is not None for w in workers):
                outcome.notes.append("every worker has exited")
                break
            time.sleep(0.1)
        outcome.seconds = time.monotonic() - started
        if fault.fired_at is not None:
            outcome.fired_at = fault.fired_at - started
            outcome.failed_workers = 1
        stop_workers(workers)
        _, outcome.statuses = campaign_state(app, campaign_id)
        outcome.progress = status_json(url, secret, campaign_id)
        count(outcome, sink, args.recipients)
        return outcome
    finally:
        stop_workers(workers)
        if app is not None:
            with app.app_context():
                from newsletter.extensions import db

                db.engine.dispose()
        if args.keep_db:
            print(f"  database {name} kept (--keep-db; its cluster goes when the run ends)")
        else:
            drop_database(admin, name)


def status_json(url: str, secret: str, campaign_id: int) -> dict[str, Any]:
    """`newsletter campaign status ID --json`, parsed ({} if it fails)."""
    env = worker_environment(url, secret, SINK_PORT, 1, {})
    done = subprocess.run(
        [newsletter_executable(), "campaign", "status", str(campaign_id), "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    with contextlib.suppress(ValueError):
        return dict(json.loads(done.stdout))
    return {}


def count(outcome: Outcome, sink: Sink, recipients: int) -> None:
    """Missing and duplicated deliveries per recipient, from the sink's counts."""
    expected = {f"reader{i}@example.com" for i in range(1, recipients + 1)}
    with sink.lock:
        counts = dict(sink.counts)
    outcome.missing = sum(1 for address in expected if not counts.get(address))
    outcome.twice = sum(1 for n in counts.values() if n > 1)
    outcome.extra = sum(n - 1 for n in counts.values() if n > 1)
    strangers = set(counts) - expected
    if strangers:
        outcome.notes.append(f"{len(strangers)} unexpected recipient(s) at the sink")


def report(outcomes: list[Outcome], chunk: int) -> bool:
    """Print the table and a PASS/FAIL line per target; True when all pass."""
    print(
        "\n| fault | missing | mailed twice (extra mails) | fault at | worker logged after |"
        " taken_over | possibly_duplicated | deliveries | run |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for o in outcomes:
        logged = (
            "-"
            if o.fault != "partition"
            else (f"{o.logged_after:.1f} s" if o.logged_after is not None else "never")
        )
        fired = f"{o.fired_at:.1f} s" if o.fired_at is not None else "-"
        print(
            f"| {o.fault} | {o.missing} | {o.twice} ({o.extra}) | {fired} | {logged} | "
            f"{o.progress.get('taken_over', 'n/a')} | "
            f"{o.progress.get('possibly_duplicated', 'n/a')} | {o.statuses} | {o.seconds:.0f} s |"
        )
    ok = True
    print()
    for o in outcomes:
        bound = chunk * o.failed_workers
        checks = [
            (f"0 missing ({o.missing})", o.missing == 0),
            (f"mailed twice {o.twice} <= {bound}", o.twice <= bound),
        ]
        if o.fault == "partition":
            checks.append(
                (
                    f"logged within {LOG_TARGET:.0f} s",
                    o.logged_after is not None and o.logged_after <= LOG_TARGET,
                )
            )
        for text, passed in checks:
            print(f"{'PASS' if passed else 'FAIL'} {o.fault}: {text}")
            ok &= passed
        for note in o.notes:
            print(f"  note ({o.fault}): {note}")
    return ok


def stop_on_signal(signum: int, _frame: Any) -> None:
    """Leave through SystemExit, so that every clean-up runs as for Ctrl-C."""
    print(f"stopped by signal {signum}; cleaning up", file=sys.stderr, flush=True)
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the faults; exit 0 when every target is met, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500, help="DELIVERY_BATCH_SIZE (500)")
    parser.add_argument("--lease", type=float, default=30, help="DELIVERY_LEASE_SECONDS (30)")
    parser.add_argument(
        "--chunk",
        type=int,
        default=50,
        help="the bound on duplicates per failed worker, and the workers' "
        "DELIVERY_FENCE_CHUNK where the code has it (50)",
    )
    parser.add_argument(
        "--faults",
        default="none,kill-between,kill-mid,partition,partition",
        help=f"comma list of {', '.join(FAULTS)}",
    )
    parser.add_argument("--cut", type=float, default=60, help="seconds of partition (60)")
    parser.add_argument("--sink-delay", type=float, default=0.0, help="seconds per message")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run (600)")
    parser.add_argument(
        "--keep-db",
        action="store_true",
        help="keep each run's database "
        "and the worker logs (the private cluster is removed at the end)",
    )
    parser.add_argument(
        "--fail-at", choices=["setup", "run"], help="fail on purpose there (tests the clean-up)"
    )
    args = parser.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    if unknown := [f for f in faults if f not in FAULTS]:
        parser.error(f"unknown fault(s): {', '.join(unknown)}")
    if os.geteuid() != 0:
        parser.error("needs root (ip netns, iptables, runuser)")
    signal.signal(signal.SIGTERM, stop_on_signal)  # clean up as for Ctrl-C
    signal.signal(signal.SIGHUP, stop_on_signal)
    print(" ".join(["send_faults.py", *(argv if argv is not None else sys.argv[1:])]))
    work = Path(tempfile.mkdtemp(prefix="newsletter-faults-"))
    work.chmod(0o755)  # the private cluster's user reaches its folder inside
    outcomes: list[Outcome] = []
    with contextlib.ExitStack() as stack:
        if not args.keep_db:
            stack.callback(lambda: subprocess.run(["rm", "-rf", str(work)]))
        hosts = make_hosts(stack, 2, str(os.getpid() % 100000))
        admin_url = start_postgres(stack, work / "pg", [h.root_addr for h in hosts])
        sink = Sink([h.root_addr for h in hosts], args.sink_delay)
        sink.start(stack)
        import sqlalchemy as sa

        import newsletter

        facts_engine = sa.create_engine(admin_url)
        facts = machine_facts(facts_engine)
        facts_engine.dispose()
        print("; ".join(f"{k} {v}" for k, v in facts.items()))
        chunks = chunk_settings(args.chunk)
        print(
            f"hosts: {', '.join(f'{h.ns} {h.ns_addr}' for h in hosts)}; PostgreSQL (private "
            f"cluster) and SMTP sink on {', '.join(h.root_addr for h in hosts)}; fencing "
            f"setting: {chunks or 'none in this code'} (code in "
            f"{Path(newsletter.__file__).parent.parent}); {args.recipients:,} recipients, "
            f"batch {args.batch}, lease {args.lease:g} s"
        )
        if args.fail_at == "setup":
            raise RuntimeError("--fail-at setup: failing on purpose, to test the clean-up")
        lab = {"hosts": hosts, "sink": sink, "work": work, "admin_url": admin_url}
        for index, kind in enumerate(faults):
            print(f"run {index + 1}/{len(faults)}: {kind} ...", flush=True)
            outcomes.append(run_fault(kind, index, args, lab))
            o = outcomes[-1]
            print(
                f"  missing {o.missing}, mailed twice {o.twice}, logged after "
                f"{o.logged_after}, {o.seconds:.0f} s, {o.statuses}",
                flush=True,
            )
        if args.keep_db:
            print(f"worker logs kept in {work}")
    return 0 if report(outcomes, args.chunk) else 1


if __name__ == "__main__":
    sys.exit(main())
