"""The consent ledger: a verifiable, keyed hash chain of consent events.

The history is made the way people make it (the hosted form, the JSON API,
confirm links, unsubscribe links, the preference page); tampering is done the
way an intruder or a careless operator would, with SQL straight on the tables.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from newsletter.ledger.chain import GENESIS_HASH, ChainReport
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from newsletter.extensions import db
from newsletter.ledger import Evidence, verify_chain
from newsletter.ledger.evidence import minimise_ip
from newsletter.ledger.keys import email_digest, email_digests, ledger_keys
from newsletter.ledger.proof import consent_proof
from newsletter.models import (
    Channel,
    ConsentEvent,
    ConsentText,
    LedgerHead,
    MailingList,
    Subscriber,
    UTCDateTime,
)

from .conftest import TEST_SECRET
from .fixtures.intake import SignupRequest, drain_intake, sign_up_now
from .fixtures.mailflow import link_path
from .fixtures.threads import sign_up_from_threads

ORIGIN_HEADERS = {"Origin": "http://newsletter.test"}


@dataclass
class History:
    """A realistic ledger: who is who, and how many events it holds."""

    alice: Subscriber
    bob: Subscriber
    carol: Subscriber
    news: MailingList
    tech: MailingList
    events: int


@pytest.fixture
def history(
    client: FlaskClient,
    make_list: Callable[..., MailingList],
    post_form: Callable[..., TestResponse],
    deliver: Callable[[], list[EmailMessage]],
) -> History:
    """Three people, two lists: form and API signups, confirmations, an
    unsubscribe and a language change; nine events in all."""
    news = make_list(default=True)
    tech = make_list("tech", "Tech notes", "Ja tak til tekniske noter.")

    # Alice: the hosted form, both lists (2 x requested).
    response = post_form(
        "/subscribe",
        {"email": "alice@example.org", "name": "Alice", "list": ["nyhedsbrev", "tech"]},
    )
    assert response.status_code == 200
    # Bob: the JSON API (1 x requested).
    response = client.post(
        "/api/v1/subscriptions",
        json={"email": "bob@example.org", "lists": ["nyhedsbrev"]},
        headers={"User-Agent": "curl/8.5"},
    )
    assert response.status_code == 202
    # Carol: the form, default list, never confirms (1 x requested).
    assert post_form("/subscribe", {"email": "carol@example.org"}).status_code == 200

    confirmations = {str(m["To"]): m for m in deliver()}
    assert len(confirmations) == 3
    # Alice confirms both lists, Bob his one (3 x confirmed).
    for address in ("alice@example.org", "bob@example.org"):
        mail = next(m for to, m in confirmations.items() if address in to)
        assert client.post(link_path(mail, "confirm")).status_code == 200

    welcomes = deliver()
    assert len(welcomes) == 3
    # Alice leaves the tech list with its unsubscribe link (1 x withdrawn).
    alice_tech = next(
        m for m in welcomes if "alice@" in str(m["To"]) and "Tech notes" in str(m["Subject"])
    )
    assert client.post(link_path(alice_tech, "unsubscribe")).status_code == 200
    # Bob switches to English on his preference page (1 x preferences_changed).
    bob_welcome = next(m for m in welcomes if "bob@" in str(m["To"]))
    response = client.post(
        link_path(bob_welcome, "manage"),
        data={"action": "save", "lists": [str(news.id)], "locale": "en"},
    )
    assert response.status_code == 200
    db.session.commit()

    def person(key: str) -> Subscriber:
        return db.session.scalars(select(Subscriber).where(Subscriber.email_key == key)).one()

    return History(
        alice=person("alice@example.org"),
        bob=person("bob@example.org"),
        carol=person("carol@example.org"),
        news=news,
        tech=tech,
        events=9,
    )


def event_at(seq: int) -> ConsentEvent:
    """The event with this sequence number."""
    return db.session.scalars(select(ConsentEvent).where(ConsentEvent.seq == seq)).one()


def execute(sql: str, **params: object) -> None:
    """Run raw SQL against the ledger and commit, as an intruder would."""
    db.session.execute(sa.text(sql), params)
    db.session.commit()


def problems(report: ChainReport) -> set[tuple[int, str]]:
    """The report's problems as (seq, reason) pairs."""
    return {(p.seq, p.reason) for p in report.problems}


# -- a good ledger ----------------------------------------------------------------------------


def test_realistic_history_verifies(history: History) -> None:
    report = verify_chain()
    assert report.ok, report.problems
    assert report.events == history.events

    rows = list(db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq)))
    assert [r.seq for r in rows] == list(range(1, history.events + 1))
    assert rows[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.row_hash for a, b in itertools.pairwise(rows))
    assert sorted((r.event, r.channel) for r in rows) == sorted(
        [
            ("requested", "form"),
            ("requested", "form"),
            ("requested", "api"),
            ("requested", "form"),
            ("confirmed", "confirm_link"),
            ("confirmed", "confirm_link"),
            ("confirmed", "confirm_link"),
            ("withdrawn", "unsubscribe_page"),
            ("preferences_changed", "manage_page"),
        ]
    )
    head = db.session.get(LedgerHead, 1)
    assert head is not None
    assert (head.seq, head.row_hash) == (rows[-1].seq, rows[-1].row_hash)


def test_empty_ledger_verifies(app: Flask) -> None:
    report = verify_chain()
    assert report.ok
    assert report.events == 0


# -- tampering is found -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("event", "withdrawn"),
        ("channel", "staff"),
        ("occurred_at", datetime(2020, 1, 1, 12, 0, tzinfo=UTC)),
        ("list_id", "other-list"),
        ("consent_text_id", "other-text"),
        ("details", '{"locale": "da"}'),
        ("email_digest", "0" * 64),
    ],
)
def test_edited_row_is_found(history: History, column: str, value: object) -> None:
    seq = 5
    if value == "other-list":
        value = history.tech.id if event_at(seq).list_id != history.tech.id else history.news.id
    elif value == "other-text":
        current = event_at(seq).consent_text_id
        value = db.session.scalars(select(ConsentText.id).where(ConsentText.id != current)).first()
    db.session.commit()
    statement = sa.text(f"UPDATE consent_events SET {column} = :value WHERE seq = :seq")  # noqa: S608
    if column == "occurred_at":
        statement = statement.bindparams(sa.bindparam("value", type_=UTCDateTime()))
    db.session.execute(statement, {"value": value, "seq": seq})
    db.session.commit()

    report = verify_chain()
    assert not report.ok
    assert (seq, "content does not match its hash") in problems(report)
    assert all(p.seq == seq for p in report.problems), report.problems
    assert report.events == history.events


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("email", "mallory@example.org"),
        ("ip", "198.51.100.0/24"),
        ("user_agent", "Forged/1.0"),
        ("source_url", "https://elsewhere.example/"),
    ],
)
def test_edited_personal_field_is_found(history: History, column: str, value: str) -> None:
    execute(f"UPDATE consent_events SET {column} = :value WHERE seq = 2", value=value)  # noqa: S608
    report = verify_chain()
    assert problems(report) == {(2, "personal fields do not match their digest")}


def test_partly_erased_personal_fields_are_found(history: History) -> None:
    """Only a full erasure (all personal fields NULL) is accepted; blanking one is not."""
    execute("UPDATE consent_events SET ip = NULL WHERE seq = 3")
    assert problems(verify_chain()) == {(3, "personal fields do not match their digest")}


def test_deleted_row_in_the_middle_is_found(history: History) -> None:
    execute("DELETE FROM consent_events WHERE seq = 4")
    report = verify_chain()
    assert report.events == history.events - 1
    assert problems(report) == {
        (5, "expected event #4 here"),
        (5, "does not follow the event before it"),
    }


def test_deleted_first_row_is_found(history: History) -> None:
    execute("DELETE FROM consent_events WHERE seq = 1")
    found = problems(verify_chain())
    assert (2, "expected event #1 here") in found
    assert (2, "does not follow the event before it") in found


def test_deleted_last_row_is_found_by_the_head(history: History) -> None:
    execute("DELETE FROM consent_events WHERE seq = :seq", seq=history.events)
    report = verify_chain()
    assert report.events == history.events - 1
    assert problems(report) == {
        (history.events, "the ledger head names an event that is missing or changed")
    }


def test_edited_head_is_found(history: History) -> None:
    execute("UPDATE ledger_head SET row_hash = :h WHERE id = 1", h="f" * 64)
    assert not verify_chain().ok


def test_reordered_rows_are_found(history: History) -> None:
    # seq is unique: go through a temporary value.
    execute("UPDATE consent_events SET seq = -3 WHERE seq = 3")
    execute("UPDATE consent_events SET seq = 3 WHERE seq = 4")
    execute("UPDATE consent_events SET seq = 4 WHERE seq = -3")
    report = verify_chain()
    assert report.events == history.events
    found = problems(report)
    assert (3, "does not follow the event before it") in found
    assert (3, "content does not match its hash") in found
    assert (4, "does not follow the event before it") in found
    assert (4, "content does not match its hash") in found
    assert {p.seq for p in report.problems} <= {3, 4, 5}


def test_event_reattributed_to_another_subscriber_is_found(history: History) -> None:
    alices_first = db.session.scalars(
        select(ConsentEvent.seq)
        .where(ConsentEvent.subscriber_id == history.alice.id)
        .order_by(ConsentEvent.seq)
    ).first()
    assert alices_first is not None
    execute(
        "UPDATE consent_events SET subscriber_id = :bob WHERE seq = :seq",
        bob=history.bob.id,
        seq=alices_first,
    )
    assert problems(verify_chain()) == {(alices_first, "attributed to another subscriber")}


def test_chain_rewritten_without_the_key_is_found(history: History) -> None:
    """Someone with write access to the database but not the app's key edits an
    event and recomputes every hash after it (and the head), as plain SHA-256
    would let them: the keyed row hashes give them away."""
    from newsletter.ledger.chain import row_hash

    from newsletter.ledger.keys import canonical_json

    def forged_hash(row: ConsentEvent) -> str:
        content = {
            "seq": row.seq,
            "occurred_at": row.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "event": row.event,
            "channel": row.channel,
            "list_id": row.list_id,
            "consent_text_id": row.consent_text_id,
            "email_digest": row.email_digest,
            "details": row.details or {},
            "personal_digest": row.personal_digest,
            "prev_hash": row.prev_hash,
        }
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()

    rows = list(db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq)))
    # Sanity: the stored hashes are not what a keyless attacker can compute.
    assert rows[0].row_hash == row_hash(rows[0])
    assert rows[0].row_hash != forged_hash(rows[0])

    withdrawal = next(r for r in rows if r.event == "withdrawn")
    withdrawal.event = "confirmed"  # hide the withdrawal
    prev = withdrawal.prev_hash
    for row in rows[withdrawal.seq - 1 :]:
        row.prev_hash = prev
        row.row_hash = prev = forged_hash(row)
    head = db.session.get(LedgerHead, 1)
    assert head is not None
    head.row_hash = prev
    db.session.commit()

    report = verify_chain()
    assert not report.ok
    assert (withdrawal.seq, "content does not match its hash") in problems(report)


# -- erasure ----------------------------------------------------------------------------------


def test_erasure_nulls_personal_fields_and_still_verifies(history: History) -> None:
    alice_id, alice_events = history.alice.id, 5
    assert (
        db.session.scalar(select(func.count()).where(ConsentEvent.subscriber_id == alice_id))
        == alice_events
    )
    db.session.commit()
    execute(
        "UPDATE consent_events SET email = NULL, ip = NULL, user_agent = NULL, source_url = NULL"
        " WHERE subscriber_id = :id",
        id=alice_id,
    )
    execute("DELETE FROM subscribers WHERE id = :id", id=alice_id)

    report = verify_chain()
    assert report.ok, report.problems
    assert report.events == history.events
    assert db.session.get(Subscriber, alice_id) is None
    orphans = list(db.session.scalars(select(ConsentEvent).where(ConsentEvent.email.is_(None))))
    assert len(orphans) == alice_events
    assert all(e.subscriber_id is None for e in orphans)  # ON DELETE SET NULL
    assert all(e.ip is None and e.user_agent is None and e.source_url is None for e in orphans)
    # The keyed pseudonym still matches a disputed address to its events.
    proof = consent_proof("Alice@example.org")
    assert proof["subscriber"] is None
    assert [e["event"] for e in proof["events"]] == [
        "requested",
        "requested",
        "confirmed",
        "confirmed",
        "withdrawn",
    ]
    assert all(e["ip"] is None for e in proof["events"])


# -- concurrency ------------------------------------------------------------------------------


def test_chain_stays_linear_under_concurrent_signups(app: Flask, default_list: MailingList) -> None:
    """8 threads x 10 signups, each thread with its own app context (session and
    connection). PostgreSQL takes turns on the ledger head's row lock, SQLite on
    its single writer (BEGIN IMMEDIATE); either way no two events may share a
    predecessor."""
    threads_n, per_thread = 8, 10
    sign_up_from_threads(
        app,
        lambda number: [f"t{number}-{i}@example.org" for i in range(per_thread)],
        threads_n,
        timeout=120,
    )

    total = threads_n * per_thread
    report = verify_chain()
    assert report.ok, report.problems[:5]
    assert report.events == total
    seqs = list(db.session.scalars(select(ConsentEvent.seq).order_by(ConsentEvent.seq)))
    assert seqs == list(range(1, total + 1))
    prevs = list(db.session.scalars(select(ConsentEvent.prev_hash)))
    assert len(set(prevs)) == total  # nobody shares a predecessor: no fork
    assert db.session.scalar(select(func.count()).select_from(Subscriber)) == total


# -- what each event records ------------------------------------------------------------------


def test_event_records_utc_time_and_the_consent_text_version_shown(
    app: Flask,
    make_list: Callable[..., MailingList],
    post_form: Callable[..., TestResponse],
) -> None:
    news = make_list(default=True)
    first_text = news.consent_texts[0]
    assert post_form("/subscribe", {"email": "early@example.org"}).status_code == 200

    second_text = ConsentText(list_id=news.id, version=2, text="Ny samtykketekst, version 2.")
    db.session.add(second_text)
    db.session.commit()
    assert post_form("/subscribe", {"email": "late@example.org"}).status_code == 200
    db.session.commit()

    early, late = db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq)).all()
    assert early.consent_text_id == first_text.id
    assert late.consent_text_id == second_text.id
    assert (early.list_id, late.list_id) == (news.id, news.id)
    now = datetime.now(UTC)
    for event in (early, late):
        assert event.occurred_at.tzinfo is not None
        assert event.occurred_at.utcoffset() == timedelta(0)
        assert abs(now - event.occurred_at) < timedelta(seconds=1)
        assert event.channel == "form"
        assert event.source_url is not None
        assert event.user_agent is not None
    # The stored value itself is UTC (naive in the column), not local time.
    raw = db.session.execute(
        sa.text("SELECT occurred_at FROM consent_events WHERE seq = 1")
    ).scalar_one()
    stored = raw if isinstance(raw, datetime) else datetime.fromisoformat(raw)
    assert abs(stored.replace(tzinfo=UTC) - now) < timedelta(seconds=1)


@pytest.mark.parametrize(
    ("mode", "address", "stored"),
    [
        ("full", "203.0.113.77", "203.0.113.77"),
        ("full", "2001:db8:abcd:12:34::1", "2001:db8:abcd:12:34::1"),
        ("truncated", "203.0.113.77", "203.0.113.0/24"),
        ("truncated", "2001:db8:abcd:12:34::1", "2001:db8:abcd::/48"),
        ("truncated", "::ffff:203.0.113.77", "203.0.113.0/24"),
        ("none", "203.0.113.77", None),
        ("none", "2001:db8:abcd:12:34::1", None),
    ],
)
def test_ip_is_stored_as_ip_logging_says(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    mode: str,
    address: str,
    stored: str | None,
) -> None:
    app.config["IP_LOGGING"] = mode
    response = client.post(
        "/subscribe",
        data={"email": "ip@example.org"},
        headers=ORIGIN_HEADERS,
        environ_base={"REMOTE_ADDR": address},
    )
    assert response.status_code == 200
    db.session.commit()
    drain_intake()
    event = db.session.scalars(select(ConsentEvent)).one()
    assert event.ip == stored
    assert verify_chain().ok


def test_minimise_ip_edge_cases() -> None:
    assert minimise_ip(None, "full") is None
    assert minimise_ip("", "truncated") is None
    assert minimise_ip("not-an-ip", "full") is None
    assert minimise_ip("10.1.2.3", "truncated") == "10.1.2.0/24"
    # An IPv4 client seen through a dual-stack socket is still an IPv4 client.
    assert minimise_ip("::ffff:10.1.2.3", "full") == "10.1.2.3"


# -- keyed digests ----------------------------------------------------------------------------


def test_email_digest_is_a_keyed_pseudonym(
    app: Flask, default_list: MailingList, post_form: Callable[..., TestResponse]
) -> None:
    assert post_form("/subscribe", {"email": "Dispute@Example.org"}).status_code == 200
    db.session.commit()
    event = db.session.scalars(select(ConsentEvent)).one()
    subscriber = db.session.scalars(select(Subscriber)).one()
    assert subscriber.email_key == "dispute@example.org"

    assert event.email_digest == email_digest(subscriber.email_key)
    assert event.email_digest in email_digests(subscriber.email_key)
    assert len(event.email_digest) == 64
    int(event.email_digest, 16)  # hex
    assert "dispute" not in event.email_digest.lower()
    assert "example" not in event.email_digest.lower()
    # Not a plain hash anyone could compute from the address ...
    for plain in (subscriber.email_key, "email:" + subscriber.email_key, subscriber.email):
        assert event.email_digest != hashlib.sha256(plain.encode()).hexdigest()
    # ... but a keyed one: another key gives another pseudonym.
    assert event.email_digest != email_digest(subscriber.email_key, b"another key")
    app.config["LEDGER_KEY"] = "a-separate-ledger-key-kept-for-the-life-of-the-data"
    assert email_digest(subscriber.email_key) != event.email_digest


def test_old_events_verify_after_secret_key_rotation(
    app_factory: Callable[..., Flask], history: History
) -> None:
    new_secret = "rotated-secret-key-0123456789-abcdefghijklmnop"
    old_digest = email_digest(history.alice.email_key)
    db.session.commit()  # no open transaction while another app works on the database

    rotated = app_factory(
        SECRET_KEY=new_secret, SECRET_KEY_FALLBACKS=[TEST_SECRET], LEDGER_KEY=None
    )
    with rotated.app_context():
        assert len(ledger_keys()) == 2
        report = verify_chain()
        assert report.ok, report.problems
        assert report.events == history.events
        # The disputed address is still found, under the old pseudonym.
        proof = consent_proof("alice@example.org")
        assert len(proof["events"]) == 5
        assert {e["row_hash"] for e in proof["events"]}
        assert old_digest in email_digests("alice@example.org")
        assert proof["email_digest"] != old_digest  # new events use the new key
        # New events under the new key chain on and verify together with the old.
        sign_up_now(
            SignupRequest(
                email="after-rotation@example.org", channel=Channel.API, evidence=Evidence()
            )
        )
        report = verify_chain()
        assert report.ok, report.problems
        assert report.events == history.events + 1
        db.session.remove()

    forgotten = app_factory(SECRET_KEY=new_secret, SECRET_KEY_FALLBACKS=[], LEDGER_KEY=None)
    with forgotten.app_context():
        # Without the old key the old rows cannot be checked: proof the key is used.
        assert not verify_chain().ok
        db.session.remove()


def test_verify_reads_the_database_not_the_sessions_copies(history: History) -> None:
    """An event already loaded in the session must not hide an edit made in SQL."""
    loaded = event_at(3)
    assert loaded.event == "requested"
    db.session.execute(sa.text("UPDATE consent_events SET event = 'confirmed' WHERE seq = 3"))
    report = verify_chain()  # same transaction, the stale copy still in the identity map
    assert problems(report) == {(3, "content does not match its hash")}
    db.session.rollback()
    assert verify_chain().ok
