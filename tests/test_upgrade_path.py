"""The upgrade path: a database of the first release, with its data, reaches head.

A new, empty database of the backend under test is migrated to revision 0001
only and filled with plain Core inserts matching that schema: lists, consent
texts, subscribers with a subscription in every status, outbox mails in every
status, and consent events chained as the code of that release chained them
(the keyed row hashes, personal digests and ledger head, computed with the
chain code frozen in migration 0011). Then ``newsletter db upgrade`` runs as
the installed console script in a subprocess, in one go or one revision at a
time. Either way every row keeps its meaning (0007 redacts the one event that
held a capability link, 0011 commits to every event's personal fields), the
schema is the models' (the drift check of tests/test_migrations.py),
``newsletter ledger seal`` and ``ledger verify`` pass, a new signup goes
through a worker round, and an upgraded subscriber's consent bundle verifies
with newsletter_verify.py alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import rfc8785
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import upgrade

from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.models import Channel
from newsletter.subscriptions.intake import SignupRequest, accept_signup

from .conftest import TEST_SECRET
from .test_migrations import (  # noqa: F401 - fixtures used here
    differences,
    empty_database_url,
    fresh_app,
)

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
MIGRATION_0011 = MIGRATIONS / "versions" / "0011_merkle_ledger.py"
VERIFIER = ROOT / "newsletter_verify.py"
CONSOLE_SCRIPT = Path(sys.prefix) / "bin" / "newsletter"
PERSONAL = ("email", "ip", "user_agent", "source_url")

# Naive UTC, as 0001 stores instants.
T0 = datetime(2026, 11, 25, 9, 30, 15, 123456, tzinfo=UTC).replace(tzinfo=None)
LINK = "https://nyhed.example/confirm/IjEyMyI.Zx9-k2Qw8LmA3rT7"  # a capability link


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# The first release's data, row by row, with the ids it would have had.
LISTS: list[dict[str, Any]] = [
    {
        "id": 1,
        "slug": "nyhedsbrev",
        "name": "Nyhedsbrev",
        "description": "Månedligt nyt.",
        "is_default": True,
        "created_at": at(0),
        "archived_at": None,
    },
    {
        "id": 2,
        "slug": "tech",
        "name": "Tech",
        "description": "",
        "is_default": False,
        "created_at": at(1),
        "archived_at": None,
    },
    {
        "id": 3,
        "slug": "gammel",
        "name": "Gammel liste",
        "description": "Lukket.",
        "is_default": False,
        "created_at": at(2),
        "archived_at": at(500),
    },
]
TEXTS: list[dict[str, Any]] = [
    {"id": 1, "list_id": 1, "version": 1, "text": "Ja tak til nyhedsbrevet.", "created_at": at(0)},
    {"id": 2, "list_id": 2, "version": 1, "text": "Yes to tech news.", "created_at": at(1)},
    {"id": 3, "list_id": 1, "version": 2, "text": "Ja tak, også i ny form.", "created_at": at(300)},
    {"id": 4, "list_id": 3, "version": 1, "text": "Gamle vilkår.", "created_at": at(2)},
]
SUBSCRIBERS = [
    (1, "Alice@Example.org", "alice@example.org", "Alice", "da"),
    (2, "bob@example.org", "bob@example.org", "", "en"),
    (3, "carol@example.net", "carol@example.net", "Carol Ø", "da"),
    (4, "dave@example.com", "dave@example.com", "Dave", "en"),
    (5, "erin@example.org", "erin@example.org", "", "da"),
]
SUBSCRIBER_ROWS: list[dict[str, Any]] = [
    {
        "id": sid,
        "email": email,
        "email_key": key,
        "name": name,
        "locale": locale,
        "token_key": hashlib.sha256(key.encode()).hexdigest()[:32],
        "created_at": at(10 * sid),
        "last_confirmation_sent_at": at(10 * sid + 0.5) if sid in (1, 2, 3) else None,
    }
    for sid, email, key, name, locale in SUBSCRIBERS
]
SUBSCRIPTIONS = [
    # id, subscriber, list, status, consent text, requested, confirmed, unsubscribed
    (1, 1, 1, "active", 1, at(10), at(11), None),
    (2, 1, 2, "pending", 2, at(12), None, None),
    (3, 2, 2, "pending", 2, at(20), None, None),
    (4, 3, 1, "unsubscribed", 1, at(30), at(31), at(400)),
    (5, 4, 1, "bounced", 1, at(40), at(41), None),
    (6, 5, 1, "active", 1, at(50), at(50), None),
    (7, 5, 3, "active", 4, at(50), at(50), None),
]
SUBSCRIPTION_ROWS = [
    dict(
        zip(
            (
                "id",
                "subscriber_id",
                "list_id",
                "status",
                "consent_text_id",
                "requested_at",
                "confirmed_at",
                "unsubscribed_at",
            ),
            row,
            strict=True,
        )
    )
    for row in SUBSCRIPTIONS
]
OUTBOX: list[dict[str, Any]] = [
    {
        "id": 1,
        "kind": "confirm",
        "subscriber_id": 1,
        "payload": {"lists": [1, 2]},
        "status": "sent",
        "attempts": 1,
        "created_at": at(10),
        "next_attempt_at": at(10),
        "lease_until": None,
        "leased_by": None,
        "sent_at": at(10.2),
        "last_error": None,
    },
    {
        "id": 2,
        "kind": "welcome",
        "subscriber_id": 1,
        "payload": {"list": 1},
        "status": "sent",
        "attempts": 1,
        "created_at": at(11),
        "next_attempt_at": at(11),
        "lease_until": None,
        "leased_by": None,
        "sent_at": at(11.1),
        "last_error": None,
    },
    {
        "id": 3,
        "kind": "confirm",
        "subscriber_id": 4,
        "payload": {"lists": [1]},
        "status": "failed",
        "attempts": 5,
        "created_at": at(40),
        "next_attempt_at": at(90),
        "lease_until": None,
        "leased_by": None,
        "sent_at": None,
        "last_error": "550 5.1.1 <dave@example.com>: user unknown",
    },
    {
        "id": 4,
        "kind": "welcome",
        "subscriber_id": 3,
        "payload": {"list": 1},
        "status": "skipped",
        "attempts": 0,
        "created_at": at(31),
        "next_attempt_at": at(31),
        "lease_until": None,
        "leased_by": None,
        "sent_at": None,
        "last_error": None,
    },
    # Still waiting when the old release stopped: the new worker sends it.
    {
        "id": 5,
        "kind": "confirm",
        "subscriber_id": 2,
        "payload": {"lists": [2]},
        "status": "queued",
        "attempts": 1,
        "created_at": at(20),
        "next_attempt_at": at(21),
        "lease_until": at(20.5),
        "leased_by": "old-host:4711",
        "sent_at": None,
        "last_error": "timed out",
    },
]
WEB = {"ip": "192.0.2.0/24", "user_agent": "Mozilla/5.0 (X11; Linux)"}
# The ledger, in seq order: (event, channel, subscriber, list, consent text, fields).
EVENTS: list[tuple[str, str, int | None, int | None, int | None, dict[str, Any]]] = [
    ("requested", "form", 1, 1, 1, {**WEB, "source_url": "https://nyhed.example/tilmeld"}),
    ("requested", "form", 1, 2, 2, {**WEB, "source_url": "https://nyhed.example/tilmeld"}),
    ("confirmed", "confirm_link", 1, 1, 1, {**WEB, "source_url": LINK}),
    ("requested", "api", 2, 2, 2, {"ip": "198.51.100.7"}),
    ("requested", "form", 3, 1, 1, WEB),
    ("confirmed", "confirm_link", 3, 1, 1, WEB),
    ("requested", "form", 4, 1, 1, WEB),
    ("confirmed", "confirm_link", 4, 1, 1, WEB),
    ("imported", "import", 5, 1, 1, {"details": {"source": "crm.csv", "row": 2}}),
    ("imported", "import", 5, 3, 4, {"details": {"source": "crm.csv", "row": 2}}),
    ("suppressed", "system", 4, None, None, {"details": {"reason": "hard_bounce"}}),
    ("withdrawn", "one_click", 3, 1, None, {"user_agent": "Mail/1.0"}),
    # An erased person's event: no subscriber, no personal fields, the digest stays.
    ("requested", "form", None, 1, 1, {"gone": "gone@example.org"}),
]


def frozen_chain() -> ModuleType:
    """Migration 0011, loaded from its path: it keeps the HMAC chain of the
    releases before it (row hash, personal digest, keys) frozen."""
    spec = importlib.util.spec_from_file_location("migration_0011", MIGRATION_0011)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def event_rows() -> list[dict[str, Any]]:
    """The consent events as 0001's code stored them, chained under the ledger
    key derived from TEST_SECRET (the fixture app's SECRET_KEY)."""
    chain = frozen_chain()
    key = chain._keys()[0]
    keys_of = {row["id"]: row["email_key"] for row in SUBSCRIBER_ROWS}
    email_of = {row["id"]: row["email"] for row in SUBSCRIBER_ROWS}
    rows = []
    previous = chain.GENESIS
    for seq, (event, channel, sid, list_id, text_id, fields) in enumerate(EVENTS, start=1):
        extra = dict(fields)
        gone = extra.pop("gone", None)
        details = extra.pop("details", {})
        email_key = keys_of[sid] if sid is not None else gone
        personal: dict[str, Any] = dict.fromkeys(PERSONAL)
        if sid is not None:
            personal = {**personal, "email": email_of[sid], **extra}
        row = {
            "id": 100 + seq,
            "seq": seq,
            "occurred_at": at(10 + 7 * seq).replace(tzinfo=UTC),
            "event": event,
            "channel": channel,
            "subscriber_id": sid,
            "list_id": list_id,
            "consent_text_id": text_id,
            "policy_version_id": None,  # 0001 has no policies; the hash leaves it out
            "email_digest": chain._digest(key, "email:" + email_key),
            **personal,
            "details": details,
        }
        row["personal_digest"] = chain._personal_digest(row, key)
        row["prev_hash"] = previous
        row["row_hash"] = previous = chain._row_hash(row, key)
        del row["policy_version_id"]
        row["occurred_at"] = row["occurred_at"].replace(tzinfo=None)
        rows.append(row)
    return rows


def write_as_the_first_release() -> list[dict[str, Any]]:
    """Fill a database at revision 0001 through its own (reflected) tables;
    returns the consent events written."""
    events = event_rows()
    metadata = sa.MetaData()
    with db.engine.begin() as conn:
        metadata.reflect(conn)
        tables = metadata.tables
        conn.execute(tables["lists"].insert(), LISTS)
        conn.execute(tables["consent_texts"].insert(), TEXTS)
        conn.execute(tables["subscribers"].insert(), SUBSCRIBER_ROWS)
        conn.execute(tables["subscriptions"].insert(), SUBSCRIPTION_ROWS)
        conn.execute(tables["outbox"].insert(), OUTBOX)
        conn.execute(tables["consent_events"].insert(), events)
        head = tables["ledger_head"]
        conn.execute(
            head.update()
            .where(head.c.id == 1)
            .values(seq=len(events), row_hash=events[-1]["row_hash"])
        )
        if conn.dialect.name == "postgresql":  # explicit ids: move the sequences on
            for name in ("lists", "consent_texts", "subscribers", "subscriptions", "outbox"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'),"  # noqa: S608
                    f" (SELECT max(id) FROM {name}))"
                )
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('consent_events', 'id'),"
                " (SELECT max(id) FROM consent_events))"
            )
    # The chain is checked by migration 0011 itself, which refuses a broken one.
    assert revision() == "0001"
    return events


def revision() -> str | None:
    with db.engine.connect() as conn:
        current: str | None = MigrationContext.configure(conn).get_current_revision()
        return current


def rows_of(table: str, columns: list[str], order: str = "id") -> list[dict[str, Any]]:
    """The named columns of every row, through the table as the database has it now."""
    metadata = sa.MetaData()
    with db.engine.connect() as conn:
        metadata.reflect(conn, only=[table])
        reflected = metadata.tables[table]
        query = sa.select(*[reflected.c[c] for c in columns]).order_by(reflected.c[order])
        return [dict(row) for row in conn.execute(query).mappings()]


def console(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``newsletter`` console script, on the test's database."""
    db.session.remove()
    db.engine.dispose()  # no connection of this process holds a lock meanwhile
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def old_database(
    fresh_app: Flask,  # noqa: F811 - the fixture imported above
    empty_database_url: str,  # noqa: F811
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The first release's database with its data, and the environment of the
    console script that upgrades it."""
    upgrade(revision="0001")
    events = write_as_the_first_release()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "FLASK_"))}
    env["NEWSLETTER_SECRET_KEY"] = TEST_SECRET
    env["NEWSLETTER_DATABASE_URL"] = empty_database_url
    env["NEWSLETTER_LEDGER_SIGNING_KEY_FILE"] = fresh_app.config["LEDGER_SIGNING_KEY_FILE"]
    env["NEWSLETTER_MAILBOX_DIR"] = fresh_app.config["MAILBOX_DIR"]
    return env, events


def assert_the_data_kept_its_meaning(events: list[dict[str, Any]]) -> None:
    """Every row of the first release is there with the same values, and what
    the migrations added says nothing new about it."""
    assert rows_of("lists", list(LISTS[0])) == LISTS
    texts = rows_of("consent_texts", [*TEXTS[0], "sha256"])
    assert texts == [
        {**text, "sha256": hashlib.sha256(text["text"].encode()).hexdigest()} for text in TEXTS
    ]
    assert rows_of("subscribers", list(SUBSCRIBER_ROWS[0])) == SUBSCRIBER_ROWS
    assert rows_of("subscriptions", list(SUBSCRIPTION_ROWS[0])) == SUBSCRIPTION_ROWS
    outbox = rows_of("outbox", [*OUTBOX[0], "staff_user_id", "address"])
    assert outbox == [{**row, "staff_user_id": None, "address": None} for row in OUTBOX]

    kept = [c for c in events[0] if c not in ("personal_digest", "prev_hash", "row_hash")]
    stored = rows_of(
        "consent_events", [*kept, "policy_version_id", "salt", "personal_commitment"], "seq"
    )
    assert [row["seq"] for row in stored] == list(range(1, len(EVENTS) + 1))
    for old, new in zip(events, stored, strict=True):
        expected = {c: old[c] for c in kept}
        if old["source_url"] == LINK:  # 0007: a capability link costs the personal fields
            expected.update(dict.fromkeys(PERSONAL))
        personal = {name: expected[name] for name in PERSONAL}
        salt, commitment = new.pop("salt"), new.pop("personal_commitment")
        assert new == {**expected, "policy_version_id": None}
        if any(value is not None for value in personal.values()):
            digest = hashlib.sha256(bytes.fromhex(salt) + rfc8785.dumps(personal)).hexdigest()
            assert commitment == digest
        else:
            assert (salt, commitment) == (None, None)
    bare = [row["seq"] for row in stored if all(row[name] is None for name in PERSONAL)]
    assert bare == [3, 13]  # the link's event and the erased person's

    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id, seq FROM ledger_head")).all() == [(1, len(EVENTS))]


def assert_schema_is_head() -> None:
    assert revision() == ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert differences(db.metadata) == []


def test_the_first_release_upgrades_to_head_in_one_go(
    old_database: tuple[dict[str, str], list[dict[str, Any]]],
    fresh_app: Flask,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    env, events = old_database
    done = console(env, tmp_path, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert "Running upgrade 0010 -> 0011" in done.stderr
    assert_schema_is_head()
    assert_the_data_kept_its_meaning(events)

    # The existing events become the first leaves, under a signed checkpoint.
    sealed = console(env, tmp_path, "ledger", "seal")
    assert sealed.returncode == 0, sealed.stderr
    assert f"ledger: sealed {len(EVENTS)} event(s)" in sealed.stderr
    assert sealed.stdout.split("\n")[1] == str(len(EVENTS))  # the note's tree size
    verified = console(env, tmp_path, "ledger", "verify")
    assert verified.returncode == 0, verified.stderr
    assert f"ledger: {len(EVENTS)} events sealed, 0 waiting" in verified.stdout

    # The new release works on the upgraded data: a signup and a worker round,
    # which also sends the confirmation the old release left queued.
    mailbox = Path(fresh_app.config["MAILBOX_DIR"])
    before = set(mailbox.glob("*.eml")) if mailbox.exists() else set()
    accept_signup(
        SignupRequest(
            email="New@Example.org",
            channel=Channel.FORM,
            evidence=Evidence(ip="203.0.113.0/24"),
            list_slugs=["nyhedsbrev", "tech"],
        )
    )
    db.session.commit()
    runner = fresh_app.test_cli_runner()
    worked = runner.invoke(args=["worker", "--once"])
    assert worked.exit_code == 0, worked.output
    db.session.commit()
    sent = [message_from_bytes(p.read_bytes()) for p in set(mailbox.glob("*.eml")) - before]
    assert sorted(str(m["To"]) for m in sent) == ["New@example.org", "bob@example.org"]
    outbox = rows_of("outbox", ["id", "status", "subscriber_id"])
    assert [row["status"] for row in outbox] == [
        "sent",
        "sent",
        "failed",
        "skipped",
        "sent",
        "sent",
    ]
    new = rows_of("subscribers", ["id", "email_key"])[-1]
    assert new == {"id": 6, "email_key": "new@example.org"}
    subscriptions = rows_of("subscriptions", ["subscriber_id", "list_id", "status"])
    assert subscriptions[-2:] == [
        {"subscriber_id": 6, "list_id": 1, "status": "pending"},
        {"subscriber_id": 6, "list_id": 2, "status": "pending"},
    ]
    tail = rows_of("consent_events", ["seq", "event", "subscriber_id"], "seq")[len(EVENTS) :]
    assert tail == [
        {"seq": len(EVENTS) + 1, "event": "requested", "subscriber_id": 6},
        {"seq": len(EVENTS) + 2, "event": "requested", "subscriber_id": 6},
    ]

    resealed = console(env, tmp_path, "ledger", "seal")
    assert resealed.returncode == 0, resealed.stderr
    verified = console(env, tmp_path, "ledger", "verify")
    assert verified.returncode == 0, verified.stderr
    assert f"ledger: {len(EVENTS) + 2} events sealed, 0 waiting" in verified.stdout

    # An upgraded subscriber's consent bundle verifies with the public key alone.
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    shutil.copy(VERIFIER, auditor / "newsletter_verify.py")
    public = console(env, tmp_path, "ledger", "public-key")
    assert public.returncode == 0, public.stderr
    (auditor / "ledger.vkey").write_text(public.stdout, encoding="utf-8")
    bundle = auditor / "bundle.json"
    proof = console(env, tmp_path, "consent", "proof", "alice@example.org", "--bundle", str(bundle))
    assert proof.returncode == 0, proof.stderr
    checked = subprocess.run(
        [sys.executable, "-I", "newsletter_verify.py", bundle.name, "--key", "ledger.vkey"],
        cwd=auditor,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "Consent record of alice@example.org: every check holds." in checked.stdout
    assert "3 event(s)" in checked.stdout, checked.stdout
    for line in (
        "requested, list nyhedsbrev, consent text v1",
        "requested, list tech, consent text v1",
        "confirmed, list nyhedsbrev",
    ):
        assert line in checked.stdout, checked.stdout


def test_the_first_release_upgraded_one_revision_at_a_time_ends_the_same(
    old_database: tuple[dict[str, str], list[dict[str, Any]]], tmp_path: Path
) -> None:
    env, events = old_database
    script = ScriptDirectory(str(MIGRATIONS))
    steps = [s.revision for s in reversed(list(script.walk_revisions()))]
    assert steps[0] == "0001"
    for step in steps[1:]:
        done = console(env, tmp_path, "db", "upgrade", step)
        assert done.returncode == 0, (step, done.stderr)
        assert revision() == step
    assert_schema_is_head()
    assert_the_data_kept_its_meaning(events)
    sealed = console(env, tmp_path, "ledger", "seal")
    assert sealed.returncode == 0, sealed.stderr
    verified = console(env, tmp_path, "ledger", "verify")
    assert verified.returncode == 0, verified.stderr
    assert f"ledger: {len(EVENTS)} events sealed, 0 waiting" in verified.stdout
