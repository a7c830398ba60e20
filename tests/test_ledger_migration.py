"""Migration 0011 on a ledger the HMAC-chain code wrote: events become Merkle leaves.

Every test starts from a new database of the backend under test holding
``tests/data/ledger_0010.json`` at revision 0010 (87 events written by the
services of revision 0010, see ``tests/fixtures/old_ledger.py``), with an app
built with the fixture's SECRET_KEY, under which the old chain is keyed.

The migration must keep every event as it is (same ``seq``, fields and
order), commit to each event's personal fields under a fresh salt (events
already erased get neither), hash the texts, and retire the chain; the first
seal then makes the events leaves 0..86 in ``seq`` order. Before it changes
anything it verifies the old chain with the code that wrote it (frozen in the
migration) and refuses a broken one, naming where, leaving the database at
0010 as it was. Downgrade rebuilds a chain the old verification accepts.

Leaves and roots are recomputed here from the fixture's rows and the
published formats (RFC 8785, RFC 6962), not with the app's ledger code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785
import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, current_app
from flask_migrate import downgrade, upgrade

import newsletter_verify
from newsletter import create_app
from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.ledger.keyring import write_new_key
from newsletter.models import Channel
from newsletter.subscriptions.intake import SignupRequest

from .fixtures.intake import sign_up_now
from .fixtures.old_ledger import load_old_ledger, old_ledger
from .test_migrations import empty_database_url  # noqa: F401 - fixture used here

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
MIGRATION_0011 = MIGRATIONS / "versions" / "0011_merkle_ledger.py"
EVENTS = 87
ERASED = {8, 21, 43, 54, 85}  # the fixture's events without personal fields
PERSONAL = ("email", "ip", "user_agent", "source_url")
CHAIN_COLUMNS = {"personal_digest", "prev_hash", "row_hash"}
ORIGIN = "news.example.dk/consent-ledger"  # the fixture's BASE_URL host
GENESIS = "0" * 64


def frozen_chain() -> Any:
    """migrations/versions/0011_merkle_ledger.py, loaded from its path (the old
    chain's hashing is frozen there)."""
    spec = importlib.util.spec_from_file_location("migration_0011", MIGRATION_0011)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def old_url(empty_database_url: str) -> str:  # noqa: F811 - the fixture imported above
    """A new database at revision 0010 holding the old code's ledger."""
    load_old_ledger(empty_database_url)
    return empty_database_url


def build_app(url: str, tmp_path: Path, secret_key: str | None = None, **extra: Any) -> Flask:
    """An app on ``url`` as the operator runs it: the fixture's settings, a
    signing key file named after the log's origin and a witness log."""
    settings = old_ledger()["settings"]
    key_file = tmp_path / "ledger-signing.key"
    if not key_file.exists():
        write_new_key(key_file, ORIGIN)
    return create_app(
        {
            "TESTING": True,
            "DATABASE_URL": url,
            "SECRET_KEY": secret_key or settings["SECRET_KEY"],
            "BASE_URL": settings["BASE_URL"],
            "MAILBOX_DIR": str(tmp_path / "mailbox"),
            "LEDGER_SIGNING_KEY_FILE": str(key_file),
            "LEDGER_CHECKPOINT_LOG": str(tmp_path / "witness.log"),
            **extra,
        }
    )


@pytest.fixture
def old_app(old_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app on the old ledger, with its app context pushed."""
    app = build_app(old_url, tmp_path)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


# ---------------------------------------------------------------- helpers


def alembic_upgrade(revision: str = "head") -> None:
    """Alembic's own upgrade (Flask-Migrate's turns errors into an exit)."""
    command.upgrade(current_app.extensions["migrate"].migrate.get_config(), revision)


def revision_of(url: str) -> str | None:
    """The revision the database at ``url`` is at."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def execute(url: str, *statements: str) -> None:
    """Run SQL on the database at ``url`` in one transaction (tampering, for a test)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def plain(value: Any) -> Any:
    """A value read back in the fixture's JSON form (naive timestamps are UTC)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC).isoformat() if value.tzinfo is None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def snapshot(url: str) -> dict[str, Any]:
    """Every table's schema (columns, keys, indexes) and rows, in a comparable form."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            metadata = sa.MetaData()
            metadata.reflect(conn)
            found: dict[str, Any] = {}
            for name in sorted(inspector.get_table_names()):
                table = metadata.tables[name]
                columns = {
                    c["name"]: (str(c["type"]), c["nullable"], c.get("default"))
                    for c in inspector.get_columns(name)
                }
                keys = (
                    sorted(inspector.get_pk_constraint(name)["constrained_columns"]),
                    sorted(
                        (str(f.get("name")), tuple(f["constrained_columns"]), f["referred_table"])
                        for f in inspector.get_foreign_keys(name)
                    ),
                    sorted(
                        (str(i["name"]), tuple(i["column_names"]), bool(i["unique"]))
                        for i in inspector.get_indexes(name)
                    ),
                    sorted(
                        (str(u["name"]), tuple(u["column_names"]))
                        for u in inspector.get_unique_constraints(name)
                    ),
                )
                order = list(table.primary_key.columns) or list(table.columns)
                rows = conn.execute(sa.select(table).order_by(*order)).all()
                found[name] = (columns, keys, [[plain(v) for v in row] for row in rows])
            return found
    finally:
        engine.dispose()


def schema_only(found: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without its rows."""
    return {name: (columns, keys) for name, (columns, keys, _rows) in found.items()}


def fixture_events() -> list[dict[str, Any]]:
    """The fixture's consent events as the old code stored them, in seq order."""
    stored = old_ledger()["tables"]["consent_events"]
    rows = [dict(zip(stored["columns"], row, strict=True)) for row in stored["rows"]]
    return sorted(rows, key=lambda row: row["seq"])


def fixture_rows(table: str) -> list[dict[str, Any]]:
    """The fixture's rows of one table, as dicts."""
    stored = old_ledger()["tables"][table]
    return [dict(zip(stored["columns"], row, strict=True)) for row in stored["rows"]]


def stored_events() -> list[dict[str, Any]]:
    """Every event row in the database now, in seq order, values in the fixture's form."""
    with db.engine.connect() as conn:
        table = sa.Table("consent_events", sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(table).order_by(table.c.seq)).mappings().all()
    events = []
    for row in rows:
        event = {key: plain(value) for key, value in row.items()}
        if isinstance(event["details"], str):  # JSON as text on SQLite
            event["details"] = json.loads(event["details"])
        events.append(event)
    return events


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def commitment(salt_hex: str, personal: dict[str, str | None]) -> str:
    """SHA-256(salt || canonical(personal)), the canonical form as newsletter-verify
    writes it for this subset (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(personal, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(bytes.fromhex(salt_hex) + canonical.encode("utf-8")).hexdigest()


def expected_leaf(event: dict[str, Any], migrated: dict[str, Any]) -> bytes:
    """The leaf of a fixture event per the leaf format: RFC 8785 over its fields,
    its list slug, the SHA-256 of its consent text and policy, and its commitment."""
    lists = {row["id"]: row["slug"] for row in fixture_rows("lists")}
    texts = {row["id"]: row for row in fixture_rows("consent_texts")}
    policies = {row["id"]: row for row in fixture_rows("privacy_policies")}
    text = texts.get(event["consent_text_id"])
    policy = policies.get(event["policy_version_id"])
    occurred = datetime.fromisoformat(event["occurred_at"]).astimezone(UTC)
    return rfc8785.dumps(
        {
            "v": 1,
            "seq": event["seq"],
            "event": event["event"],
            "channel": event["channel"],
            "occurred_at": occurred.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "list": lists.get(event["list_id"]),
            "consent_text_version": text["version"] if text else None,
            "consent_text_sha256": sha256_hex(text["text"]) if text else None,
            "policy_version": policy["version"] if policy else None,
            "policy_sha256": sha256_hex(policy["body_markdown"]) if policy else None,
            "email_digest": event["email_digest"],
            "personal_commitment": migrated["personal_commitment"],
            "details": event["details"] or {},
        }
    )


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 §2.1, by its recursive definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:])).digest()


def cli(app: Flask, *args: str) -> str:
    """Run a ``newsletter`` command; its output, after asserting it succeeded."""
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


# ---------------------------------------------------------------- upgrade


def test_upgrade_keeps_every_event_and_commits_to_its_personal_fields(old_app: Flask) -> None:
    before = stored_events()
    assert [e["row_hash"] for e in before] == [e["row_hash"] for e in fixture_events()]

    upgrade()

    heads = ScriptDirectory(str(MIGRATIONS)).get_heads()
    assert [revision_of(str(db.engine.url.render_as_string(hide_password=False)))] == heads
    after = stored_events()
    assert [e["seq"] for e in after] == list(range(1, EVENTS + 1))
    kept = set(fixture_events()[0]) - CHAIN_COLUMNS
    assert [{k: e[k] for k in kept} for e in after] == [
        {k: e[k] for k in kept} for e in fixture_events()
    ]
    # The chain is retired: no chain column is left, and the head keeps only seq.
    assert set(after[0]) == kept | {"salt", "personal_commitment"}
    with db.engine.connect() as conn:
        head_columns = {c["name"] for c in sa.inspect(conn).get_columns("ledger_head")}
        head = conn.execute(sa.text("SELECT id, seq FROM ledger_head")).all()
    assert head_columns == {"id", "seq"}
    assert [tuple(row) for row in head] == [(1, EVENTS)]

    erased = {e["seq"] for e in after if all(e[name] is None for name in PERSONAL)}
    assert erased == ERASED
    for event in after:
        if event["seq"] in ERASED:
            assert (event["salt"], event["personal_commitment"]) == (None, None), event["seq"]
            continue
        assert re.fullmatch("[0-9a-f]{64}", event["salt"]), event["seq"]
        personal = {name: event[name] for name in PERSONAL}
        assert event["personal_commitment"] == commitment(event["salt"], personal), event["seq"]
    salts = [e["salt"] for e in after if e["salt"] is not None]
    assert len(set(salts)) == len(salts) == EVENTS - len(ERASED)

    with db.engine.connect() as conn:
        texts = conn.execute(sa.text("SELECT id, text, sha256 FROM consent_texts")).all()
        policies = conn.execute(
            sa.text("SELECT id, body_markdown, text_sha256 FROM privacy_policies")
        ).all()
    assert len(texts) == len(fixture_rows("consent_texts")) >= 4
    assert len(policies) == len(fixture_rows("privacy_policies")) >= 2
    for row in [*texts, *policies]:
        assert row[2] == sha256_hex(row[1]), row


def test_the_migrated_events_seal_as_leaves_in_seq_order_verify_and_prove(
    old_app: Flask, tmp_path: Path
) -> None:
    upgrade()
    note = cli(old_app, "ledger", "seal")

    # Leaf i is event seq i + 1, made of the fixture's fields and the new commitment.
    migrated = {e["seq"]: e for e in stored_events()}
    leaves = [expected_leaf(e, migrated[e["seq"]]) for e in fixture_events()]
    with db.engine.connect() as conn:
        stored_leaves = conn.execute(
            sa.text("SELECT idx, hash FROM ledger_nodes WHERE level = 0 ORDER BY idx")
        ).all()
        tree = conn.execute(sa.text("SELECT origin, size, root_hash FROM ledger_tree")).one()
    assert [row.idx for row in stored_leaves] == list(range(EVENTS))
    assert [bytes(row.hash) for row in stored_leaves] == [
        hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves
    ]
    root = rfc6962_root(leaves)
    assert tuple(tree) == (ORIGIN, EVENTS, root.hex())
    checkpoint = newsletter_verify.parse_checkpoint(newsletter_verify.parse_note(note).body)
    assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (ORIGIN, EVENTS, root)

    assert f"{EVENTS} events sealed, 0 waiting" in cli(old_app, "ledger", "verify")

    # A subscriber of the old ledger gets a bundle that verifies with the public key alone.
    vkey_file = tmp_path / "ledger.vkey"
    vkey_file.write_text(cli(old_app, "ledger", "public-key"), encoding="utf-8")
    bundle_file = tmp_path / "karen.json"
    cli(old_app, "consent", "proof", "karen11@example.dk", "--bundle", str(bundle_file))
    bundle = json.loads(bundle_file.read_text(encoding="utf-8"))
    karens = [e["seq"] for e in fixture_events() if e["email"] == "karen11@example.dk"]
    assert sorted(e["index"] + 1 for e in bundle["events"]) == karens == [16, 29, 79, 80, 81, 82]
    verifier = newsletter_verify.parse_vkey(vkey_file.read_text(encoding="utf-8").strip())
    report = newsletter_verify.verify_bundle(bundle, verifier)
    assert report.ok, report.failures
    assert newsletter_verify.main([str(bundle_file), "--key", str(vkey_file)]) == 0
    # The bundle is not accepted blindly: one edited personal field fails it.
    bundle["events"][0]["personal"]["ip"] = "203.0.113.99"
    assert not newsletter_verify.verify_bundle(bundle, verifier).ok

    # The ledger goes on where the old one stopped.
    first_checkpoint = tmp_path / "first.checkpoint"
    first_checkpoint.write_text(note, encoding="utf-8")
    sign_up_now(
        SignupRequest(email="efter.migrering@example.dk", channel=Channel.API, evidence=Evidence())
    )
    new = [e for e in stored_events() if e["seq"] > EVENTS]
    assert [(e["seq"], e["event"], e["email"]) for e in new] == [
        (88, "requested", "efter.migrering@example.dk")
    ]
    assert new[0]["personal_commitment"] == commitment(
        new[0]["salt"], {name: new[0][name] for name in PERSONAL}
    )
    cli(old_app, "ledger", "seal")
    output = cli(old_app, "ledger", "verify", "--since", str(first_checkpoint))
    assert f"{EVENTS + 1} events sealed, 0 waiting" in output
    assert "today's tree extends 1 checkpoint(s)" in output
    witnessed = newsletter_verify.parse_notes(
        (tmp_path / "witness.log").read_text(encoding="utf-8")
    )
    assert [newsletter_verify.parse_checkpoint(n.body).size for n in witnessed] == [
        EVENTS,
        EVENTS + 1,
    ]


# ---------------------------------------------------------------- refusal


BREAKS = {
    "edited field": (
        ["UPDATE consent_events SET channel = 'form' WHERE seq = 40"],
        "event #40: its content does not match its hash",
    ),
    "edited details": (
        ['UPDATE consent_events SET details = \'{"locale": "da"}\' WHERE seq = 81'],
        "event #81: its content does not match its hash",
    ),
    "deleted event": (
        ["DELETE FROM consent_events WHERE seq = 30"],
        "event #30 is missing",
    ),
    "edited personal field": (
        ["UPDATE consent_events SET email = 'someone.else@example.org' WHERE seq = 12"],
        "event #12: its personal fields do not match their digest",
    ),
    "re-attributed event": (
        ["UPDATE consent_events SET subscriber_id = 2 WHERE seq = 1"],
        "event #1 is attributed to another subscriber",
    ),
    "edited head": (
        ["UPDATE ledger_head SET seq = 86"],
        "the ledger head names event #86, which is missing or changed",
    ),
    "cut tail": (
        [
            "DELETE FROM consent_events WHERE seq = 87",
            "UPDATE ledger_head SET seq = 86",
        ],
        "the ledger head names event #86, which is missing or changed",
    ),
    "event before the first": (
        [
            "INSERT INTO consent_events (seq, occurred_at, event, channel, subscriber_id,"
            " list_id, consent_text_id, email_digest, email, ip, user_agent, source_url, details,"
            " personal_digest, prev_hash, row_hash, policy_version_id)"
            " SELECT 0, occurred_at, event, channel, subscriber_id, list_id, consent_text_id,"
            " email_digest, email, ip, user_agent, source_url, details, personal_digest,"
            " prev_hash, row_hash, policy_version_id FROM consent_events WHERE seq = 1"
        ],
        "event #0 is out of place (event #1 comes first)",
    ),
    "deleted head": (
        ["DELETE FROM ledger_head"],
        "the ledger head is missing, though the chain ends at event #87",
    ),
}


@pytest.mark.parametrize("kind", sorted(BREAKS))
def test_a_broken_chain_is_refused_and_the_database_stays_at_0010(
    kind: str, old_url: str, tmp_path: Path
) -> None:
    statements, where = BREAKS[kind]
    execute(old_url, *statements)
    before = snapshot(old_url)
    app = build_app(old_url, tmp_path)
    with app.app_context():
        with pytest.raises(RuntimeError) as refused:
            alembic_upgrade()
        db.session.remove()
        db.engine.dispose()
    assert f"hash chain is broken ({where})" in str(refused.value)
    assert revision_of(old_url) == "0010"
    assert snapshot(old_url) == before
    assert "ledger_tree" not in before
    assert "row_hash" in before["consent_events"][0]


def test_a_wrong_secret_key_is_refused_and_the_right_one_then_migrates(
    old_url: str, tmp_path: Path
) -> None:
    before = snapshot(old_url)
    wrong = build_app(old_url, tmp_path, secret_key="another-secret-key-that-is-long-enough-0123")
    with wrong.app_context():
        with pytest.raises(RuntimeError, match=re.escape("(event #1: its content does not")):
            alembic_upgrade()
        # `newsletter db upgrade` says the same and fails.
        result = wrong.test_cli_runner().invoke(args=["db", "upgrade"])
        assert result.exit_code == 1
        db.session.remove()
        db.engine.dispose()
    assert revision_of(old_url) == "0010"
    assert snapshot(old_url) == before

    right = build_app(old_url, tmp_path)
    with right.app_context():
        alembic_upgrade()
        assert [e["seq"] for e in stored_events()] == list(range(1, EVENTS + 1))
        db.session.remove()
        db.engine.dispose()
    assert revision_of(old_url) == ScriptDirectory(str(MIGRATIONS)).get_heads()[0]


def test_a_chain_under_a_rotated_secret_key_is_verified_with_the_fallback(
    old_url: str, tmp_path: Path
) -> None:
    old_key = old_ledger()["settings"]["SECRET_KEY"]
    rotated = build_app(
        old_url,
        tmp_path,
        secret_key="the-new-secret-key-after-a-rotation-0123456789",
        SECRET_KEY_FALLBACKS=[old_key],
    )
    with rotated.app_context():
        alembic_upgrade()
        assert len(stored_events()) == EVENTS
        db.session.remove()
        db.engine.dispose()
    assert revision_of(old_url) == ScriptDirectory(str(MIGRATIONS)).get_heads()[0]


# ---------------------------------------------------------------- downgrade


def old_chain_problems(conn: sa.Connection) -> list[str]:
    """The old ``ledger verify`` (revision 0010), rebuilt from the frozen functions
    of migration 0011: every problem, not only the first."""
    chain = frozen_chain()
    keys = chain._keys()
    email_keys: dict[int, str] = dict(
        conn.execute(sa.text("SELECT id, email_key FROM subscribers")).all()
    )
    table = sa.Table("consent_events", sa.MetaData(), autoload_with=conn)
    rows = conn.execute(sa.select(table).order_by(table.c.seq)).mappings().all()
    problems, expected_prev, expected_seq = [], GENESIS, 1
    for row in rows:
        event = dict(row)
        if isinstance(event["details"], str):
            event["details"] = json.loads(event["details"])
        if event["occurred_at"].tzinfo is None:
            event["occurred_at"] = event["occurred_at"].replace(tzinfo=UTC)
        seq = event["seq"]
        if seq != expected_seq:
            problems.append(f"#{seq}: expected #{expected_seq}")
            expected_seq = seq
        if event["prev_hash"] != expected_prev:
            problems.append(f"#{seq}: does not follow")
        if event["row_hash"] not in {chain._row_hash(event, key) for key in keys}:
            problems.append(f"#{seq}: content")
        if any(event[name] is not None for name in PERSONAL) and event["personal_digest"] not in {
            chain._personal_digest(event, key) for key in keys
        }:
            problems.append(f"#{seq}: personal")
        email_key = email_keys.get(event["subscriber_id"])
        if email_key is not None and event["email_digest"] not in {
            chain._digest(key, "email:" + email_key) for key in keys
        }:
            problems.append(f"#{seq}: attribution")
        expected_prev, expected_seq = event["row_hash"], expected_seq + 1
    head = conn.execute(sa.text("SELECT seq, row_hash FROM ledger_head WHERE id = 1")).first()
    if head is None or tuple(head) != (expected_seq - 1, expected_prev):
        problems.append("head")
    return problems


def test_downgrade_rebuilds_a_chain_the_old_verification_accepts(
    old_app: Flask, old_url: str
) -> None:
    schema_at_0010 = schema_only(snapshot(old_url))
    upgrade()
    cli(old_app, "ledger", "seal")
    sign_up_now(SignupRequest(email="ny@example.dk", channel=Channel.FORM, evidence=Evidence()))
    db.session.remove()

    downgrade(revision="0010")

    assert revision_of(old_url) == "0010"
    assert schema_only(snapshot(old_url)) == schema_at_0010
    with db.engine.connect() as conn:
        assert old_chain_problems(conn) == []
        rows = conn.execute(
            sa.text("SELECT seq, personal_digest, row_hash FROM consent_events ORDER BY seq")
        ).all()
        head = conn.execute(sa.text("SELECT seq, row_hash FROM ledger_head")).one()
    assert [row.seq for row in rows] == list(range(1, EVENTS + 2))
    assert tuple(head) == (EVENTS + 1, rows[-1].row_hash)
    # The hashes are the old code's own: up to the first erased event the rebuilt
    # chain is the one the fixture's code wrote, and every personal digest of an
    # event that still has its fields is the one it stored.
    old = fixture_events()
    assert [r.row_hash for r in rows[:7]] == [e["row_hash"] for e in old[:7]]
    for row, event in zip(rows, old, strict=False):
        if row.seq not in ERASED:
            assert row.personal_digest == event["personal_digest"], row.seq

    # The rebuilt check finds an edit, so its empty answer above means something.
    execute(old_url, "UPDATE consent_events SET channel = 'form' WHERE seq = 40")
    with db.engine.connect() as conn:
        assert old_chain_problems(conn) == ["#40: content"]
    execute(old_url, "UPDATE consent_events SET channel = 'api' WHERE seq = 40")

    # And up again: the migration verifies the rebuilt chain and carries it over.
    upgrade()
    assert [e["seq"] for e in stored_events()] == list(range(1, EVENTS + 2))
    cli(old_app, "ledger", "seal")
    assert f"{EVENTS + 1} events sealed, 0 waiting" in cli(old_app, "ledger", "verify")


CHAIN_HASHES = sa.text("SELECT seq, row_hash FROM consent_events ORDER BY seq")


def test_the_migration_walks_the_events_in_batches(old_app: Flask, old_url: str) -> None:
    """The verification, the commitments and the rebuilt chain read and write
    ``BATCH`` events at a time; with batches of 10 the 87 events take nine."""
    chain = frozen_chain()
    chain.BATCH = 10
    with db.engine.connect() as conn:
        assert chain._first_break(conn) is None
    execute(old_url, "UPDATE consent_events SET channel = 'form' WHERE seq = 40")
    with db.engine.connect() as conn:
        assert chain._first_break(conn) == "event #40: its content does not match its hash"
    execute(old_url, "UPDATE consent_events SET channel = 'api' WHERE seq = 40")

    upgrade()
    execute(old_url, "UPDATE consent_events SET salt = NULL, personal_commitment = NULL")
    with db.engine.begin() as conn:
        chain._commit_personal_fields(conn)
    committed = {e["seq"]: e for e in stored_events()}
    assert {seq for seq, e in committed.items() if e["salt"] is None} == ERASED
    for seq, event in committed.items():
        if seq not in ERASED:
            personal = {name: event[name] for name in PERSONAL}
            assert event["personal_commitment"] == commitment(event["salt"], personal), seq

    downgrade(revision="0010")
    with db.engine.connect() as conn:
        written = conn.execute(CHAIN_HASHES).all()
    execute(
        old_url,
        "UPDATE consent_events SET personal_digest = '', prev_hash = '', row_hash = ''",
        "UPDATE ledger_head SET row_hash = ''",
    )
    with db.engine.begin() as conn:
        last = chain._rebuild_chain(conn)
    with db.engine.connect() as conn:
        assert conn.execute(CHAIN_HASHES).all() == written
        assert old_chain_problems(conn) == []
    assert last == max(written)[1]
