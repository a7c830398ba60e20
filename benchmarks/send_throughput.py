#!/usr/bin/env python
"""Campaign send throughput: real workers against PostgreSQL and a local SMTP sink.

What one run does (see docs/performance.md for figures and how to read them):

1. creates a throw-away PostgreSQL database from an admin URL, migrates it
   (Flask-Migrate) and drops it again at the end, also when the run fails;
2. creates N subscribers with active subscriptions on one list, set-based in
   SQL (generate_series), and one campaign with a ~3 KB Markdown body;
3. times ``start_campaign`` (render once + one INSERT ... SELECT of N
   deliveries): the ENQUEUE time;
4. starts Postfix's ``smtp-sink`` on a free loopback port (aiosmtpd only when
   smtp-sink cannot be started, and the output says so);
5. measures a CEILING: plain smtplib sending one pre-rendered message of the
   campaign's size N times over W connections (W processes, one connection
   each) to the same sink;
6. runs W real ``newsletter worker --once`` processes, times them from launch
   until all have exited, samples their peak RSS (``/proc/PID/status`` VmHWM
   every 0.2 s, and ``ru_maxrss`` when they are reaped), and checks in the
   database that all N deliveries are ``sent``;
7. prints the figures and a PASS/MISS line per target (``TARGET_*`` below).

Usage::

    .venv/bin/python benchmarks/send_throughput.py [--recipients N] [--workers W]
        [--batch-size B] [--database-url ADMIN_URL] [--dkim none|rsa|ed25519]
        [--profile DIR] [--json FILE] [--keep-database]

``--profile DIR`` attaches py-spy (``pip install py-spy``) to every worker and
prints where the time goes; sampling slows the workers, so the throughput of
a profiled run is not a benchmark figure.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import multiprocessing
import os
import platform
import pwd
import re
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Last: a tree of the code in PYTHONPATH (an older commit, to measure
    # "before") is imported by this script as by its workers.
    sys.path.append(str(ROOT))

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BASE_URL = "https://news.example"
SENDER = "Inklusio <nyhedsbrev@news.example>"
LIST_SLUG = "bench"
POLL_SECONDS = 0.2

# Targets: what the send path must reach on the benchmark machine (docs/performance.md).
TARGET_RATE = 1000.0  # messages/s with 2 workers
TARGET_CEILING_SHARE = 0.75
TARGET_ENQUEUE_SECONDS = 30.0  # at 1,000,000 recipients
TARGET_RSS_MB = 150.0  # at 1,000,000 recipients
JUDGED_AT = 1_000_000

SUBJECT = "Nyt fra Inklusio: tilgængelighed, nye kurser og en invitation"

# About 3 KB of Markdown: headings, emphasis, a list, a table-free body with
# several links, and the personal greeting placeholder.
BODY = """\
# Nyt fra Inklusio

Kære {{ name }},

Tak fordi du følger med. I dette nummer fortæller vi om **nye kurser i digital
tilgængelighed**, et par ændringer i vores rådgivning og en invitation til vores
åbent hus i Aalborg. Som altid kan du læse tidligere udgaver i
[arkivet](https://news.example/archive).

## Kurser i foråret

Vi udbyder tre nye forløb, der alle kan tages online eller hos os:

- *Tilgængelige dokumenter*: Word, PDF og præsentationer, der virker med
  skærmlæser. Se [kursusbeskrivelsen](https://inklusio.example/kurser/dokumenter).
- *WCAG 2.2 i praksis*: de nye succeskriterier gennemgået med eksempler fra
  rigtige hjemmesider. [Læs mere og tilmeld dig](https://inklusio.example/kurser/wcag).
- *Klarsprog*: skriv tekster, som alle kan forstå, også dem der læser med
  ordblindeværktøjer.

Alle kurser afsluttes med et kursusbevis. Medlemmer af vores netværk får 15 %
rabat, og offentlige institutioner kan bruge rammeaftalen.

## Ændringer i rådgivningen

Fra den 1. marts samler vi telefonrådgivningen i ét nummer, og åbningstiden
udvides til kl. 18 tirsdag og torsdag. Du kan stadig booke et møde direkte i
vores [kalender](https://inklusio.example/booking), og vi svarer på e-mail
inden for to hverdage.

Vi har også opdateret vores tjekliste til tilgængelighedserklæringer. Den er
gratis og kan hentes som tilgængelig PDF eller som almindelig webside på
[inklusio.example/tjekliste](https://inklusio.example/tjekliste).

## Åbent hus

> Kom forbi til kaffe, korte oplæg og demonstrationer af hjælpemidler. Der er
> tegnsprogstolk og teleslynge i salen.

Torsdag den 24. april kl. 15-18 på C.A. Olesens Gade 4, 9000 Aalborg. Tilmelding
er ikke nødvendig, men hjælper os med at bestille nok kage. Skriv til os, hvis
du har brug for særlige hensyn, så sørger vi for det.

## Fra netværket

Kommunerne i Nordjylland har i fællesskab gennemgået 40 selvbetjeningsløsninger.
Rapporten viser, at de hyppigste fejl stadig er manglende alternativ tekst,
for lav kontrast og formularer uden labels. Hele rapporten ligger på
[netværkets side](https://inklusio.example/netvaerk/rapport-2025), og vi
holder et webinar om resultaterne i maj.

## Spørgsmål fra læserne

**Skal vores intranet også være tilgængeligt?** Ja, når medarbejdere skal bruge
det i deres arbejde, gælder de samme krav som til hjemmesiden. Vi anbefaler at
starte med de sider, der bruges mest, og at spørge medarbejdere, der bruger
hjælpemidler, hvad der driller i hverdagen.

**Hvor ofte skal erklæringen opdateres?** Mindst en gang om året, og altid når
der er sket større ændringer. Husk at skrive datoen for seneste gennemgang, og
at kontaktoplysningerne i erklæringen virker.

Har du et emne, du gerne vil læse om i næste nummer, så svar blot på denne mail
eller skriv til os via [kontaktformularen](https://inklusio.example/kontakt).

Venlig hilsen
**Inklusio ApS**
"""


# --------------------------------------------------------------------- results


@dataclass
class WorkerStats:
    """What is known of one worker process after it exited."""

    pid: int
    returncode: int | None = None
    seconds: float = 0.0
    vmhwm_kb: int = 0  # last VmHWM seen in /proc/PID/status
    ru_maxrss_kb: int = 0  # from wait4()
    cpu_seconds: float = 0.0  # user + system, from wait4()
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (t, VmRSS kB)
    # When VmHWM rose by more than 10 MB from one sample to the next: (t, VmHWM, VmRSS)
    # in kB, and with --profile what py-spy dump saw at that moment.
    hwm_jumps: list[tuple[float, int, int]] = field(default_factory=list)
    spike_stacks: list[str] = field(default_factory=list)

    @property
    def peak_mb(self) -> float:
        """Peak resident set size in MiB: VmHWM, the high-water mark of the worker's
        own address space. Not ru_maxrss: Linux carries maxrss across execve, so a
        child's ru_maxrss is at least what the parent had resident when it forked."""
        return self.vmhwm_kb / 1024


@dataclass
class Results:
    """Everything the run measured, for the printout and --json."""

    recipients: int
    workers: int
    batch_size: int
    dkim: str
    machine: dict[str, str] = field(default_factory=dict)
    sink: str = ""
    seed_seconds: float = 0.0
    enqueue_seconds: float = 0.0
    queued: int = 0
    message_bytes: int = 0
    ceiling_message: str = ""
    ceiling_seconds: float = 0.0
    ceiling_rate: float = 0.0
    campaign_seconds: float = 0.0
    campaign_rate: float = 0.0
    steady_rate: float | None = None
    first_sent_after: float | None = None
    status_counts: dict[str, int] = field(default_factory=dict)
    campaign_status: str = ""
    worker_peak_mb: float = 0.0
    worker_ru_maxrss_mb: float = 0.0
    worker_rss_timeline_mb: list[tuple[int, float]] = field(default_factory=list)
    worker_cpu_seconds: list[float] = field(default_factory=list)
    worker_hwm_jumps: list[list[tuple[float, int, int]]] = field(default_factory=list)
    spike_stacks: list[str] = field(default_factory=list)
    ceiling_cpu: dict[str, float] = field(default_factory=dict)
    campaign_cpu: dict[str, float] = field(default_factory=dict)
    busiest: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    postgres_activity: list[tuple[str, str, float]] = field(default_factory=list)
    workers_ok: bool = False
    profiled: bool = False
    profile: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------- the machine


def machine_facts(engine: Any) -> dict[str, str]:
    """nproc, memory, PostgreSQL version and settings that matter for this run."""
    facts = {
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                facts["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        # Read-only: --no-optional-locks keeps git status from touching the index.
        git = ["git", "--no-optional-locks", "-C", str(ROOT)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "newsletter", "migrations"],
            capture_output=True,
            text=True,
        )
        changed = len(dirty.stdout.splitlines())
        facts["code"] = head.stdout.strip() + (
            f" + uncommitted changes in {changed} file(s) of newsletter/, migrations/"
            if changed
            else ""
        )
    with engine.connect() as conn:
        facts["postgresql"] = conn.exec_driver_sql("SHOW server_version").scalar()
        for setting in ("shared_buffers", "synchronous_commit", "fsync", "autovacuum"):
            facts[f"pg.{setting}"] = conn.exec_driver_sql(f"SHOW {setting}").scalar()
    return facts


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of every child it has reaped (workers,
    ceiling senders, py-spy)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class CpuWindow:
    """Where the machine's CPU went during one phase: this benchmark's processes,
    the sink, PostgreSQL, and everything else (other people's jobs on a shared
    machine disturb the figures; the printout says how much)."""

    def __init__(self, sink_pid: int | None) -> None:
        self.sink_pid = sink_pid
        self.postgres = PostgresCpu()
        self.tick = os.sysconf("SC_CLK_TCK")
        self.result: dict[str, float] = {}

    def start(self) -> None:
        """Take the opening readings."""
        self.processes = all_processes()
        self.postgres.sample()
        self.own = own_cpu_seconds()
        self.sink = process_cpu_seconds(self.sink_pid) if self.sink_pid else None
        self.busy, self.total = cpu_times()

    def stop(self) -> dict[str, float]:
        """Take the closing readings; CPU seconds per consumer."""
        busy, total = cpu_times()
        self.postgres.sample()
        sink = process_cpu_seconds(self.sink_pid) if self.sink_pid else None
        capacity = (total - self.total) / self.tick
        used = (busy - self.busy) / self.tick
        own = own_cpu_seconds() - self.own
        sink_used = (sink - self.sink) if sink is not None and self.sink is not None else 0.0
        mine = {os.getpid(), self.sink_pid}
        others: Counter[str] = Counter()
        for pid, (comm, cpu) in all_processes().items():
            if pid in mine or comm == "postgres" or _is_descendant(pid, os.getpid()):
                continue
            others[comm] += cpu - self.processes.get(pid, (comm, 0.0))[1]
        self.busiest = [
            (comm, round(cpu, 2))
            for comm, cpu in others.most_common(3)
            if cpu >= 0.05 * max(capacity, 1.0)
        ]
        self.result = {
            "capacity": capacity,
            "busy": used,
            "benchmark": own,
            "sink": sink_used,
            "postgres": self.postgres.seconds,
            "other": max(used - own - sink_used - self.postgres.seconds, 0.0),
        }
        return self.result


def all_processes() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds) of every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            cpu = process_cpu_seconds(int(entry.name))
            if cpu is not None:
                table[int(entry.name)] = (comm, cpu)
    return table


def _is_descendant(pid: int, ancestor: int) -> bool:
    for _ in range(20):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def wait_quiet(limit: float, sink_pid: int | None, share: float = 0.15) -> float:
    """Wait (up to ``limit`` seconds) until processes outside this benchmark and
    PostgreSQL use less than ``share`` of the machine over a second; returns the
    seconds waited."""
    waited = 0.0
    started = time.monotonic()
    while True:
        window = CpuWindow(sink_pid)
        window.start()
        time.sleep(1.0)
        result = window.stop()
        other = result["other"]
        if other < share * result["capacity"] or waited >= limit:
            if waited:
                print(f"... waited {waited:.0f} s", flush=True)
            return waited
        if waited == 0.0:
            busiest = ", ".join(f"{c} {t} s" for c, t in window.busiest) or "the kernel?"
            print(
                f"machine busy with other work ({100 * other / result['capacity']:.0f} % of "
                f"the CPUs: {busiest}); waiting up to {limit:.0f} s for it to calm down ...",
                flush=True,
            )
        waited = time.monotonic() - started


def process_cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of a live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    parts = stat.rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


class PostgresCpu:
    """CPU seconds used by all ``postgres`` processes (server, backends, autovacuum)
    between the first and the last :meth:`sample`. Backends come and go with the
    workers' connections, so /proc is read at every poll; what a process used in
    the last poll interval before it exited is missed (at most 0.2 s each)."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.baseline: set[int] | None = None

    def sample(self) -> None:
        """Read utime + stime of every postgres process."""
        seen = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
            except OSError:
                continue
            cpu = process_cpu_seconds(int(entry.name))
            if cpu is not None:
                seen[int(entry.name)] = cpu
        if self.baseline is None:
            self.baseline = set(seen)
        for pid, cpu in seen.items():
            self.first.setdefault(pid, cpu if pid in self.baseline else 0.0)
            self.last[pid] = cpu

    @property
    def seconds(self) -> float:
        """CPU seconds between the first and the last sample."""
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


class ActivitySampler:
    """Samples pg_stat_activity of the benchmark database every 20 ms (--profile):
    which statements the server is busy with, and what it waits on."""

    def __init__(self, url: str, database: str) -> None:
        import threading

        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        self.engine = sa.create_engine(url, poolclass=NullPool)
        self.database = database
        self.counts: Counter[tuple[str, str]] = Counter()
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Begin sampling."""
        self.thread.start()

    def finish(self) -> list[tuple[str, str, float]]:
        """Stop; (statement, wait event, % of samples a backend was active on it)."""
        self.stop.set()
        self.thread.join(timeout=5)
        self.engine.dispose()
        total = max(self.samples, 1)
        return [
            (query, wait, round(100 * n / total, 1))
            for (query, wait), n in self.counts.most_common(15)
        ]

    def _run(self) -> None:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while not self.stop.wait(0.02):
                rows = conn.exec_driver_sql(
                    "SELECT query, coalesce(wait_event_type || ':' || wait_event, 'CPU') "
                    "FROM pg_stat_activity WHERE datname = %(d)s AND state = 'active' "
                    "AND pid <> pg_backend_pid()",
                    {"d": self.database},
                ).all()
                self.samples += 1
                for query, wait in rows:
                    text = re.sub(r"\s+", " ", query).strip()
                    text = re.sub(r"IN \(__\[POSTCOMPILE_[^)]*\)|IN \([^()]*\)", "IN (...)", text)
                    self.counts[(text[:150], wait)] += 1


# ------------------------------------------------------------------ database


def create_database(admin_url: str) -> tuple[Any, str, str]:
    """CREATE DATABASE newsletter_bench_<random>; returns (admin engine, name, url)."""
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"newsletter_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    return admin, name, url


def drop_database(admin: Any, name: str) -> None:
    """DROP DATABASE ... WITH (FORCE): also when a worker still holds a connection."""
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def make_app(url: str, secret: str, port: int, dkim_env: dict[str, str]) -> Any:
    """The app the benchmark itself uses (migrate, seed, enqueue, render the ceiling)."""
    from newsletter import create_app

    config: dict[str, Any] = {
        "TESTING": True,
        "DATABASE_URL": url,
        "SECRET_KEY": secret,
        "BASE_URL": BASE_URL,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": port,
        "MAIL_DEFAULT_SENDER": SENDER,
    }
    for key, value in dkim_env.items():
        config[key.removeprefix("NEWSLETTER_")] = value
    return create_app(config)


SEED_SUBSCRIBERS = """
INSERT INTO subscribers (email, email_key, name, locale, token_key, created_at)
SELECT 'reader' || i || '@example.com',
       'reader' || i || '@example.com',
       (ARRAY['Anne', 'Søren', 'Mette', 'Jørgen', 'Lars', 'Åse', 'Peter', 'Line',
              'Mikkel', 'Sofie'])[1 + mod(i, 10)]
         || ' ' ||
       (ARRAY['Nielsen', 'Jensen', 'Hansen', 'Sørensen', 'Rasmussen', 'Christensen',
              'Kjær', 'Pedersen'])[1 + mod(i / 10, 8)],
       'da',
       left(md5(random()::text || i::text), 22),
       timezone('utc', now()) - make_interval(days => mod(i, 700))
FROM generate_series(1, %(n)s) AS i
"""

SEED_SUBSCRIPTIONS = """
INSERT INTO subscriptions (subscriber_id, list_id, status, consent_text_id,
                           requested_at, confirmed_at)
SELECT id, %(list_id)s, 'active', %(consent_text_id)s,
       created_at, created_at + interval '7 minutes'
FROM subscribers
"""


def seed(app: Any, n: int, fillfactor: int | None = None) -> tuple[int, int]:
    """The list (with its consent text), N active subscribers, one campaign; returns
    (list id, campaign id). ``fillfactor`` leaves that share of each new deliveries page
    filled, so that a lease update can stay on its page (a HOT update, no index entries)."""
    from newsletter.campaigns.service import create_campaign
    from newsletter.extensions import db
    from newsletter.subscriptions.lists import create_list, current_consent_text

    with app.app_context():
        mailing_list = create_list(
            LIST_SLUG,
            "Inklusio Nyhedsbrev",
            "Ja tak, jeg vil gerne modtage nyhedsbrevet på e-mail.",
        )
        consent_text_id = current_consent_text(mailing_list.id).id
        list_id = mailing_list.id
        with db.engine.begin() as conn:
            conn.exec_driver_sql(SEED_SUBSCRIBERS, {"n": n})
            conn.exec_driver_sql(
                SEED_SUBSCRIPTIONS, {"list_id": list_id, "consent_text_id": consent_text_id}
            )
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # A real database of this size has statistics; give these fresh tables theirs.
            conn.exec_driver_sql("ANALYZE subscribers")
            conn.exec_driver_sql("ANALYZE subscriptions")
            if fillfactor is not None:
                conn.exec_driver_sql(f"ALTER TABLE deliveries SET (fillfactor = {fillfactor:d})")
        campaign = create_campaign(LIST_SLUG, SUBJECT, BODY, sender=SENDER)
        return list_id, campaign.id


def enqueue(app: Any, campaign_id: int) -> tuple[float, int]:
    """Time start_campaign: render once and INSERT ... SELECT every delivery."""
    from newsletter.campaigns.service import start_campaign
    from newsletter.extensions import db

    with app.app_context():
        started = time.perf_counter()
        queued = start_campaign(campaign_id)
        seconds = time.perf_counter() - started
        db.session.remove()
    return seconds, queued


def sample_message(app: Any, campaign_id: int) -> tuple[str, str, bytes, str]:
    """One real recipient's message, rendered by the worker's own code path.

    Returns (envelope sender, recipient, data, how it was built). Falls back to
    the generic ``compose_mail`` should the delivery module's internals change.
    """
    from sqlalchemy import select

    from newsletter.extensions import db
    from newsletter.models.campaigns import Delivery

    with app.app_context():
        # LIMIT 1: without it psycopg fetches all N ids to return the first, and
        # this process's peak RSS reaches the workers' ru_maxrss (see WorkerStats).
        first = db.session.scalar(
            select(Delivery.id)
            .where(Delivery.campaign_id == campaign_id)
            .order_by(Delivery.id)
            .limit(1)
        )
        try:
            from newsletter.campaigns import outcomes, personal, recipients
            from newsletter.campaigns.claim import Claimed
            from newsletter.models import Campaign

            claim = db.session.execute(
                select(
                    Delivery.id, Delivery.campaign_id, Delivery.subscriber_id, Delivery.attempts
                ).where(Delivery.id == first)
            ).one()
            list_id = db.session.get(Campaign, campaign_id).list_id  # type: ignore[union-attr]
            loaded = recipients.load_recipients(
                [Claimed(*claim, list_id=list_id)], outcomes.DeliveryBatch()
            )
            content = personal.load_content(campaign_id)
            with app.test_request_context("/"):
                mail = personal.render(loaded[0], content, personal.LinkTemplates.build())
            how = "newsletter.campaigns.personal.render (the worker's own path)"
        except Exception as exc:  # internal API moved: same content, generic builder
            db.session.rollback()
            from newsletter.mail.message import compose_mail
            from newsletter.models import Campaign

            campaign = db.session.get(Campaign, campaign_id)
            assert campaign is not None
            link = f"{BASE_URL}/unsubscribe/{'x' * 120}"
            text = (campaign.rendered_text or "").replace("NLPH7f3aUNSUBSCRIBE", link)
            html = (campaign.rendered_html or "").replace("NLPH7f3aUNSUBSCRIBE", link)
            mail = compose_mail(
                sender=campaign.sender,
                to_address="reader1@example.com",
                to_name="Søren Jensen",
                subject=campaign.subject,
                text=text,
                html=html,
                domain="news.example",
                headers={"List-Unsubscribe": f"<{link}>"},
            )
            how = f"newsletter.mail.message.compose_mail (fallback: {exc!r})"
        db.session.rollback()
        db.session.remove()
    return mail.sender, mail.recipient, mail.data, how


def verify(app: Any, campaign_id: int) -> tuple[dict[str, int], str, float | None, Any]:
    """Counts by delivery status, the campaign's status, the steady-state rate
    (10th to 90th percentile of sent_at) and the first sent_at."""
    from newsletter.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT status, count(*) FROM deliveries WHERE campaign_id = %(c)s GROUP BY status",
            {"c": campaign_id},
        )
        counts = {str(status): int(count) for status, count in rows}
        status = conn.exec_driver_sql(
            "SELECT status FROM campaigns WHERE id = %(c)s", {"c": campaign_id}
        ).scalar()
        p10, p90, first, sent = conn.exec_driver_sql(
            "SELECT percentile_disc(0.1) WITHIN GROUP (ORDER BY sent_at), "
            "percentile_disc(0.9) WITHIN GROUP (ORDER BY sent_at), min(sent_at), count(*) "
            "FROM deliveries WHERE campaign_id = %(c)s AND status = 'sent'",
            {"c": campaign_id},
        ).one()
    steady = None
    if p10 is not None and p90 is not None and p90 > p10:
        steady = 0.8 * sent / (p90 - p10).total_seconds()
    return counts, str(status), steady, first


def hot_updates(app: Any) -> str:
    """How many updates of deliveries stayed on their page (HOT: no new index entries)."""
    from newsletter.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        updates, hot, fillfactor = conn.exec_driver_sql(
            "SELECT n_tup_upd, n_tup_hot_upd, (SELECT reloptions FROM pg_class"
            " WHERE relname = 'deliveries') FROM pg_stat_user_tables WHERE relname = 'deliveries'"
        ).one()
    share = hot / updates if updates else 0.0
    return (
        f"deliveries: {updates:,} row updates, {hot:,} of them HOT ({share:.0%});"
        f" storage options {fillfactor or 'default (fillfactor 100)'}"
    )


# ---------------------------------------------------------------------- sink


def free_port() -> int:
    """A free TCP port on loopback (bound and released; the race is harmless here)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, proc: Any, seconds: float = 5.0) -> bool:
    """True once something accepts SMTP connections on the port."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and not proc_alive(proc):
            return False
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2) as probe:
                probe.noop()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def proc_alive(proc: Any) -> bool:
    """Popen or multiprocessing.Process still running."""
    if hasattr(proc, "poll"):
        return bool(proc.poll() is None)
    return bool(proc.is_alive())


def start_smtp_sink(port: int, workers: int) -> subprocess.Popen[bytes]:
    """Postfix's smtp-sink: event-driven, one process, many concurrent sessions.

    -m: the concurrency bound (default 256); the backlog is listen(2)'s. No -c:
    its running counter writes on every message and cut a single connection's
    rate from ~10,000 to ~3,500 messages/s here. As root, -u is required.
    """
    binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not Path(binary).exists():
        raise FileNotFoundError("smtp-sink not found (Debian package postfix)")
    command = [binary, "-m", str(max(256, 8 * workers))]
    if os.geteuid() == 0:
        user = "nobody"
        try:
            pwd.getpwnam(user)
        except KeyError:
            user = "root"
        command += ["-u", user]
    command += [f"127.0.0.1:{port}", "1024"]
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    if not wait_listening(port, proc):
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise RuntimeError(f"smtp-sink did not start: {err.decode(errors='replace').strip()}")
    return proc


def _aiosmtpd_sink(port: int) -> None:  # runs in its own process
    from aiosmtpd.controller import Controller

    class Discard:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    controller = Controller(Discard(), hostname="127.0.0.1", port=port)
    controller.start()
    signal.sigwait({signal.SIGTERM})
    controller.stop()


def start_aiosmtpd_sink(port: int) -> Any:
    """Fallback sink, in its own process so it does not share the benchmark's GIL."""
    process = multiprocessing.get_context("spawn").Process(
        target=_aiosmtpd_sink, args=(port,), daemon=True
    )
    process.start()
    if not wait_listening(port, process, seconds=15):
        process.terminate()
        raise RuntimeError("aiosmtpd sink did not start either")
    return process


def stop_sink(sink: Any) -> None:
    """Terminate the sink process."""
    if sink is None:
        return
    if hasattr(sink, "poll"):
        if sink.poll() is None:
            sink.terminate()
            try:
                sink.wait(timeout=5)
            except subprocess.TimeoutExpired:
                sink.kill()
                sink.wait()
    else:
        sink.terminate()
        sink.join(timeout=5)


# ------------------------------------------------------------------- ceiling


def _ceiling_sender(
    port: int, sender: str, recipient: str, data: bytes, count: int, barrier: Any, queue: Any
) -> None:  # runs in its own process
    barrier.wait()
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as connection:
        for _ in range(count):
            connection.sendmail(sender, [recipient], data)
    queue.put((started, time.monotonic(), count))


def run_ceiling(
    port: int, sender: str, recipient: str, data: bytes, total: int, connections: int
) -> float:
    """Seconds for plain smtplib to send ``total`` copies over ``connections``
    connections, one process each (the workers are processes too, so no GIL is
    shared). Timed from the first sender's start to the last one's end."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(connections)
    queue = context.Queue()
    shares = [
        total // connections + (1 if i < total % connections else 0) for i in range(connections)
    ]
    senders = [
        context.Process(
            target=_ceiling_sender, args=(port, sender, recipient, data, share, barrier, queue)
        )
        for share in shares
    ]
    for process in senders:
        process.start()
    reports = [queue.get(timeout=3600) for _ in senders]
    for process in senders:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"a ceiling sender exited with {process.exitcode}")
    if sum(r[2] for r in reports) != total:
        raise RuntimeError("the ceiling senders did not send everything")
    return max(r[1] for r in reports) - min(r[0] for r in reports)


# ------------------------------------------------------------------- workers


def newsletter_executable() -> str:
    """The `newsletter` console script of this virtualenv."""
    for candidate in (
        Path(sys.executable).parent / "newsletter",
        ROOT / ".venv" / "bin" / "newsletter",
    ):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("newsletter")
    if not found:
        raise FileNotFoundError("the `newsletter` command is not installed (make install)")
    return found


def worker_environment(
    url: str, secret: str, port: int, batch_size: int, dkim_env: dict[str, str]
) -> dict[str, str]:
    """The process environment: only the settings given here, no FLASK_DEBUG."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NEWSLETTER_", "FLASK_"))
    }
    env.update(
        NEWSLETTER_DATABASE_URL=url,
        NEWSLETTER_SECRET_KEY=secret,
        NEWSLETTER_MAIL_SERVER="127.0.0.1",
        NEWSLETTER_MAIL_PORT=str(port),
        NEWSLETTER_BASE_URL=BASE_URL,
        NEWSLETTER_MAIL_DEFAULT_SENDER=SENDER,
        NEWSLETTER_DELIVERY_BATCH_SIZE=str(batch_size),
    )
    env.update(dkim_env)
    return env


def read_status(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in kB, or None once the process is gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = dict(re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", text, re.MULTILINE))
    if "VmHWM" not in values:
        return None
    return int(values["VmHWM"]), int(values["VmRSS"])


def run_workers(
    count: int,
    env: dict[str, str],
    log_dir: Path,
    profile_dir: Path | None,
    on_poll: Any = None,
) -> tuple[float, list[WorkerStats], list[str]]:
    """Launch ``count`` workers (``newsletter worker --once``), sample their memory
    every 0.2 s, reap them with wait4() for ru_maxrss and CPU time. Returns
    (seconds from launch until the last one exited, stats, notes)."""
    executable = newsletter_executable()
    notes: list[str] = []
    processes: list[subprocess.Popen[bytes]] = []
    spies: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        for index in range(count):
            log = (log_dir / f"worker-{index}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [executable, "worker", "--once"],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        stats = {p.pid: WorkerStats(p.pid) for p in processes}
        if profile_dir is not None:
            spies = attach_profilers(processes, profile_dir, notes)
        running = set(stats)
        while running:
            now = time.monotonic() - started
            for pid in sorted(running):
                sample = read_status(pid)
                if sample is not None:
                    worker = stats[pid]
                    # Start-up (imports, the first batch) grows the process; after
                    # that a rise of the peak is worth a look.
                    if now > 5 and worker.vmhwm_kb and sample[0] - worker.vmhwm_kb > 10 * 1024:
                        worker.hwm_jumps.append((round(now, 1), sample[0], sample[1]))
                        if profile_dir is not None and len(worker.spike_stacks) < 3:
                            worker.spike_stacks.append(py_spy_dump(pid))
                    worker.vmhwm_kb = max(worker.vmhwm_kb, sample[0])
                    worker.rss_samples.append((now, sample[1]))
                reaped, status, usage = os.wait4(pid, os.WNOHANG)
                if reaped:
                    worker = stats[pid]
                    worker.returncode = os.waitstatus_to_exitcode(status)
                    worker.seconds = time.monotonic() - started
                    worker.ru_maxrss_kb = usage.ru_maxrss
                    worker.cpu_seconds = usage.ru_utime + usage.ru_stime
                    running.discard(pid)
            if on_poll is not None:
                on_poll()
            if running:
                time.sleep(POLL_SECONDS)
        elapsed = time.monotonic() - started
        for process in processes:
            process.returncode = stats[process.pid].returncode  # reaped by wait4 above
        for spy in spies:
            spy.wait(timeout=120)
        return elapsed, list(stats.values()), notes
    finally:
        for process in processes:
            if process.returncode is None and process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
                if process.poll() is None:
                    process.kill()
        for spy in spies:
            if spy.poll() is None:
                spy.terminate()


def py_spy_dump(pid: int) -> str:
    """The Python stack of a process right now (py-spy dump), for RSS spikes."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    try:
        done = subprocess.run(
            [spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"py-spy dump failed: {exc}"
    return done.stdout[-4000:]


def attach_profilers(
    processes: list[subprocess.Popen[bytes]], folder: Path, notes: list[str]
) -> list[subprocess.Popen[bytes]]:
    """py-spy record on every worker (wall clock: --idle keeps time spent waiting
    on PostgreSQL and SMTP in the picture)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        notes.append("py-spy not found: no profile (pip install py-spy)")
        return []
    folder.mkdir(parents=True, exist_ok=True)
    spies = []
    for index, process in enumerate(processes):
        spies.append(
            subprocess.Popen(
                [
                    spy, "record", "--pid", str(process.pid), "--idle", "--rate", "100",
                    "--format", "raw", "--output", str(folder / f"worker-{index}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=(folder / f"py-spy-{index}.log").open("wb"),
            )
        )  # fmt: skip
    return spies


# ------------------------------------------------------------------- profile

# Stages of a worker round, by the (qualified) name of a function on the stack.
STAGES = [
    ("outbox round (process_batch)", ("process_batch",)),
    ("scheduled campaigns (start_due_campaigns)", ("start_due_campaigns",)),
    ("send-rate tokens (wait_for_send_tokens)", ("wait_for_send_tokens",)),
    ("claim (claim_deliveries)", ("claim_deliveries",)),
    ("load + re-check (load_recipients)", ("load_recipients",)),
    ("campaign content (load_content)", ("load_content",)),
    ("render per recipient (render)", ("render",)),
    ("  tokens (make_token)", ("make_token",)),
    ("  links (external_url: url_for in a test_request_context)", ("external_url",)),
    ("  fill the encoded bodies (EncodedBody.fill)", ("EncodedBody.fill",)),
    ("  build_encoded (MIME headers and join)", ("build_encoded",)),
    ("    header lines (header_line: To, Date, Message-ID, List-Unsubscribe)", ("header_line",)),
    ("  DKIM (sign_message)", ("sign_message",)),
    ("SMTP send (_send)", ("_send",)),
    ("  one mail transaction (send_transaction)", ("send_transaction",)),
    ("    waiting for the server's replies (getreply)", ("SMTP.getreply",)),
    ("    socket writes (SMTP.send)", ("SMTP.send",)),
    ("  mark sent (mark)", ("mark",)),
    ("finish campaigns (finish_campaigns)", ("finish_campaigns",)),
    ("progress reporter", ("ProgressReporter.__call__",)),
    ("SQL round trips (SQLAlchemy execute, anywhere)", ("Connection._execute_context",)),
    ("commits (anywhere)", ("Session.commit",)),
]


def summarise_profile(folder: Path) -> dict[str, Any]:
    """Percentages of wall-clock samples, per stage and per function."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for path in sorted(folder.glob("worker-*.txt")):
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[tuple(stack.split(";"))] += int(count)
    total = sum(stacks.values())
    if not total:
        return {}

    def short(frame: str) -> str:
        frame = re.sub(r"\(.*?/site-packages/", "(", frame)
        frame = re.sub(r"\(.*?/lib/python3\.\d+/", "(", frame)
        return frame.replace(str(ROOT) + "/", "")

    def names(stack: tuple[str, ...]) -> set[str]:
        return {frame.split(" (", 1)[0] for frame in stack}

    named = [(names(stack), n) for stack, n in stacks.items()]
    outside = sum(n for functions, n in named if "run_worker" not in functions)
    stages = [("start-up and exit (outside run_worker)", round(100 * outside / total, 1))]
    for label, needles in STAGES:
        hits = sum(n for functions, n in named if functions.intersection(needles))
        stages.append((label, round(100 * hits / total, 1)))
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, n in stacks.items():
        names = [re.sub(r":\d+\)$", ")", short(f)) for f in frames]
        for name in set(names):
            inclusive[name] += n
        own[names[-1]] += n
    return {
        "samples": total,
        "stages": stages,
        # Frames on (nearly) every stack (the CLI, run_worker ...) say nothing.
        "inclusive": [
            (k, round(100 * v / total, 1)) for k, v in inclusive.most_common(60) if v < 0.9 * total
        ][:35],
        "self": [(k, round(100 * v / total, 1)) for k, v in own.most_common(25)],
    }


# ---------------------------------------------------------------------- DKIM


def dkim_settings(kind: str, folder: Path) -> dict[str, str]:
    """Environment for DKIM signing with a fresh key (none: no settings)."""
    if kind == "none":
        return {}
    path = folder / f"dkim-{kind}.key"
    if kind == "rsa":
        subprocess.run(
            ["openssl", "genrsa", "-out", str(path), "2048"], check=True, capture_output=True
        )
    else:
        import nacl.signing

        path.write_text(base64.b64encode(bytes(nacl.signing.SigningKey.generate())).decode())
    return {
        "NEWSLETTER_DKIM_SELECTOR": "bench",
        "NEWSLETTER_DKIM_DOMAIN": "news.example",
        "NEWSLETTER_DKIM_ALGORITHM": kind,
        "NEWSLETTER_DKIM_PRIVATE_KEY_FILE": str(path),
    }


# ---------------------------------------------------------------------- main


def judge(results: Results) -> list[tuple[str, str]]:
    """PASS / MISS / n/a per target."""
    lines = []
    if results.workers == 2:
        verdict = "PASS" if results.campaign_rate >= TARGET_RATE else "MISS"
    else:
        verdict = "n/a (judged with 2 workers)"
    lines.append((f">= {TARGET_RATE:,.0f} messages/s with 2 workers", verdict))
    share = results.campaign_rate / results.ceiling_rate if results.ceiling_rate else 0.0
    lines.append(
        (
            f">= {TARGET_CEILING_SHARE:.0%} of the ceiling",
            "PASS" if share >= TARGET_CEILING_SHARE else "MISS",
        )
    )
    at_scale = results.recipients >= JUDGED_AT
    lines.append(
        (
            f"enqueue of 1,000,000 recipients < {TARGET_ENQUEUE_SECONDS:.0f} s",
            ("PASS" if results.enqueue_seconds < TARGET_ENQUEUE_SECONDS else "MISS")
            if at_scale
            else "n/a (judged only on a --recipients 1000000 run)",
        )
    )
    lines.append(
        (
            f"worker peak RSS < {TARGET_RSS_MB:.0f} MB at 1,000,000 recipients",
            ("PASS" if results.worker_peak_mb < TARGET_RSS_MB else "MISS")
            if at_scale
            else "n/a (judged only on a --recipients 1000000 run)",
        )
    )
    return lines


def report(results: Results) -> None:
    """The printout: one "label : value" line per figure, then the verdicts."""

    def row(label: str, value: str) -> None:
        print(f"{label:<20}: {value}")

    m, r = results.machine, results
    print("\n== send_throughput ==")
    row(
        "machine",
        f"{m.get('nproc')} CPUs ({m.get('cpu', '?')}), {m.get('memory', '?')} RAM, "
        f"PostgreSQL {m.get('postgresql')}, Python {m.get('python')}, Linux {m.get('kernel')}",
    )
    row(
        "postgresql settings",
        f"shared_buffers={m.get('pg.shared_buffers')} "
        f"synchronous_commit={m.get('pg.synchronous_commit')} fsync={m.get('pg.fsync')} "
        f"autovacuum={m.get('pg.autovacuum')}",
    )
    if m.get("pg.autovacuum") == "off":
        # Measured 2026-11-24 at 1,000,000 recipients: PostgreSQL used 386.6 CPU-s with
        # autovacuum off and 48.2 with it on (58.9 % against 87.4 % of the ceiling): every
        # lease and every "sent" leaves a dead row version in each index of deliveries.
        row(
            "NOTE",
            "autovacuum is off on this server (production runs with it on); above about "
            "100,000 recipients PostgreSQL then does several times the work per message. "
            "ALTER SYSTEM SET autovacuum = on; SELECT pg_reload_conf();",
        )
    row("code", m.get("code", "?"))
    row("sink", r.sink)
    row("recipients", f"{r.recipients:,}")
    row("workers", str(r.workers))
    row("batch size", str(r.batch_size))
    row("dkim", r.dkim)
    row("message size", f"{r.message_bytes:,} bytes")
    row("seed (setup only)", f"{r.seed_seconds:.1f} s")
    row("enqueue seconds", f"{r.enqueue_seconds:.2f} (start_campaign, {r.queued:,} deliveries)")
    row("campaign seconds", f"{r.campaign_seconds:.2f} (worker launch until all exited)")
    row("messages/s", f"{r.campaign_rate:,.0f}")
    if r.steady_rate is not None:
        row("  steady state", f"{r.steady_rate:,.0f} messages/s (10th-90th percentile of sent_at)")
    if r.first_sent_after is not None:
        row("  first batch marked", f"{r.first_sent_after:.2f} s after launch")
    row("ceiling seconds", f"{r.ceiling_seconds:.2f} (smtplib, {r.workers} connection(s))")
    row("ceiling messages/s", f"{r.ceiling_rate:,.0f}")
    share = r.campaign_rate / r.ceiling_rate if r.ceiling_rate else 0.0
    row("ratio", f"{100 * share:.1f} % of the ceiling")
    row("worker peak RSS", f"{r.worker_peak_mb:.1f} MB (VmHWM, max over workers)")
    row(
        "  ru_maxrss",
        f"{r.worker_ru_maxrss_mb:.1f} MB (wait4; includes the benchmark's own RSS at fork)",
    )
    if r.worker_rss_timeline_mb:
        timeline = ", ".join(f"{p}%: {mb:.1f}" for p, mb in r.worker_rss_timeline_mb)
        row("  RSS over the run", f"{timeline} (MB, max over workers)")
    for index, jumps in enumerate(r.worker_hwm_jumps):
        for moment, hwm, rss in jumps:
            row(
                "  peak RSS rose",
                f"worker {index} at {moment:.1f} s: VmHWM {hwm / 1024:.1f} MB "
                f"(VmRSS {rss / 1024:.1f} MB when sampled)",
            )
    for stack in r.spike_stacks:
        row("  stack at the rise", "\n" + stack)
    cpu_list = ", ".join(f"{s:.1f}" for s in r.worker_cpu_seconds)
    row("worker CPU seconds", f"{cpu_list} (of {r.campaign_seconds:.1f} s wall each)")
    for phase, cpu in (("campaign", r.campaign_cpu), ("ceiling", r.ceiling_cpu)):
        if not cpu:
            continue
        row(
            f"CPU during {phase}",
            f"{cpu['busy']:.1f} of {cpu['capacity']:.1f} CPU-s busy = benchmark+workers "
            f"{cpu['benchmark']:.1f}, PostgreSQL {cpu['postgres']:.1f}, sink {cpu['sink']:.1f}, "
            f"other {cpu['other']:.1f}",
        )
        if cpu["capacity"] and cpu["other"] > 0.10 * cpu["capacity"]:
            busiest = ", ".join(f"{c} {t} s" for c, t in r.busiest.get(phase, []))
            row(
                "WARNING",
                f"{100 * cpu['other'] / cpu['capacity']:.0f} % of the machine went to other "
                f"work during the {phase} ({busiest or 'kernel or short-lived processes'}): "
                "its figure is disturbed",
            )
    counts = ", ".join(f"{k}={v:,}" for k, v in sorted(r.status_counts.items()))
    row("deliveries", f"{counts}; campaign {r.campaign_status}")
    row("ceiling message", r.ceiling_message)
    for note in r.notes:
        row("note", note)
    if r.profiled:
        row("note", "PROFILED RUN (py-spy attached): its throughput is not a benchmark figure")
    all_sent = r.status_counts == {"sent": r.recipients} and r.workers_ok
    verdict = "PASS" if all_sent else "FAIL"
    print(f"{verdict}  all {r.recipients:,} deliveries sent, workers exited 0")
    for target, verdict in judge(r):
        word, _, why = verdict.partition(" ")
        print(f"{word:<4}  {target}" + (f" {why}" if why else ""))
    if r.profile:
        print_profile(r.profile)
    if r.postgres_activity:
        print("\n== PostgreSQL: % of 20 ms samples a backend was active on a statement ==")
        for query, wait, share in r.postgres_activity:
            print(f"{share:5.1f} %  [{wait}] {query}")


def print_profile(profile: dict[str, Any]) -> None:
    """Stages and the heaviest functions, as % of the workers' wall-clock samples."""
    samples = profile["samples"]
    print(f"\n== where the workers' wall-clock time goes (py-spy --idle, {samples:,} samples) ==")
    for label, share in profile["stages"]:
        print(f"{share:5.1f} %  {label}")
    print("\n-- inclusive (function and what it calls) --")
    for name, share in profile["inclusive"]:
        print(f"{share:5.1f} %  {name}")
    print("\n-- self (innermost frame) --")
    for name, share in profile["self"]:
        print(f"{share:5.1f} %  {name}")


def rss_timeline(stats: list[WorkerStats], elapsed: float) -> list[tuple[int, float]]:
    """RSS at 10/25/50/75/90/100 % of the run, max over workers (is memory flat?)."""
    points = []
    for percent in (10, 25, 50, 75, 90, 100):
        moment = elapsed * percent / 100
        values = []
        for worker in stats:
            before = [kb for t, kb in worker.rss_samples if t <= moment]
            if before:
                values.append(before[-1])
        if values:
            points.append((percent, max(values) / 1024))
    return points


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 when every delivery was sent, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000, help="subscribers (100000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--batch-size", type=int, default=500, help="DELIVERY_BATCH_SIZE (500)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_ADMIN_DATABASE_URL", DEFAULT_ADMIN_URL),
        help="an existing PostgreSQL database to CREATE/DROP the benchmark database from",
    )
    parser.add_argument("--dkim", choices=["none", "rsa", "ed25519"], default="none")
    parser.add_argument("--sink", choices=["auto", "smtp-sink", "aiosmtpd"], default="auto")
    parser.add_argument("--profile", type=Path, help="py-spy every worker into this folder")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=300.0,
        help="before the ceiling and the campaign, wait up to this many seconds for other "
        "processes to leave the CPUs (300)",
    )
    parser.add_argument(
        "--keep-database", action="store_true", help="do not drop the database (debugging)"
    )
    parser.add_argument(
        "--deliveries-fillfactor",
        type=int,
        choices=range(10, 101),
        metavar="10-100",
        help="ALTER TABLE deliveries SET (fillfactor = N) before the enqueue (an experiment;"
        " PostgreSQL's default is 100)",
    )
    parser.add_argument(
        "--chunk",
        type=int,
        help="DELIVERY_FENCE_CHUNK of the workers: messages sent between two fenced marks "
        "(default: the code's own)",
    )
    args = parser.parse_args(argv)
    if args.recipients < 1 or args.workers < 1 or args.batch_size < 1:
        parser.error("--recipients, --workers and --batch-size must be positive")
    from newsletter.config import DEFAULTS

    if args.chunk is not None and "DELIVERY_FENCE_CHUNK" not in DEFAULTS:
        parser.error("--chunk: this code has no DELIVERY_FENCE_CHUNK setting")
    chunk = args.chunk if args.chunk is not None else DEFAULTS.get("DELIVERY_FENCE_CHUNK")

    # SIGTERM runs the clean-up below like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    results = Results(args.recipients, args.workers, args.batch_size, args.dkim)
    secret = "bench-" + secrets.token_urlsafe(48)[:42]  # 48 characters, not JSON
    work = Path(tempfile.mkdtemp(prefix="newsletter-bench-"))
    admin = name = app = sink = None
    try:
        admin, name, url = create_database(args.database_url)
        print(f"database {name} created; migrating ...", flush=True)
        results.machine = machine_facts(admin)
        port = free_port()
        dkim_env = dkim_settings(args.dkim, work)
        app = make_app(url, secret, port, dkim_env)
        from flask_migrate import upgrade

        with app.app_context():
            upgrade()

        print(f"seeding {args.recipients:,} subscribers ...", flush=True)
        started = time.perf_counter()
        _, campaign_id = seed(app, args.recipients, args.deliveries_fillfactor)
        results.seed_seconds = time.perf_counter() - started

        print("enqueueing (start_campaign) ...", flush=True)
        results.enqueue_seconds, results.queued = enqueue(app, campaign_id)

        if args.sink in ("auto", "smtp-sink"):
            try:
                sink = start_smtp_sink(port, args.workers)
                results.sink = f"Postfix smtp-sink on 127.0.0.1:{port} (pid {sink.pid})"
            except (OSError, RuntimeError) as exc:
                if args.sink == "smtp-sink":
                    raise
                results.notes.append(f"smtp-sink could not be started ({exc})")
        if sink is None:
            sink = start_aiosmtpd_sink(port)
            results.sink = (
                f"aiosmtpd on 127.0.0.1:{port} -- FALLBACK, NOT smtp-sink: "
                "figures are not comparable with smtp-sink runs"
            )

        sender, recipient, data, how = sample_message(app, campaign_id)
        results.message_bytes = len(data)
        results.ceiling_message = how
        print(f"ceiling: {args.recipients:,} x {len(data):,} bytes over "
              f"{args.workers} connection(s) ...", flush=True)  # fmt: skip
        sink_pid = sink.pid if hasattr(sink, "pid") else None
        wait_quiet(args.wait_quiet, sink_pid)
        window = CpuWindow(sink_pid)
        window.start()
        results.ceiling_seconds = run_ceiling(
            port, sender, recipient, data, args.recipients, args.workers
        )
        results.ceiling_cpu = window.stop()
        results.busiest["ceiling"] = window.busiest
        results.ceiling_rate = args.recipients / results.ceiling_seconds

        fencing = f"fence chunk {chunk}" if chunk else "no fencing in this code"
        print(f"campaign: {args.workers} worker(s), batch size {args.batch_size}, {fencing} ...",
              flush=True)  # fmt: skip
        env = worker_environment(url, secret, port, args.batch_size, dkim_env)
        if args.chunk is not None:
            env["NEWSLETTER_DELIVERY_FENCE_CHUNK"] = str(args.chunk)
        wait_quiet(args.wait_quiet, sink_pid)
        activity = ActivitySampler(url, name) if args.profile is not None else None
        if activity is not None:
            activity.start()
        window = CpuWindow(sink_pid)
        window.start()
        launched_at = datetime.now(UTC)
        elapsed, stats, notes = run_workers(
            args.workers, env, work, args.profile, on_poll=window.postgres.sample
        )
        results.campaign_cpu = window.stop()
        results.busiest["campaign"] = window.busiest
        if activity is not None:
            results.postgres_activity = activity.finish()
        results.notes += notes
        results.campaign_seconds = elapsed
        results.campaign_rate = args.recipients / elapsed
        results.worker_peak_mb = max(w.peak_mb for w in stats)
        results.worker_ru_maxrss_mb = max(w.ru_maxrss_kb for w in stats) / 1024
        results.worker_rss_timeline_mb = rss_timeline(stats, elapsed)
        results.worker_cpu_seconds = [w.cpu_seconds for w in stats]
        results.worker_hwm_jumps = [w.hwm_jumps for w in stats]
        results.spike_stacks = [stack for w in stats for stack in w.spike_stacks]
        results.workers_ok = all(w.returncode == 0 for w in stats)
        for index, worker in enumerate(stats):
            if worker.returncode != 0:
                tail = (work / f"worker-{index}.log").read_text(errors="replace")[-3000:]
                results.notes.append(f"worker {index} exited {worker.returncode}:\n{tail}")

        counts, status, steady, first = verify(app, campaign_id)
        results.notes.append(hot_updates(app))
        results.status_counts, results.campaign_status = counts, status
        results.steady_rate = steady
        if first is not None:
            results.first_sent_after = (first.replace(tzinfo=UTC) - launched_at).total_seconds()
        if args.profile is not None:
            results.profiled = True
            results.profile = summarise_profile(args.profile)

        report(results)
        if args.json:
            args.json.write_text(json.dumps(asdict(results), indent=2, default=str))
        return 0 if results.status_counts == {"sent": args.recipients} and results.workers_ok else 1
    finally:
        stop_sink(sink)
        if app is not None:
            with app.app_context():
                from newsletter.extensions import db

                db.session.remove()
                db.engine.dispose()
        if admin is not None and name is not None:
            if args.keep_database:
                print(f"database {name} kept (--keep-database)")
            else:
                drop_database(admin, name)
                print(f"database {name} dropped")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
