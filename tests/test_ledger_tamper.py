"""Tampering with sealed events, texts and personal fields is caught by
`verify_ledger()` and by `newsletter ledger verify` (exit 1, naming where)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from flask.testing import FlaskCliRunner
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.ledger.verify import verify_ledger
from newsletter.models import ConsentText, UTCDateTime

from .fixtures.ledger_history import (
    History,
    event_at,
    execute,
    places,
    verify_cli,
)


def test_the_untouched_history_verifies(history: History, runner: FlaskCliRunner) -> None:
    report = verify_ledger()
    assert report.ok, report.problems
    assert (report.events, report.sealed, report.waiting) == (9, 9, 0)
    code, output = verify_cli(runner)
    assert code == 0, output
    assert "9 events sealed, 0 waiting" in output


def other_value(history: History, column: str, seq: int) -> object:
    """A plausible forged value for one leaf column of event ``seq``."""
    event = event_at(seq)
    forged: dict[str, object] = {
        "event": "withdrawn" if event.event != "withdrawn" else "confirmed",
        "channel": "staff",
        "occurred_at": datetime(2020, 1, 1, 12, 0, tzinfo=UTC),
        "list_id": history.tech.id if event.list_id != history.tech.id else history.news.id,
        "policy_version_id": history.old_policy.id,
        "email_digest": "0" * 64,
        "personal_commitment": "1" * 64,
        "details": '{"locale": "da"}',
    }
    if column == "consent_text_id":
        return db.session.scalar(
            select(ConsentText.id).where(ConsentText.id != event.consent_text_id)
        )
    return forged[column]


LEAF_COLUMNS = [
    "event",
    "channel",
    "occurred_at",
    "list_id",
    "consent_text_id",
    "policy_version_id",
    "email_digest",
    "personal_commitment",
    "details",
]


@pytest.mark.parametrize("column", LEAF_COLUMNS)
def test_an_edited_leaf_field_is_caught_and_named(
    history: History, runner: FlaskCliRunner, column: str
) -> None:
    seq = 5
    value = other_value(history, column, seq)
    assert event_at(seq).policy_version_id == history.policy.id
    statement = sa.text(f"UPDATE consent_events SET {column} = :value WHERE seq = :seq")  # noqa: S608
    if column == "occurred_at":
        statement = statement.bindparams(sa.bindparam("value", type_=UTCDateTime()))
    db.session.execute(statement, {"value": value, "seq": seq})
    db.session.commit()

    report = verify_ledger()
    assert places(report) == {"event #5"}, report.problems
    reasons = [p.reason for p in report.problems]
    assert any("does not match its sealed leaf" in reason for reason in reasons)
    code, output = verify_cli(runner)
    assert code == 1
    assert "BROKEN event #5: does not match its sealed leaf" in output


@pytest.mark.parametrize("with_hash", [False, True], ids=["text only", "text and sha256"])
def test_an_edited_consent_text_is_caught(
    history: History, runner: FlaskCliRunner, with_hash: bool
) -> None:
    """The issue measured the old ledger passing this UPDATE. Every sealed
    event that showed the text now fails; with the stored hash left alone,
    the text itself is named too."""
    text = history.tech.consent_texts[0]
    showed = {
        f"event #{e.seq}" for e in map(event_at, range(1, 10)) if e.consent_text_id == text.id
    }
    assert showed
    execute("UPDATE consent_texts SET text = 'Ja tak til alt.' WHERE id = :id", id=text.id)
    if with_hash:
        execute(
            "UPDATE consent_texts SET sha256 = :h WHERE id = :id",
            h=hashlib.sha256(b"Ja tak til alt.").hexdigest(),
            id=text.id,
        )
    report = verify_ledger()
    expected = showed if with_hash else showed | {"texts"}
    assert places(report) == expected, report.problems
    code, output = verify_cli(runner)
    assert code == 1
    for where in expected:
        assert f"BROKEN {where}:" in output


def test_an_edited_policy_body_is_caught(history: History, runner: FlaskCliRunner) -> None:
    execute(
        "UPDATE privacy_policies SET body_markdown = 'We keep everything.' WHERE id = :id",
        id=history.policy.id,
    )
    report = verify_ledger()
    assert "texts" in places(report)
    assert {f"event #{seq}" for seq in range(1, 10)} <= places(report)
    code, output = verify_cli(runner)
    assert code == 1
    assert "BROKEN texts: privacy policy version 2 was edited" in output


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("email", "mallory@example.org"),
        ("ip", "198.51.100.0/24"),
        ("user_agent", "Forged/1.0"),
        ("source_url", "https://elsewhere.example/"),
        ("salt", "ab" * 32),
        ("salt", "not hex"),
    ],
)
def test_an_edited_personal_field_or_salt_breaks_the_commitment(
    history: History, runner: FlaskCliRunner, column: str, value: str
) -> None:
    execute(f"UPDATE consent_events SET {column} = :value WHERE seq = 2", value=value)  # noqa: S608
    report = verify_ledger()
    assert [str(p) for p in report.problems] == [
        "event #2: personal fields do not match their commitment"
    ]
    code, output = verify_cli(runner)
    assert code == 1
    assert "event #2: personal fields do not match their commitment" in output


def test_a_partly_erased_event_is_caught(history: History) -> None:
    execute("UPDATE consent_events SET salt = NULL WHERE seq = 3")
    assert [str(p) for p in verify_ledger().problems] == [
        "event #3: personal fields without their salt"
    ]


def test_swapped_events_are_caught(history: History, runner: FlaskCliRunner) -> None:
    execute("UPDATE consent_events SET seq = -3 WHERE seq = 3")
    execute("UPDATE consent_events SET seq = 3 WHERE seq = 4")
    execute("UPDATE consent_events SET seq = 4 WHERE seq = -3")
    report = verify_ledger()
    assert places(report) == {"event #3", "event #4"}, report.problems
    code, output = verify_cli(runner)
    assert code == 1
    assert "BROKEN event #3" in output
    assert "BROKEN event #4" in output


def test_an_event_deleted_in_the_middle_is_caught(history: History, runner: FlaskCliRunner) -> None:
    execute("DELETE FROM consent_events WHERE seq = 4")
    report = verify_ledger()
    assert report.events == 8
    # The checkpoint of the first four events can no longer be rebuilt.
    assert places(report) == {"event #4", "checkpoint 4"}, report.problems
    code, output = verify_cli(runner)
    assert code == 1
    assert "BROKEN event #4: missing" in output


def test_the_last_event_deleted_is_caught(history: History) -> None:
    execute("DELETE FROM consent_events WHERE seq = 9")
    assert places(verify_ledger()) == {"event #9", "checkpoint 9"}


def test_an_event_moved_to_another_subscriber_is_caught(history: History) -> None:
    seq = next(e.seq for e in map(event_at, range(1, 10)) if e.subscriber_id == history.alice.id)
    execute(
        "UPDATE consent_events SET subscriber_id = :bob WHERE seq = :seq",
        bob=history.bob.id,
        seq=seq,
    )
    assert [str(p) for p in verify_ledger().problems] == [
        f"event #{seq}: attributed to another subscriber"
    ]


def test_verify_reads_the_database_not_the_sessions_copies(history: History) -> None:
    """An event already loaded in the session must not hide an edit made in SQL."""
    assert event_at(3).event == "requested"
    db.session.execute(sa.text("UPDATE consent_events SET event = 'confirmed' WHERE seq = 3"))
    report = verify_ledger()  # same transaction, the stale copy in the identity map
    assert places(report) == {"event #3"}
    assert verify_ledger().ok  # verify ends its transaction: the edit was never committed


def test_a_ledger_head_moved_back_is_caught(history: History) -> None:
    execute("UPDATE ledger_head SET seq = 5 WHERE id = 1")
    assert [str(p) for p in verify_ledger().problems] == [
        "ledger head: names event #5, but the events go on to #9"
    ]
