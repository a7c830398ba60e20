"""The daily witness mail: the latest checkpoint to LEDGER_WITNESS_MAILTO, once a UTC day.

The seal step queues it (a durable outbox row written in the transaction that
sets the checkpoint's ``mailed_on``), the real worker sends it to the loopback
SMTP server like every other mail (held to our mail's shape), and the note in
its text part verifies with the log's public key and works as the
``ledger verify --since`` file the mail says it is. Migration 0012 gives the
outbox the address recipient; it keeps every row, up and down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskCliRunner
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from newsletter import create_app
from newsletter.extensions import db
from newsletter.ledger import Evidence, append_event
from newsletter.ledger import witness_mail as witness
from newsletter.ledger.keyring import signer
from newsletter.ledger.seal import latest_checkpoint
from newsletter.models import (
    Channel,
    LedgerCheckpoint,
    MailingList,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    StaffUser,
    Subscriber,
)
from newsletter.worker.dispatch import ADDRESS_MAILS, STAFF_MAILS, SUBSCRIBER_MAILS
from newsletter.worker.sealing import seal_step
from newsletter_verify import parse_checkpoint, parse_note, parse_vkey, verify_note

from .conftest import BACKEND, POSTGRES_ADMIN_URL, TEST_SECRET
from .fixtures.mailflow import Deliver, html_of, text_of

WITNESS = "witness@example.org"
DAY = date(2026, 12, 7)


def at(day: date, hour: int = 12) -> datetime:
    """A UTC time on ``day``."""
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Set the time the witness mail's daily rule reads."""

    def set_time(when: datetime) -> None:
        monkeypatch.setattr(witness, "utcnow", lambda: when)

    set_time(at(DAY))
    return set_time


@pytest.fixture
def witnessed(app: Flask) -> Flask:
    """The app with LEDGER_WITNESS_MAILTO set."""
    app.config["LEDGER_WITNESS_MAILTO"] = WITNESS
    return app


@pytest.fixture
def add_events(default_list: MailingList) -> Callable[[int], None]:
    """Append ``n`` ledger events (committed, not sealed)."""
    subscriber = Subscriber(email="someone@example.org", email_key="someone@example.org")
    db.session.add(subscriber)
    db.session.commit()

    def add(n: int) -> None:
        for _ in range(n):
            append_event(
                event="requested",
                channel=Channel.API,
                subscriber=subscriber,
                evidence=Evidence(),
                list_id=default_list.id,
            )
        db.session.commit()

    return add


def witness_rows() -> list[OutboxMessage]:
    """The witness mails in the outbox, oldest first (read in a fresh transaction)."""
    db.session.commit()
    rows = db.session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.kind == OutboxKind.LEDGER_CHECKPOINT)
        .order_by(OutboxMessage.id)
    ).all()
    db.session.commit()
    return list(rows)


def note_in(text: str) -> str:
    """The signed note in a witness mail's text: everything after the first paragraph."""
    return text.replace("\r\n", "\n").split("\n\n", 1)[1]


def test_the_witness_mail_is_sent_once_a_day_and_its_note_verifies(
    witnessed: Flask,
    clock: Callable[[datetime], None],
    add_events: Callable[[int], None],
    deliver: Deliver,
    runner: FlaskCliRunner,
    tmp_path: Path,
) -> None:
    add_events(3)
    assert seal_step(always=True) == 3
    [row] = witness_rows()
    assert (row.address, row.subscriber_id, row.staff_user_id) == (WITNESS, None, None)
    checkpoint = latest_checkpoint()
    assert checkpoint is not None
    assert checkpoint.size == 3
    assert checkpoint.mailed_on == DAY

    [mail] = deliver()
    assert mail["To"].addresses[0].addr_spec == WITNESS
    assert ": 3 " in mail["Subject"]  # "...: 3 events, <day>", in the default language
    text = text_of(mail)
    assert "`newsletter ledger verify --since " in text
    note = note_in(text)
    assert note == checkpoint.note  # the exact signed note
    assert checkpoint.note in html_of(mail).replace("\r\n", "\n")
    parsed = parse_note(note)
    assert verify_note(parsed, parse_vkey(signer().vkey))
    assert parse_checkpoint(parsed.body).size == 3
    # The note is what the mail says it is: a --since file for `ledger verify`.
    saved = tmp_path / "checkpoint.txt"
    saved.write_text(note, encoding="utf-8")
    add_events(2)
    seal_step(always=True)
    result = runner.invoke(args=["ledger", "verify", "--since", str(saved)])
    assert result.exit_code == 0, result.output
    assert "extends 1 checkpoint(s)" in result.output

    # A second seal the same day sends nothing.
    assert [r.id for r in witness_rows()] == [row.id]
    assert deliver() == []

    # The next day, the latest checkpoint (5 events) goes out.
    clock(at(DAY + timedelta(days=1), hour=0))
    seal_step(always=True)
    first, second = witness_rows()
    assert (first.id, second.payload) == (row.id, {"size": 5})
    [mail] = deliver()
    assert note_in(text_of(mail)) == latest_checkpoint().note  # type: ignore[union-attr]
    assert ": 5 " in mail["Subject"]

    # A quiet day (nothing new sealed) has nothing new to witness.
    clock(at(DAY + timedelta(days=2)))
    seal_step(always=True)
    assert len(witness_rows()) == 2
    # ... and the first seal after it is mailed the same day.
    add_events(1)
    seal_step(always=True)
    assert [r.payload for r in witness_rows()] == [{"size": 3}, {"size": 5}, {"size": 6}]
    assert [r.status for r in witness_rows()[:2]] == [OutboxStatus.SENT] * 2


def test_without_the_setting_nothing_is_mailed(
    app: Flask,
    clock: Callable[[datetime], None],
    add_events: Callable[[int], None],
    deliver: Deliver,
) -> None:
    app.config["LEDGER_WITNESS_MAILTO"] = "  "
    add_events(2)
    seal_step(always=True)
    assert witness_rows() == []
    assert deliver() == []
    db.session.commit()
    assert (
        db.session.scalar(select(func.count()).where(LedgerCheckpoint.mailed_on.is_not(None))) == 0
    )


def test_a_checkpoint_sealed_after_the_days_mail_waits_for_the_next_day(
    witnessed: Flask, clock: Callable[[datetime], None], add_events: Callable[[int], None]
) -> None:
    add_events(1)
    seal_step(always=True)
    add_events(1)
    clock(at(DAY, hour=23))
    seal_step(always=True)
    assert [r.payload for r in witness_rows()] == [{"size": 1}]
    clock(at(DAY + timedelta(days=1), hour=0))
    seal_step()  # nothing to seal: the mail is due all the same
    assert [r.payload for r in witness_rows()] == [{"size": 1}, {"size": 2}]


def test_workers_queueing_at_once_queue_one_mail(
    witnessed: Flask, clock: Callable[[datetime], None], add_events: Callable[[int], None]
) -> None:
    add_events(1)
    seal_step(always=True)
    db.session.execute(sa.update(LedgerCheckpoint).values(mailed_on=None))
    db.session.execute(sa.delete(OutboxMessage))
    db.session.commit()
    witnessed.extensions.pop(witness.MAILED_DAY, None)
    start = threading.Barrier(4)
    queued: list[object] = []
    errors: list[BaseException] = []

    def worker() -> None:
        with witnessed.app_context():
            try:
                start.wait(10)
                queued.append(witness.queue_witness_mail())
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sum(q is not None for q in queued) == 1
    assert len(witness_rows()) == 1


def test_every_outbox_kind_has_one_renderer_by_recipient() -> None:
    maps = [set(SUBSCRIBER_MAILS), set(STAFF_MAILS), set(ADDRESS_MAILS)]
    assert sum(len(m) for m in maps) == len(set().union(*maps))
    assert set().union(*maps) == set(OutboxKind)
    assert OutboxKind.LEDGER_CHECKPOINT in ADDRESS_MAILS


def test_an_outbox_row_has_exactly_one_recipient(app: Flask) -> None:
    subscriber = Subscriber(email="one@example.org", email_key="one@example.org")
    db.session.add(subscriber)
    db.session.commit()
    for recipients in ({}, {"subscriber_id": subscriber.id, "address": WITNESS}):
        db.session.add(OutboxMessage(kind=OutboxKind.LEDGER_CHECKPOINT, **recipients))
        with pytest.raises(IntegrityError, match="one_recipient"):
            db.session.commit()
        db.session.rollback()
    db.session.add(OutboxMessage(kind=OutboxKind.LEDGER_CHECKPOINT, address=WITNESS))
    db.session.commit()


# --- migration 0012 ------------------------------------------------------------------


@pytest.fixture
def fresh_app(tmp_path: Path) -> Iterator[Flask]:
    """An app on a new, empty database of the backend under test."""
    if BACKEND == "sqlite":
        url, drop = f"sqlite:///{tmp_path / 'fresh.sqlite'}", None
    else:
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"newsletter_witness_{tmp_path.name[-8:].lower().replace('-', '_')}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url, drop = admin.url.set(database=name).render_as_string(hide_password=False), name
    app = create_app({"TESTING": True, "DATABASE_URL": url, "SECRET_KEY": TEST_SECRET})
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()
    if drop:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{drop}" WITH (FORCE)')
        admin.dispose()


ROWS = sa.text(
    "SELECT id, kind, subscriber_id, staff_user_id, status, payload FROM outbox ORDER BY id"
)
INSERT = sa.text(
    "INSERT INTO outbox (id, kind, subscriber_id, staff_user_id, payload, status, attempts, "
    "created_at, next_attempt_at) VALUES (:id, :kind, :subscriber, :staff, :payload, 'queued', "
    "0, :now, :now)"
)
INSERT_ADDRESS = sa.text(
    "INSERT INTO outbox (id, kind, address, payload, status, attempts, created_at, "
    "next_attempt_at) VALUES (:id, :kind, :address, '{}', 'queued', 0, :now, :now)"
)


def outbox_rows() -> list[tuple[object, ...]]:
    """Every outbox row's id, kind, recipients, status and payload."""
    with db.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(ROWS)]


def test_migration_0012_keeps_every_outbox_row_up_and_down(fresh_app: Flask) -> None:
    upgrade(revision="0011")
    now = "2026-12-07 12:00:00"
    with db.engine.begin() as conn:
        # Schema 0011 has these two tables as the models describe them (0012
        # changes only the outbox), so the models' defaults fill the rest.
        conn.execute(
            Subscriber.__table__.insert().values(
                id=1, email="a@example.org", email_key="a@example.org", name="A"
            )
        )
        conn.execute(
            StaffUser.__table__.insert().values(
                id=1, email="s@example.org", name="S", role="owner", password_hash="x"
            )
        )
        for n, (kind, subscriber, staff) in enumerate(
            [("confirm", 1, None), ("campaign_test", None, 1), ("data_export", 1, None)], 1
        ):
            values = {"subscriber": subscriber, "staff": staff, "payload": f'{{"n": {n}}}'}
            conn.execute(INSERT, {"id": n, "kind": kind, "now": now, **values})
    before = outbox_rows()
    assert len(before) == 3

    upgrade(revision="0012")
    assert outbox_rows() == before
    with db.engine.begin() as conn:
        values = {"id": 4, "kind": "ledger_checkpoint", "address": WITNESS, "now": now}
        conn.execute(INSERT_ADDRESS, values)
    with db.engine.connect() as conn:
        none = sa.text("UPDATE outbox SET address = NULL WHERE id = 4")
        two = sa.text("UPDATE outbox SET address = :address WHERE id = 1")
        unknown = sa.text("UPDATE outbox SET kind = 'nonsense' WHERE id = 4")
        for statement in (none, two, unknown):
            with pytest.raises(IntegrityError), conn.begin():
                conn.execute(statement, {"address": WITNESS})
        counts = conn.execute(
            sa.text("SELECT (SELECT count(*) FROM subscribers), (SELECT count(*) FROM staff_users)")
        ).one()
    assert tuple(counts) == (1, 1)

    downgrade(revision="0011")
    assert outbox_rows() == before  # the witness mail is gone, the rest kept
    with db.engine.connect() as conn:
        assert "address" not in {c["name"] for c in sa.inspect(conn).get_columns("outbox")}
        conn.rollback()
        with pytest.raises(IntegrityError), conn.begin():
            conn.execute(sa.text("UPDATE outbox SET subscriber_id = NULL WHERE id = 1"))
    upgrade()
    assert outbox_rows() == before
