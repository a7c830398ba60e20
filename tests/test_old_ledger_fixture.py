"""The database the HMAC-chain ledger wrote (revision 0010) loads intact on the backend under test.

``load_old_ledger`` fills a new, empty database at revision 0010 with the rows
of ``tests/data/ledger_0010.json``. Read back, every row equals the fixture's;
the chain as stored is linked (seq 1..n without gaps, each ``prev_hash`` the
row hash before it, the head on the last event); new rows continue after the
largest id. Checked with plain SQL only: the ledger code that wrote the chain
is gone, and the migration test is what reads it with the current code.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from .conftest import BACKEND, POSTGRES_ADMIN_URL
from .fixtures.old_ledger import load_old_ledger, old_ledger

GENESIS_HASH = "0" * 64
EVENTS = 87  # the events tests/data/make_old_ledger.py wrote


@pytest.fixture
def loaded_url(tmp_path: Path) -> Iterator[str]:
    """A new database of the backend under test, with the fixture loaded."""
    if BACKEND == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.sqlite'}"
        load_old_ledger(url)
        yield url
        return
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"newsletter_old_ledger_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = admin.url.set(database=name).render_as_string(hide_password=False)
        load_old_ledger(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def conn(loaded_url: str) -> Iterator[sa.Connection]:
    """A connection to the loaded database."""
    engine = sa.create_engine(loaded_url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def as_stored(value: Any) -> Any:
    """A value read back, in the fixture's JSON form (timestamps are naive UTC)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC).isoformat() if value.tzinfo is None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def test_load_returns_the_settings_the_chain_was_keyed_with(tmp_path: Path) -> None:
    settings = load_old_ledger(f"sqlite:///{tmp_path / 'settings.sqlite'}")
    assert settings == old_ledger()["settings"]
    assert set(settings) == {"SECRET_KEY", "BASE_URL"}
    assert len(settings["SECRET_KEY"]) >= 32


def test_the_database_is_at_0010_with_every_row_of_the_fixture(conn: sa.Connection) -> None:
    fixture = old_ledger()
    assert fixture["revision"] == "0010"
    assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0010"
    metadata = sa.MetaData()
    metadata.reflect(conn)
    for name, stored in fixture["tables"].items():
        table = metadata.tables[name]
        count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        assert count == len(stored["rows"]), name
        rows = conn.execute(
            sa.select(*(table.c[c] for c in stored["columns"])).order_by(*table.primary_key.columns)
        ).all()
        assert [[as_stored(v) for v in row] for row in rows] == stored["rows"], name
    assert len(fixture["tables"]["consent_events"]["rows"]) == EVENTS


def test_the_stored_chain_is_linked_from_genesis_to_the_head(conn: sa.Connection) -> None:
    events = conn.execute(
        sa.text("SELECT seq, prev_hash, row_hash FROM consent_events ORDER BY seq")
    ).all()
    assert [e.seq for e in events] == list(range(1, EVENTS + 1))
    previous = GENESIS_HASH
    for event in events:
        assert event.prev_hash == previous, event.seq
        assert len(event.row_hash) == 64
        previous = event.row_hash
    assert len({e.row_hash for e in events}) == EVENTS
    head = conn.execute(sa.text("SELECT id, seq, row_hash FROM ledger_head")).all()
    assert [tuple(h) for h in head] == [(1, EVENTS, previous)]


def test_the_history_covers_what_the_migration_must_carry_over(conn: sa.Connection) -> None:
    kinds = conn.execute(
        sa.text("SELECT DISTINCT event, channel FROM consent_events ORDER BY event, channel")
    ).all()
    assert {tuple(k) for k in kinds} >= {
        ("requested", "form"),
        ("requested", "api"),
        ("confirmed", "confirm_link"),
        ("imported", "import"),
        ("withdrawn", "one_click"),
        ("withdrawn", "unsubscribe_page"),
        ("withdrawn", "manage_page"),
        ("requested", "manage_page"),
        ("preferences_changed", "manage_page"),
        ("withdrawn", "staff"),
        ("suppressed", "system"),
        ("erased", "staff"),
    }
    policies = conn.execute(
        sa.text("SELECT DISTINCT policy_version_id FROM consent_events")
    ).scalars()
    assert set(policies) == {None, 1, 2}
    texts = conn.execute(sa.text("SELECT DISTINCT consent_text_id FROM consent_events")).scalars()
    assert {1, 2, 3, 4} <= set(texts)
    # The erased subscriber: every event's personal fields are gone, the digests stay.
    erased = conn.execute(
        sa.text(
            "SELECT seq, event, email_digest, personal_digest, subscriber_id FROM consent_events"
            " WHERE email IS NULL AND ip IS NULL AND user_agent IS NULL AND source_url IS NULL"
            " ORDER BY seq"
        )
    ).all()
    assert [(e.seq, e.event) for e in erased] == [
        (8, "requested"),
        (21, "confirmed"),
        (43, "requested"),
        (54, "confirmed"),
        (85, "erased"),
    ]
    assert len({e.email_digest for e in erased}) == 1
    assert all(e.personal_digest and e.subscriber_id is None for e in erased)


def test_new_rows_continue_after_the_largest_id(conn: sa.Connection) -> None:
    with conn.begin():
        conn.execute(
            sa.text(
                "INSERT INTO suppressions (email_digest, reason, created_at)"
                " VALUES (:digest, 'manual', :at)"
            ),
            {"digest": "f" * 64, "at": datetime(2026, 12, 8, 12, tzinfo=UTC).replace(tzinfo=None)},
        )
    largest = conn.execute(sa.text("SELECT max(id) FROM suppressions")).scalar_one()
    assert largest == len(old_ledger()["tables"]["suppressions"]["rows"]) + 1
