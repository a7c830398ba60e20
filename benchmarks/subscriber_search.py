#!/usr/bin/env python
"""Staff subscriber search at a million subscribers on PostgreSQL.

What one run does:

1. creates a throw-away PostgreSQL database from an admin URL and migrates it
   to revision 0003 (before the search indexes);
2. seeds N subscribers set-based in SQL (generate_series): Danish names,
   addresses on 25 domains, created over about three years; every one on the
   list ``news`` (85 % active, 5 % pending, 9 % unsubscribed, 1 % bounced),
   every tenth also on ``events``; and their ledger events (requested,
   confirmed, withdrawn; about 2 per subscriber) in time order;
3. upgrades to head, timing migration 0004 (pg_trgm GIN indexes, the
   list/status index) on the populated tables, then VACUUM ANALYZE;
4. times the console's typical pages through the service the view calls
   (``search_subscribers``: the ids query plus loading the page's rows and
   subscriptions), and then whole GET /admin/subscribers requests of a
   logged-in viewer (template included); prints median and p95 in ms per
   query and an EXPLAIN (ANALYZE, BUFFERS) summary of each ids query;
5. times the dashboard's figures (``reports.dashboard``), each part and all;
6. drops the database (``--keep-database`` keeps it).

Usage::

    .venv/bin/python benchmarks/subscriber_search.py [--subscribers N] [--runs R]
        [--database-url ADMIN_URL] [--keep-database]

Timings on a shared machine vary: the output prints the load average before
and after; repeat the run when other work was going on.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SECRET = "benchmark-secret-key-0123456789-abcdefghijklmnop"  # noqa: S105  (throw-away database)
PASSWORD = "benchmark password that is long"  # noqa: S105
TARGET_MS = 200.0

SEED_SUBSCRIBERS = """
INSERT INTO subscribers (email, email_key, name, locale, token_key, created_at)
SELECT e, e, f || ' ' || l, 'da', left(md5(i::text || 'k'), 22),
       timezone('utc', now()) - make_interval(secs => (%(n)s - i) * 95)
FROM (
  SELECT i, f, l,
         translate(lower(f), 'æøå', 'aoa') || '.' || translate(lower(l), 'æøå', 'aoa')
           || i || '@' || (ARRAY['gmail.com', 'hotmail.com', 'outlook.dk', 'yahoo.dk',
             'live.dk', 'mail.dk', 'jubii.dk', 'icloud.com', 'proton.me', 'kommune.dk',
             'firma-1.dk', 'firma-2.dk', 'firma-3.dk', 'firma-4.dk', 'firma-5.dk',
             'firma-6.dk', 'firma-7.dk', 'skole.dk', 'uni.dk', 'region.dk', 'gmx.net',
             'web.de', 'example.org', 'inklusio.dk', 'post.tele.dk'])[1 + mod(i * 13, 25)] AS e
  FROM (
    SELECT i,
      (ARRAY['Anne', 'Søren', 'Mette', 'Jørgen', 'Lars', 'Åse', 'Peter', 'Line', 'Mikkel',
             'Sofie', 'Hans', 'Kirsten', 'Niels', 'Birgitte', 'Jens', 'Camilla', 'Ole',
             'Freja', 'Rasmus', 'Ida'])[1 + mod(i * 7, 20)] AS f,
      (ARRAY['Nielsen', 'Jensen', 'Hansen', 'Sørensen', 'Rasmussen', 'Christensen', 'Kjær',
             'Pedersen', 'Andersen', 'Larsen', 'Møller', 'Madsen', 'Olsen', 'Thomsen',
             'Poulsen', 'Johansen'])[1 + mod(i / 20 * 3, 16)] AS l
    FROM generate_series(1, %(n)s) AS i
  ) names
) people
"""
SEED_NEWS = """
INSERT INTO subscriptions (subscriber_id, list_id, status, consent_text_id, requested_at,
                           confirmed_at, unsubscribed_at)
SELECT id, %(list_id)s, st, %(text_id)s, created_at,
       CASE WHEN st <> 'pending' THEN created_at + interval '7 minutes' END,
       CASE WHEN st = 'unsubscribed' THEN created_at + interval '30 days' END
FROM (SELECT id, created_at,
        CASE WHEN mod(id * 37, 100) < 85 THEN 'active' WHEN mod(id * 37, 100) < 90 THEN 'pending'
             WHEN mod(id * 37, 100) < 99 THEN 'unsubscribed' ELSE 'bounced' END AS st
      FROM subscribers) s
"""
SEED_EVENTS_LIST = """
INSERT INTO subscriptions (subscriber_id, list_id, status, consent_text_id, requested_at)
SELECT id, %(list_id)s, CASE WHEN mod(id, 5) = 0 THEN 'pending' ELSE 'active' END,
       %(text_id)s, created_at
FROM subscribers WHERE mod(id, 10) = 3
"""
SEED_LEDGER = """
INSERT INTO consent_events (seq, occurred_at, event, channel, subscriber_id, list_id,
  consent_text_id, email_digest, details)
SELECT row_number() OVER (ORDER BY t, subscriber_id, event), t, event, 'form', subscriber_id,
       list_id, consent_text_id, md5(subscriber_id::text) || md5(subscriber_id::text || 'x'),
       '{}'
FROM (
  SELECT requested_at AS t, 'requested' AS event, subscriber_id, list_id, consent_text_id
    FROM subscriptions
  UNION ALL SELECT confirmed_at, 'confirmed', subscriber_id, list_id, consent_text_id
    FROM subscriptions WHERE confirmed_at IS NOT NULL
  UNION ALL SELECT least(unsubscribed_at, timezone('utc', now())), 'withdrawn', subscriber_id,
       list_id, consent_text_id FROM subscriptions WHERE unsubscribed_at IS NOT NULL
) e
"""

# (label, filter arguments, keyset cursor as a fraction of N, or -1: the second page).
# "{exact}" and "{rare}" are filled in from the seeded data (see sample_values).
QUERIES: list[tuple[str, dict[str, str], float | None]] = [
    ("first page, no filter", {}, None),
    ("a later page (keyset, mid-table)", {}, 0.5),
    ("a late page (keyset, oldest 1 %)", {}, 0.01),
    ("address fragment, common ('sofie.kj')", {"q": "sofie.kj"}, None),
    ("address fragment, rare ('{rare}')", {"q": "{rare}"}, None),
    ("address domain ('@firma-7.dk')", {"q": "@firma-7.dk"}, None),
    ("exact address", {"q": "{exact}"}, None),
    ("name fragment ('Jørgen Sø')", {"q": "Jørgen Sø"}, None),
    ("name, common ('Mikkel')", {"q": "Mikkel"}, None),
    ("no match ('zzqxq')", {"q": "zzqxq"}, None),
    ("list=news status=active", {"list": "news", "status": "active"}, None),
    ("list=news status=bounced (1 %)", {"list": "news", "status": "bounced"}, None),
    ("list=news status=bounced, page 2", {"list": "news", "status": "bounced"}, -1.0),
    ("list=events (10 %), any status", {"list": "events"}, None),
    ("status=bounced, any list", {"status": "bounced"}, None),
    ("list=news + name 'Hansen'", {"list": "news", "q": "Hansen"}, None),
]


def sample_values(db: Any, n: int) -> dict[str, str]:
    """An existing address (for the exact search) and a rare fragment of another one
    (its surname and number, e.g. 'olsen4242': a handful of matches)."""
    from sqlalchemy import select

    from newsletter.models import Subscriber

    exact = db.session.scalar(select(Subscriber.email).where(Subscriber.id == n // 2))
    other = db.session.scalar(select(Subscriber.email).where(Subscriber.id == n // 3))
    return {"exact": exact, "rare": other.split("@")[0].split(".")[1]}


def timed(function: Any, runs: int) -> tuple[float, float]:
    """Median and p95 in ms of ``runs`` calls, after two warm-up calls."""
    for _ in range(2):
        function()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def explain(db: Any, sql: str) -> str:
    """The plan's node types and index names, and the execution time, on one line."""
    with db.engine.connect() as conn:
        plan = [r[0] for r in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql)]
    nodes = []
    for line in plan:
        match = re.match(
            r"\s*(?:->\s*)?([A-Z][A-Za-z ]+?)(?: using (\w+)| on (\w+))?(?: on \w+)?\s+\(", line
        )
        if match:
            name = match.group(1) + (
                f" {match.group(2) or match.group(3)}" if match.group(2) or match.group(3) else ""
            )
            nodes.append(name)
    executed = next((ln.split(":")[1].strip() for ln in plan if "Execution Time" in ln), "?")
    hits = next((ln.strip() for ln in plan if "Buffers:" in ln), "")
    return f"{' > '.join(nodes)} | {executed} | {hits}"


def seed(app: Any, n: int) -> None:
    """Lists, subscribers, subscriptions and ledger events, set-based."""
    from newsletter.extensions import db
    from newsletter.subscriptions.lists import create_list, current_consent_text

    with app.app_context():
        news = create_list("news", "Nyhedsbrev", "Ja tak.")
        events = create_list("events", "Arrangementer", "Ja tak til invitationer.")
        with db.engine.begin() as conn:
            step = time.perf_counter()
            conn.exec_driver_sql(SEED_SUBSCRIBERS, {"n": n})
            for sql, mailing_list in ((SEED_NEWS, news), (SEED_EVENTS_LIST, events)):
                text_id = current_consent_text(mailing_list.id).id
                conn.exec_driver_sql(sql, {"list_id": mailing_list.id, "text_id": text_id})
            conn.exec_driver_sql(SEED_LEDGER)
            conn.exec_driver_sql(
                "UPDATE ledger_head SET seq = (SELECT max(seq) FROM consent_events)"
            )
            print(f"seeded in {time.perf_counter() - step:.1f} s", flush=True)


def forget_request_state(sender: Any, **extra: Any) -> None:
    """Start every request with a clean ``g``: the benchmark keeps one app context
    open, which Flask reuses for the test client's requests (as tests/conftest.py does)."""
    from flask import g

    for key in ("_login_user", "csrf_token"):
        g.pop(key, None)


def log_in(client: Any, email: str) -> None:
    """Log a test client in through the real login form."""
    page = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token, "no CSRF token on the login page"
    response = client.post(
        "/admin/login", data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)}
    )
    assert response.status_code == 302, response.status_code


def run(app: Any, n: int, runs: int) -> None:
    """Migrate, measure and print."""
    from flask import request_started
    from flask_migrate import upgrade

    from newsletter.extensions import db
    from newsletter.models import Role, StaffUser
    from newsletter.reports.dashboard import daily_activity, dashboard, subscriber_counts
    from newsletter.staff.passwords import hash_password
    from newsletter.subscriptions.search import parse_filter, search_subscribers, subscriber_ids

    with app.app_context():
        upgrade(revision="0003")
    seed(app, n)
    with app.app_context():
        start = time.perf_counter()
        upgrade()
        print(f"migration 0004 (+ later) on {n:,} subscribers: {time.perf_counter() - start:.1f} s")
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        db.session.add(
            StaffUser(
                email="viewer@example.org", role=Role.VIEWER, password_hash=hash_password(PASSWORD)
            )
        )
        db.session.commit()
        print(f"\n{'query':44} {'service ms':>17} {'GET page ms':>17}  rows")
        print(f"{'':44} {'median':>8} {'p95':>8} {'median':>8} {'p95':>8}")
        request_started.connect(forget_request_state, app)
        client = app.test_client()
        log_in(client, "viewer@example.org")
        plans, worst = [], 0.0
        values = sample_values(db, n)
        for template, raw_args, cursor in QUERIES:
            label = template.format(**values)
            args = {key: value.format(**values) for key, value in raw_args.items()}
            flt = parse_filter(args)
            before = None
            if cursor is not None and cursor > 0:
                before = int(n * cursor)
            elif cursor is not None:  # the second page of this filter
                before = search_subscribers(flt).next_before
            page = search_subscribers(flt, before=before)
            service = timed(
                lambda flt=flt, before=before: search_subscribers(flt, before=before), runs
            )
            db.session.rollback()
            query = "&".join(f"{k}={v}" for k, v in {**args, "before": before or ""}.items() if v)
            view = timed(lambda query=query: client.get(f"/admin/subscribers?{query}"), runs)
            worst = max(worst, service[1], view[1])
            print(
                f"{label:44} {service[0]:8.1f} {service[1]:8.1f} {view[0]:8.1f} {view[1]:8.1f}"
                f"  {len(page.subscribers)}"
            )
            ids, key = subscriber_ids(flt)
            if before is not None:
                ids = ids.where(key < before)
            sql = (
                ids.order_by(key.desc())
                .limit(51)
                .compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True})
            )
            plans.append((label, explain(db, str(sql))))
        for label, function in (
            ("dashboard: counts per list and status", subscriber_counts),
            ("dashboard: 90 days of ledger activity", daily_activity),
            ("dashboard: all figures", dashboard),
        ):
            dash = timed(function, max(3, runs // 5))
            print(f"{label:44} {dash[0]:8.1f} {dash[1]:8.1f}")
        print("\nEXPLAIN (ANALYZE, BUFFERS) of each ids query (plan nodes | time | buffers):")
        for label, plan in plans:
            print(f"- {label}: {plan}")
        verdict = "PASS" if worst < TARGET_MS else "MISS"
        print(f"\n{verdict}: worst p95 {worst:.1f} ms against the {TARGET_MS:.0f} ms target")
        db.session.remove()
        db.engine.dispose()


def main() -> None:
    """Parse arguments, make the database, run, drop it."""
    import sqlalchemy as sa

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per query")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--keep-database", action="store_true")
    options = parser.parse_args()

    from newsletter import create_app

    admin = sa.create_engine(options.database_url, isolation_level="AUTOCOMMIT")
    name = f"newsletter_search_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        version = conn.exec_driver_sql("SHOW server_version").scalar()
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    print(
        f"database {name}; PostgreSQL {version}; {os.cpu_count()} CPUs; "
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    try:
        app = create_app(
            {"TESTING": True, "DATABASE_URL": url, "SECRET_KEY": SECRET, "RATELIMIT_ENABLED": False}
        )
        run(app, options.subscribers, options.runs)
    finally:
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if options.keep_database:
            print(f"kept database {name}")
        else:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
