"""The consent ledger: events as Merkle leaves, made the way people make them
(the hosted form, the JSON API, confirm and unsubscribe links, the preference
page). Tampering: tests/test_ledger_tamper.py and test_ledger_checkpoints.py;
sealing: test_ledger_seal.py; keys: test_ledger_keys.py; bundles:
test_ledger_bundle.py."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import rfc8785
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from newsletter.extensions import db
from newsletter.ledger.evidence import minimise_ip
from newsletter.ledger.keys import email_digest, email_digests
from newsletter.ledger.leaf import LEAF_COLUMNS, Texts, leaf_document
from newsletter.ledger.proof import consent_proof
from newsletter.ledger.verify import verify_ledger
from newsletter.models import (
    ConsentEvent,
    ConsentText,
    LedgerHead,
    LedgerNode,
    MailingList,
    Subscriber,
)
from newsletter_verify import leaf_hash

from .fixtures.intake import drain_intake
from .fixtures.ledger import seal_and_verify
from .fixtures.ledger_history import History, execute
from .fixtures.threads import sign_up_from_threads

ORIGIN_HEADERS = {"Origin": "http://newsletter.test"}


# -- a good ledger ----------------------------------------------------------------------------


def test_realistic_history_verifies(history: History) -> None:
    report = verify_ledger()
    assert report.ok, report.problems
    assert (report.events, report.sealed, report.waiting) == (history.events, 9, 0)
    rows = list(db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq)))
    assert [r.seq for r in rows] == list(range(1, history.events + 1))
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
    assert head.seq == rows[-1].seq


def test_empty_ledger_verifies(app: Flask) -> None:
    report = verify_ledger()
    assert report.ok
    assert (report.events, report.sealed, report.checkpoints) == (0, 0, 0)
    report = seal_and_verify()
    assert report.ok
    assert report.checkpoints == 1


def test_a_leaf_binds_the_texts_by_hash_and_the_personal_fields_by_commitment(
    history: History,
) -> None:
    """The stored leaf hash is the RFC 6962 hash of the RFC 8785 leaf, which
    names the texts by the SHA-256 of their exact words and commits to the
    personal fields with the event's salt."""
    event = db.session.scalars(select(ConsentEvent).where(ConsentEvent.seq == 2)).one()
    text = db.session.get(ConsentText, event.consent_text_id)
    assert text is not None
    row = db.session.execute(select(*LEAF_COLUMNS).where(ConsentEvent.seq == 2)).mappings().one()
    leaf = leaf_document(row, Texts.load())
    assert leaf["consent_text_sha256"] == hashlib.sha256(text.text.encode()).hexdigest()
    assert (
        leaf["policy_sha256"] == hashlib.sha256(history.policy.body_markdown.encode()).hexdigest()
    )
    assert (leaf["v"], leaf["seq"], leaf["list"], leaf["policy_version"]) == (1, 2, "tech", 2)
    assert leaf["occurred_at"].endswith("Z")
    assert len(leaf["occurred_at"]) == len("2026-01-01T00:00:00.000000Z")
    personal = {
        "email": event.email,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "source_url": event.source_url,
    }
    assert event.email == "alice@example.org"
    assert event.salt is not None
    salted = bytes.fromhex(event.salt) + rfc8785.dumps(personal)
    assert leaf["personal_commitment"] == hashlib.sha256(salted).hexdigest()
    assert "alice" not in json.dumps(leaf)
    stored = db.session.scalar(
        select(LedgerNode.hash).where(LedgerNode.level == 0, LedgerNode.idx == 1)
    )
    assert stored == leaf_hash(rfc8785.dumps(leaf))


# -- erasure ----------------------------------------------------------------------------------


def test_erasure_nulls_personal_fields_and_salt_and_still_verifies(history: History) -> None:
    alice_id, alice_events = history.alice.id, 5
    execute(
        "UPDATE consent_events SET email = NULL, ip = NULL, user_agent = NULL,"
        " source_url = NULL, salt = NULL WHERE subscriber_id = :id",
        id=alice_id,
    )
    execute("DELETE FROM subscribers WHERE id = :id", id=alice_id)
    report = verify_ledger()
    assert report.ok, report.problems
    orphans = list(db.session.scalars(select(ConsentEvent).where(ConsentEvent.email.is_(None))))
    assert len(orphans) == alice_events
    assert all(e.subscriber_id is None and e.personal_commitment for e in orphans)
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


def test_concurrent_signups_get_contiguous_seq(app: Flask, default_list: MailingList) -> None:
    """8 threads x 10 signups, each thread with its own app context (session and
    connection). Appends take turns on the ledger head's row lock (PostgreSQL)
    or the single writer (SQLite): no gap, no duplicate, and the tree sealed
    over them verifies."""
    threads_n, per_thread = 8, 10
    sign_up_from_threads(
        app,
        lambda number: [f"t{number}-{i}@example.org" for i in range(per_thread)],
        threads_n,
        timeout=120,
    )
    total = threads_n * per_thread
    report = seal_and_verify()
    assert report.ok, report.problems[:5]
    assert (report.events, report.sealed) == (total, total)
    seqs = list(db.session.scalars(select(ConsentEvent.seq).order_by(ConsentEvent.seq)))
    assert seqs == list(range(1, total + 1))
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
    assert seal_and_verify().ok


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
