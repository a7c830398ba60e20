#!/usr/bin/env python
"""The verifiable consent ledger at a million events on PostgreSQL (issue 17).

What one run does:

1. creates a throw-away PostgreSQL database from an admin URL, migrates it and
   drops it at the end, also when the run fails (``--sqlite``: a temporary
   SQLite file instead, for the smoke test); a fresh Ed25519 signing key and
   witness log in a temporary folder;
2. creates three lists with two consent-text versions each and three privacy
   policies, then N events of about N/3.6 subscribers (their rows first, by
   COPY): requested and confirmed on one list, often on a second, preference
   changes and withdrawals, a share imported; each with its e-mail, IP, user
   agent and source URL, a salt and a commitment (``PendingEvent.columns``),
   at a time over three years with the texts and policy then in force. Events
   go in through ``ledger.batch.append_events`` (COPY), a block of people per
   transaction, their events in time order;
3. times, each next to a floor measured in the same run:

   - ``seal``: every waiting event sealed (``seal.seal_waiting``, SEAL_BATCH
     events a checkpoint, or ``--checkpoint-every K``); floor: reading the
     same rows with the same query, plus hashlib over leaves of the same mean
     length (the leaf and one node hash an event);
   - full ``verify_ledger()``; floor: reading the rows with verify's own query,
     plus hashlib/hmac for the leaf, node, commitment and address digest;
   - a day: ``--daily`` more events appended and sealed in
     ``--daily-checkpoints`` checkpoints (the worker seals every
     LEDGER_SEAL_INTERVAL seconds, so a day makes many), then
     ``verify_ledger(incremental=True)``;
   - ``consent_bundle(address)`` for ``--people`` people with five events each
     (median, p95);
   - ``newsletter_verify.verify_bundle`` in this process and the
     ``newsletter-verify`` console script as a process (interpreter start
     included), median of ``--runs``; floor of the process: an interpreter
     that only imports ``newsletter_verify``;
   - the cost of one checkpoint in a verification (parse + Ed25519 verify of
     a stored note), to scale to logs with many checkpoints;

4. prints a table with the machine, the load average before and after, and
   the code measured. ``--profile``: the seals, a second full verify and the
   incremental verify run under cProfile (their times are then no benchmark
   figures); it prints the top functions by own time and the package's by
   cumulative time.

Usage::

    .venv/bin/python benchmarks/ledger_scale.py [--events 1000000] [--quick]
        [--daily 10000] [--daily-checkpoints 144] [--checkpoint-every K]
        [--people 50] [--runs 7] [--profile] [--database-url ADMIN_URL]
        [--sqlite] [--keep-database]

The targets (issue 17): full verify < 60 s per million events, the daily
incremental verify < 2 s, a bundle < 100 ms, ``newsletter-verify`` < 100 ms.
Timings on a shared machine vary: repeat a run when the load average was high.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import hmac
import io
import json
import math
import os
import platform
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SECRET = "benchmark-secret-key-that-is-long-enough-0123456789"  # noqa: S105 (throw-away)
BASE_URL = "https://news.example.dk"
TARGETS = {"verify_per_million": 60.0, "incremental": 2.0, "bundle_ms": 100.0, "cli_ms": 100.0}
# People whose events are appended in one transaction (in time order within it).
BLOCK_PEOPLE = 10_000
YEARS = 3
DOMAINS = ("gmail.com", "hotmail.com", "outlook.dk", "mail.dk", "jubii.dk", "proton.me",
           "kommune.dk", "firma-1.dk", "uni.dk", "gmx.net")  # fmt: skip
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",
)
SOURCES = (
    "https://www.example.dk/nyhedsbrev",
    "https://www.example.dk/artikler/2024/inklusion-i-skolen?utm_source=facebook",
    "https://www.example.dk/arrangementer/temadag-juni",
)


# ------------------------------------------------------------------ the run


@dataclass
class Figures:
    """What one run measured (seconds unless named otherwise)."""

    events: int = 0
    people: int = 0
    build: float = 0.0
    seal: float = 0.0
    seal_checkpoints: int = 0
    seal_batch: int = 0
    seal_cpu: float = 0.0
    verify_cpu: float = 0.0
    incremental_cpu: float = 0.0
    seal_floor_read: float = 0.0
    raw_read: float = 0.0
    seal_floor_hash: float = 0.0
    verify: float = 0.0
    verify_floor_read: float = 0.0
    verify_floor_hash: float = 0.0
    daily: int = 0
    daily_checkpoints: int = 0
    daily_seal: float = 0.0
    incremental: float = 0.0
    incremental_events: int = 0
    checkpoints: int = 0
    checkpoint_us: float = 0.0
    bundle_ms: list[float] = field(default_factory=list)
    bundle_bytes: int = 0
    verify_bundle_ms: list[float] = field(default_factory=list)
    cli_ms: list[float] = field(default_factory=list)
    cli_floor_ms: list[float] = field(default_factory=list)
    leaf_bytes: float = 0.0
    profiles: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class World:
    """The lists, texts and policies events refer to, with when each was in force."""

    start: datetime
    lists: list[int]
    # per list: [(from, consent_text_id)], oldest first
    texts: Mapping[int, Sequence[tuple[datetime, int | None]]]
    # [(from, policy_version_id)], oldest first
    policies: Sequence[tuple[datetime, int | None]]

    def text(self, list_id: int, at: datetime) -> int | None:
        return _in_force(self.texts[list_id], at)

    def policy(self, at: datetime) -> int | None:
        return _in_force(self.policies, at)


def _in_force(versions: Any, at: datetime) -> int | None:
    found = versions[0][1]
    for since, ident in versions:
        if since <= at:
            found = ident
    return found


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


def make_world(start: datetime) -> World:
    """Three lists (two consent-text versions each) and three privacy policies."""
    from newsletter.extensions import db
    from newsletter.models import ConsentText
    from newsletter.privacy.policy import import_policy
    from newsletter.subscriptions.lists import create_list

    lists, texts = [], {}
    for n, slug in enumerate(("nyheder", "arrangementer", "forskning")):
        body = (
            f"Ja tak, send mig {slug} fra foreningen, højst to gange om måneden. Jeg kan "
            "til enhver tid afmelde mig via linket i hver mail. Læs om behandlingen af "
            "mine oplysninger i privatlivspolitikken."
        )
        mailing_list = create_list(slug, slug.capitalize(), body, default=n == 0)
        first = db.session.scalar(
            sa.select(ConsentText.id).where(ConsentText.list_id == mailing_list.id)
        )
        second = ConsentText(list_id=mailing_list.id, version=2, text=body + " (revideret)")
        db.session.add(second)
        db.session.flush()
        lists.append(mailing_list.id)
        texts[mailing_list.id] = [(start, first), (start + timedelta(days=540), second.id)]
    policies = []
    for n in range(3):
        effective = start + timedelta(days=365 * n)
        raw = (
            f"---\ntitle: Privatlivspolitik\neffective: {effective.date().isoformat()}\n---\n"
            + f"# Privatlivspolitik, version {n + 1}\n\n"
            + "Vi behandler din e-mailadresse for at sende dig nyhedsbreve. " * 40
        )
        version = import_policy(raw.encode()).version
        policies.append((effective, version.id))
    db.session.commit()
    return World(start, lists, texts, policies)


@dataclass
class Person:
    """A subscriber of the benchmark and the events made for them."""

    index: int
    email: str
    email_key: str
    events: int = 0


def person(index: int) -> Person:
    first = ("anne", "soren", "mette", "lars", "peter", "line", "ida", "niels")[index % 8]
    email = f"{first}.{index}@{DOMAINS[index * 7 % len(DOMAINS)]}"
    return Person(index, email, email.lower())


def person_events(
    rng: random.Random, who: Person, sub_id: int, world: World, t0: datetime
) -> list[tuple[datetime, Any]]:
    """The events of one person from ``t0`` on, as (time, PendingEvent)."""
    from newsletter.ledger.evidence import Evidence
    from newsletter.ledger.pending import PendingEvent, Recorded

    def event(kind: str, channel: str, at: datetime, list_id: int | None, details: dict[str, Any],
              evidence: Evidence) -> tuple[datetime, Any]:  # fmt: skip
        return at, PendingEvent(
            event=kind,
            channel=channel,
            subscriber_id=sub_id,
            email=who.email,
            email_key=who.email_key,
            evidence=evidence,
            list_id=list_id,
            consent_text_id=world.text(list_id, at) if list_id else None,
            details=details,
            recorded=Recorded(at, world.policy(at)),
        )

    ip = f"198.51.{rng.randrange(256)}.0" if rng.random() < 0.7 else "2001:db8:4a2f::"
    web = Evidence(ip=ip, user_agent=rng.choice(USER_AGENTS), source_url=rng.choice(SOURCES))
    first, second = rng.sample(world.lists, 2)
    out = []
    if rng.random() < 0.15:
        out.append(event("imported", "import", t0, first, {
            "source": "messe 2024", "consented_at": (t0 - timedelta(days=30)).isoformat(),
            "file": "medlemmer.csv"}, Evidence()))  # fmt: skip
    else:
        out.append(event("requested", rng.choice(("form", "api")), t0, first,
                         {"locale": "da"}, web))  # fmt: skip
        out.append(event("confirmed", "confirm_link", t0 + timedelta(minutes=rng.randrange(1, 90)),
                         first, {}, web))  # fmt: skip
    at = t0 + timedelta(days=rng.randrange(1, 9), seconds=rng.randrange(86_400))
    if rng.random() < 0.6:
        out.append(event("requested", "manage_page", at, second, {"locale": "da"}, web))
        out.append(event("confirmed", "confirm_link", at + timedelta(minutes=3), second, {}, web))
    if rng.random() < 0.5:
        out.append(event("preferences_changed", "manage_page", at + timedelta(hours=2), None,
                         {"locale": rng.choice(("da", "en"))}, web))  # fmt: skip
    if rng.random() < 0.2:
        out.append(event("withdrawn", rng.choice(("one_click", "unsubscribe_page")),
                         at + timedelta(days=rng.randrange(1, 9)), first,
                         {"subscriptions": [world.lists.index(first) + 1]}, web))  # fmt: skip
    who.events = len(out)
    return out


def add_events(
    rng: random.Random, world: World, count: int, first_person: int, t_from: datetime,
    t_to: datetime, people: list[Person],
) -> int:  # fmt: skip
    """Append ``count`` events of new people, a block of people per
    transaction; returns the number of people made."""
    from newsletter.bulk import bulk_insert
    from newsletter.extensions import db
    from newsletter.ledger.batch import append_events
    from newsletter.models import Subscriber

    made, index = 0, first_person
    blocks = max(1, math.ceil(count / (BLOCK_PEOPLE * 3.6)))
    span = (t_to - t_from) / blocks
    block_no = 0
    while made < count:
        size = min(BLOCK_PEOPLE, math.ceil((count - made) / 3.3))
        group = [person(index + i) for i in range(size)]
        index += size
        last_id = db.session.scalar(sa.select(sa.func.max(Subscriber.id))) or 0
        bulk_insert(
            Subscriber.__table__,
            [
                {"email": p.email, "email_key": p.email_key, "name": f"Person {p.index}",
                 "locale": "da", "token_key": uuid.uuid4().hex, "created_at": t_from}
                for p in group
            ],
        )  # fmt: skip
        ids = db.session.scalars(
            sa.select(Subscriber.id).where(Subscriber.id > last_id).order_by(Subscriber.id)
        ).all()
        lo = t_from + span * block_no
        events = []
        for who, sub_id in zip(group, ids, strict=True):
            t0 = lo + timedelta(seconds=rng.uniform(0, span.total_seconds()))
            events += person_events(rng, who, sub_id, world, t0)
        events.sort(key=lambda pair: pair[0])
        events = events[: count - made]
        kept = Counter(pending.subscriber_id for _, pending in events)
        for who, sub_id in zip(group, ids, strict=True):
            who.events = kept[sub_id]
        append_events([pending for _, pending in events])
        db.session.commit()
        made += len(events)
        people += group
        block_no += 1
    return index - first_person


# ------------------------------------------------------------------- floors


def read_floor(rows_of: Callable[[], Any]) -> tuple[float, int]:
    """Seconds to stream every row ``rows_of()`` yields (server-side, as the code does)."""
    from newsletter.database import allow_long_statements
    from newsletter.extensions import db

    allow_long_statements()
    started = time.perf_counter()
    rows = 0
    for _row in rows_of():
        rows += 1
    elapsed = time.perf_counter() - started
    db.session.rollback()
    return elapsed, rows


def raw_read_floor(query: Any) -> float:
    """Seconds to stream the rows of ``query`` with psycopg alone (a server-side
    cursor, no SQLAlchemy result processing); 0 on SQLite."""
    from newsletter.extensions import db

    connection = db.session.connection()
    if connection.dialect.name != "postgresql":
        return 0.0
    sql = str(query.compile(dialect=connection.dialect))
    driver = connection.connection.driver_connection
    assert driver is not None
    started = time.perf_counter()
    with driver.cursor(name="raw_floor") as cursor:
        cursor.itersize = 10_000
        cursor.execute(sql)
        for _row in cursor:
            pass
    elapsed = time.perf_counter() - started
    db.session.rollback()
    return elapsed


def hash_floor(events: int, leaf_length: int, verify: bool) -> float:
    """hashlib alone: a leaf hash and a node hash an event (and, for verify,
    the commitment and the address HMAC), over inputs of the real lengths."""
    leaf = os.urandom(leaf_length)
    personal = os.urandom(32 + 190)
    key = os.urandom(32)
    left, right = os.urandom(32), os.urandom(32)
    sha = hashlib.sha256
    started = time.perf_counter()
    for _ in range(events):
        sha(b"\x00" + leaf).digest()
        sha(b"\x01" + left + right).digest()
        if verify:
            sha(personal).hexdigest()
            hmac.new(key, b"email:anne.12345@mail.dk", hashlib.sha256).hexdigest()
    return time.perf_counter() - started


def mean_leaf_length(sample: int = 2000) -> float:
    from newsletter.extensions import db
    from newsletter.ledger.leaf import LEAF_COLUMNS, Texts, leaf_bytes
    from newsletter.models import ConsentEvent

    texts = Texts.load()
    rows = db.session.execute(
        sa.select(*LEAF_COLUMNS).order_by(ConsentEvent.seq).limit(sample)
    ).mappings()
    lengths = [len(leaf_bytes(row, texts)) for row in rows]
    db.session.rollback()
    return statistics.fmean(lengths)


# ----------------------------------------------------------------- measures


def profiled(label: str, function: Callable[[], Any], figures: Figures, on: bool) -> Any:
    """Run ``function``, under cProfile when ``on`` (its top costs kept)."""
    if not on:
        return function()
    profile = cProfile.Profile()
    result = profile.runcall(function)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(22)
    stats.sort_stats("cumulative").print_stats(r"newsletter", 14)
    figures.profiles[label] = out.getvalue()
    return result


def seal_all(checkpoint_every: int | None) -> int:
    """Seal every waiting event; returns the checkpoints signed."""
    from newsletter.ledger.seal import SEAL_BATCH, seal

    limit = checkpoint_every or SEAL_BATCH
    signed = 0
    while True:
        done = seal(limit)
        if done.added == 0:
            return signed
        signed += 1


def checkpoint_cost() -> tuple[int, float]:
    """How many checkpoints are stored, and µs to parse and verify one."""
    from newsletter.extensions import db
    from newsletter.models import LedgerCheckpoint, LedgerKey
    from newsletter_verify import parse_checkpoint, parse_note, parse_vkey, verify_note

    notes = list(db.session.scalars(sa.select(LedgerCheckpoint.note)))
    verifier = parse_vkey(db.session.scalars(sa.select(LedgerKey.vkey)).one())
    sample = (notes * (200 // max(len(notes), 1) + 1))[:200]
    started = time.perf_counter()
    for text in sample:
        note = parse_note(text)
        assert verify_note(note, verifier)
        parse_checkpoint(note.body)
    db.session.rollback()
    return len(notes), (time.perf_counter() - started) / len(sample) * 1e6


def bundles(people: list[Person], count: int, tmp: Path, runs: int, figures: Figures) -> None:
    """Time consent_bundle for ``count`` people with five events, then verify one."""
    from newsletter.extensions import db
    from newsletter.ledger.keyring import signer
    from newsletter.ledger.proof import consent_bundle
    from newsletter_verify import parse_vkey, verify_bundle

    chosen = [p for p in people if p.events == 5][:count]
    bundle: dict[str, Any] = {}
    for who in chosen:
        started = time.perf_counter()
        bundle = consent_bundle(who.email)
        figures.bundle_ms.append((time.perf_counter() - started) * 1000)
        db.session.rollback()
        assert len(bundle["events"]) == 5, len(bundle["events"])
    vkey = signer().vkey
    verifier = parse_vkey(vkey)
    for _ in range(max(runs, 20)):
        started = time.perf_counter()
        report = verify_bundle(bundle, verifier)
        figures.verify_bundle_ms.append((time.perf_counter() - started) * 1000)
        assert report.ok, report.failures
    path, key = tmp / "bundle.json", tmp / "ledger.vkey"
    text = json.dumps(bundle, ensure_ascii=False, indent=1)
    figures.bundle_bytes = len(text.encode())
    path.write_text(text, encoding="utf-8")
    key.write_text(vkey + "\n", encoding="utf-8")
    script = shutil.which("newsletter-verify", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, str(ROOT / "newsletter_verify.py")]
    floor = [sys.executable, "-c", "import newsletter_verify"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(runs):
        for argv, into in ((floor, figures.cli_floor_ms),
                           ([*command, str(path), "--key", str(key)], figures.cli_ms)):  # fmt: skip
            started = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            into.append((time.perf_counter() - started) * 1000)
            assert done.returncode == 0, done.stderr


def run(url: str, args: argparse.Namespace, figures: Figures) -> None:
    """Migrate, build, measure."""
    from flask_migrate import upgrade

    from newsletter import create_app
    from newsletter.extensions import db
    from newsletter.ledger import verify_ledger
    from newsletter.ledger.keyring import write_new_key
    from newsletter.ledger.leaf import LEAF_COLUMNS
    from newsletter.ledger.seal import SEAL_BATCH
    from newsletter.ledger.verify import _events
    from newsletter.models import ConsentEvent

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        key_file = tmp / "ledger-signing.key"
        config = {
            "DATABASE_URL": url,
            "SECRET_KEY": SECRET,
            "TESTING": True,
            "BASE_URL": BASE_URL,
            "LEDGER_SIGNING_KEY_FILE": str(key_file),
            "LEDGER_CHECKPOINT_LOG": str(tmp / "checkpoints.log"),
        }
        app = create_app(config)
        with app.app_context():
            upgrade()
            write_new_key(key_file, "news.example.dk/consent-ledger")
            rng = random.Random(17)
            now = datetime.now(UTC).replace(microsecond=0)
            start = now - timedelta(days=365 * YEARS)
            world = make_world(start)
            people: list[Person] = []

            started = time.perf_counter()
            made = add_events(rng, world, args.events, 0, start, now - timedelta(days=2), people)
            figures.build = time.perf_counter() - started
            figures.events = db.session.scalar(sa.select(sa.func.count(ConsentEvent.id))) or 0
            figures.people = made
            db.session.rollback()
            print(f"built {figures.events:,} events of {made:,} people in {figures.build:.1f} s")
            if db.engine.dialect.name == "postgresql":
                with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE")

            figures.leaf_bytes = mean_leaf_length()
            figures.seal_batch = args.checkpoint_every or SEAL_BATCH
            seal_query = sa.select(*LEAF_COLUMNS).order_by(ConsentEvent.seq)
            figures.seal_floor_read, _ = read_floor(
                lambda: db.session.execute(
                    seal_query.execution_options(yield_per=10_000)
                ).mappings()
            )
            figures.raw_read = raw_read_floor(seal_query)
            figures.seal_floor_hash = hash_floor(figures.events, round(figures.leaf_bytes), False)
            started, cpu = time.perf_counter(), time.process_time()
            figures.seal_checkpoints = profiled(
                "seal", lambda: seal_all(args.checkpoint_every), figures, args.profile
            )
            figures.seal = time.perf_counter() - started
            figures.seal_cpu = time.process_time() - cpu
            print(f"sealed in {figures.seal:.1f} s")

            figures.verify_floor_read, _ = read_floor(lambda: _events(0))
            figures.verify_floor_hash = hash_floor(figures.events, round(figures.leaf_bytes), True)
            started, cpu = time.perf_counter(), time.process_time()
            report = verify_ledger()
            figures.verify = time.perf_counter() - started
            figures.verify_cpu = time.process_time() - cpu
            assert report.ok, report.problems[:5]
            assert report.events == figures.events, report.events
            print(f"verified in {figures.verify:.1f} s")
            if args.profile:
                profiled("verify (full)", verify_ledger, figures, True)

            figures.daily = args.daily
            before = figures.events
            add_events(rng, world, args.daily, made, now - timedelta(days=1), now, people)
            per = math.ceil(args.daily / max(args.daily_checkpoints, 1))
            started = time.perf_counter()
            figures.daily_checkpoints = profiled(
                "seal (the day)", lambda: seal_all(per), figures, args.profile
            )
            figures.daily_seal = time.perf_counter() - started
            started, cpu = time.perf_counter(), time.process_time()
            report = profiled(
                "verify (incremental)",
                lambda: verify_ledger(incremental=True),
                figures,
                args.profile,
            )
            figures.incremental = time.perf_counter() - started
            figures.incremental_cpu = time.process_time() - cpu
            figures.incremental_events = report.events
            assert report.ok, report.problems[:5]
            assert report.start == before, report.start

            figures.checkpoints, figures.checkpoint_us = checkpoint_cost()
            bundles(people, args.people, tmp, args.runs, figures)
            db.session.remove()
            db.engine.dispose()


# ---------------------------------------------------------------- printing


def machine(admin_url: str, sqlite: bool) -> list[str]:
    """CPU model, cores, memory, PostgreSQL, Python and the code measured."""
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor() or "unknown CPU",
    )  # fmt: skip
    memory = next(
        (f"{int(line.split()[1]) / 2**20:.1f} GiB" for line in
         Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")), "?",
    )  # fmt: skip
    server = "SQLite"
    if not sqlite:
        engine = sa.create_engine(admin_url)
        with engine.connect() as conn:
            server = "PostgreSQL " + str(conn.exec_driver_sql("SHOW server_version").scalar())
            buffers = conn.exec_driver_sql("SHOW shared_buffers").scalar()
            server += f" (shared_buffers {buffers})"
        engine.dispose()
    git = ["git", "--no-optional-locks", "-C", str(ROOT)]
    revision = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=False).stdout.strip()  # fmt: skip
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--",
                            "newsletter", "newsletter_verify.py", "migrations"],
                           capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return [
        f"machine: {model}, {os.cpu_count()} CPUs, {memory} RAM; {server}; "
        f"Python {platform.python_version()}",
        f"code: {revision}{' + uncommitted changes in newsletter/' if dirty else ''}",
    ]


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def table(f: Figures) -> list[str]:
    """The figures, each with its floor and target."""
    million = f.events / 1e6
    seal_floor = f.seal_floor_read + f.seal_floor_hash
    verify_floor = f.verify_floor_read + f.verify_floor_hash
    cli, cli_floor = statistics.median(f.cli_ms), statistics.median(f.cli_floor_ms)
    rows = [
        ("events (people)", f"{f.events:,} ({f.people:,})", ""),
        ("mean leaf", f"{f.leaf_bytes:.0f} bytes", ""),
        ("build (subscribers, append_events)", f"{f.build:.1f} s",
         f"{f.events / f.build:,.0f} events/s"),
        (f"seal, {f.seal_batch:,} events a checkpoint",
         f"{f.seal:.1f} s = {f.events / f.seal:,.0f} events/s",
         f"{f.seal_checkpoints} checkpoints"),
        ("  of it CPU in this process", f"{f.seal_cpu:.1f} s", ""),
        ("  floor: read rows + hashlib",
         f"{seal_floor:.1f} s ({f.seal_floor_read:.1f} + {f.seal_floor_hash:.1f})",
         f"seal = {f.seal / seal_floor:.1f} x floor"),
        *([("  the same rows read by psycopg alone", f"{f.raw_read:.1f} s", "")]
          if f.raw_read else []),
        ("verify (full)", f"{f.verify:.1f} s = {f.verify / million:.1f} s per million",
         f"target < {TARGETS['verify_per_million']:.0f} s per million: "
         + ("met" if f.verify / million < TARGETS["verify_per_million"] else "MISSED")),
        ("  of it CPU in this process", f"{f.verify_cpu:.1f} s", ""),
        ("  floor: read rows + hashlib/hmac",
         f"{verify_floor:.1f} s ({f.verify_floor_read:.1f} + {f.verify_floor_hash:.1f})",
         f"verify = {f.verify / verify_floor:.1f} x floor"),
        (f"day: {f.daily:,} events sealed",
         f"{f.daily_seal:.2f} s", f"{f.daily_checkpoints} checkpoints"),
        ("verify --incremental", f"{f.incremental:.2f} s ({f.incremental_events:,} events)",
         f"target < {TARGETS['incremental']:.0f} s: "
         + ("met" if f.incremental < TARGETS["incremental"] else "MISSED")),
        ("  of it CPU in this process", f"{f.incremental_cpu:.2f} s", ""),
        ("one stored checkpoint in a verify",
         f"{f.checkpoint_us:.0f} µs", f"{f.checkpoints:,} stored"),
        (f"consent_bundle, 5 events ({len(f.bundle_ms)} people)",
         f"median {statistics.median(f.bundle_ms):.1f} ms, p95 {p95(f.bundle_ms):.1f} ms",
         f"target < {TARGETS['bundle_ms']:.0f} ms: "
         + ("met" if p95(f.bundle_ms) < TARGETS["bundle_ms"] else "MISSED")
         + f"; {f.bundle_bytes:,} bytes"),
        ("verify_bundle (in-process)",
         f"median {statistics.median(f.verify_bundle_ms):.2f} ms", ""),
        ("newsletter-verify (process)",
         f"median {statistics.median(f.cli_ms):.0f} ms",
         f"target < {TARGETS['cli_ms']:.0f} ms: "
         + ("met" if statistics.median(f.cli_ms) < TARGETS["cli_ms"] else "MISSED")),
        ("  floor: python -c 'import newsletter_verify'",
         f"median {cli_floor:.0f} ms", f"process = floor + {cli - cli_floor:.0f} ms"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    middle = max(len(r[1]) for r in rows)
    return [f"{a:<{width}}  {b:<{middle}}  {c}".rstrip() for a, b, c in rows]


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run once, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, help="events to build (1,000,000; --quick 10,000)")
    parser.add_argument(
        "--quick", action="store_true", help="10,000 events, 1,000 a day, 10 people, 3 runs"
    )
    parser.add_argument("--daily", type=int, help="events of the day (10,000)")
    parser.add_argument(
        "--daily-checkpoints",
        type=int,
        default=144,
        help="checkpoints the day's events are sealed in (144: one every 10 minutes)",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, help="events a checkpoint in the big seal (SEAL_BATCH)"
    )
    parser.add_argument("--people", type=int, help="bundles timed (50)")
    parser.add_argument("--runs", type=int, help="newsletter-verify processes timed (7)")
    parser.add_argument("--profile", action="store_true", help="cProfile the seal and verify")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite file instead")
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick
    args.events = args.events or (10_000 if quick else 1_000_000)
    args.daily = args.daily or (1_000 if quick else 10_000)
    args.people = args.people or (10 if quick else 50)
    args.runs = args.runs or (3 if quick else 7)

    head = machine(args.database_url, args.sqlite)
    load_before = os.getloadavg()
    command = "benchmarks/ledger_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    figures = Figures()
    with database(args.database_url, args.sqlite, args.keep_database) as url:
        run(url, args, figures)
    load_after = os.getloadavg()
    print()
    print(f"command: {command.strip()}")
    print(*head, sep="\n")
    print("load average before: " + " ".join(f"{x:.2f}" for x in load_before)
          + "; after: " + " ".join(f"{x:.2f}" for x in load_after))  # fmt: skip
    if figures.profiles:
        print("(profiled run: the seals and the incremental verify ran under cProfile)")
    print()
    print(*table(figures), sep="\n")
    for label, text in figures.profiles.items():
        print(f"\n--- profile: {label} ---\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
