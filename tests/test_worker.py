"""The outbox and its worker: durable mail, retries with backoff, leases, list headers.

Every mail is a row written in the transaction that causes it; the real worker
(``deliver`` runs it once until nothing is due) sends it to the real loopback
SMTP server, which can be stopped, started and told to refuse recipients.
"""

from __future__ import annotations

import re
import smtplib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import delete, func, select, update
from werkzeug.test import TestResponse

from newsletter.extensions import db
from newsletter.mail import transport
from newsletter.models import (
    MailingList,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    SignupIntake,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from newsletter.subscriptions import signup
from newsletter.subscriptions.lists import DEFAULT_CONSENT_TEXT, create_list
from newsletter.tokens import Purpose, make_token
from newsletter.worker.dispatch import ADDRESS_MAILS, STAFF_MAILS, SUBSCRIBER_MAILS
from newsletter.worker.outbox import claim_batch
from newsletter.worker.round import run_worker

from .conftest import BACKEND, ORIGIN
from .fixtures.intake import drain_intake
from .fixtures.mailflow import html_of, link_path, text_of
from .fixtures.smtp import Received, SMTPServer

Deliver = Callable[[], list[EmailMessage]]
PostForm = Callable[..., TestResponse]


@dataclass(frozen=True)
class Row:
    """A detached snapshot of one outbox row (reading it holds no transaction open)."""

    id: int
    kind: OutboxKind
    subscriber_id: int
    status: OutboxStatus
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    lease_until: datetime | None
    leased_by: str | None
    sent_at: datetime | None


def rows() -> list[Row]:
    """Every outbox row, oldest first, read in a transaction that is closed again."""
    db.session.commit()
    result = db.session.execute(
        select(
            OutboxMessage.id,
            OutboxMessage.kind,
            OutboxMessage.subscriber_id,
            OutboxMessage.status,
            OutboxMessage.attempts,
            OutboxMessage.last_error,
            OutboxMessage.next_attempt_at,
            OutboxMessage.lease_until,
            OutboxMessage.leased_by,
            OutboxMessage.sent_at,
        ).order_by(OutboxMessage.id)
    ).all()
    db.session.commit()
    return [Row(**r._asdict()) for r in result]


def only_row() -> Row:
    """The one outbox row there must be."""
    (row,) = rows()
    return row


def set_rows(ids: list[int] | None = None, **values: Any) -> None:
    """Change outbox rows directly (simulating time passing or a crashed worker)."""
    statement = update(OutboxMessage)
    if ids is not None:
        statement = statement.where(OutboxMessage.id.in_(ids))
    db.session.execute(statement.values(**values))
    db.session.commit()


def make_due(ids: list[int] | None = None) -> None:
    """Move the next attempt into the past: the backoff has elapsed."""
    set_rows(ids, next_attempt_at=utcnow() - timedelta(seconds=1))


def queue_signup(post_form: PostForm, email: str, **fields: object) -> None:
    """Sign up through the hosted form and let the worker's intake step take it:
    the confirmation mail is then queued, not yet sent."""
    response = post_form("/subscribe", {"email": email, **fields})
    assert response.status_code == 200, response.get_data(as_text=True)
    db.session.commit()
    drain_intake()


def subscriber_id(email: str) -> int:
    """The id of the subscriber with this (lower-case) address."""
    db.session.commit()
    found = db.session.scalar(select(Subscriber.id).where(Subscriber.email_key == email.lower()))
    db.session.commit()
    assert found is not None, email
    return found


def recipients(received: list[Received]) -> list[str]:
    """Envelope recipients of the received mails, in order."""
    return [address for r in received for address in r.rcpt_tos]


def header_block(raw: bytes) -> list[bytes]:
    """The top-level header lines of a raw message as received."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    return head.split(b"\n")


def logical_header(raw: bytes, name: bytes) -> bytes:
    """One header with its folded continuation lines joined, as raw bytes."""
    lines = header_block(raw)
    for index, line in enumerate(lines):
        if line.lower().startswith(name.lower() + b":"):
            value = [line]
            for continuation in lines[index + 1 :]:
                if continuation[:1] not in (b" ", b"\t"):
                    break
                value.append(continuation)
            return b"\r\n".join(value)
    raise AssertionError(f"no {name!r} header in {raw[:400]!r}")


# --- the outbox is durable and written with the change ---------------------------------


def test_signup_only_queues_the_confirmation_no_mail_leaves_the_request(
    default_list: MailingList, post_form: PostForm, smtp_server: SMTPServer
) -> None:
    queue_signup(post_form, "queued@example.org")

    row = only_row()
    assert row.kind == OutboxKind.CONFIRM
    assert row.status == OutboxStatus.QUEUED
    assert row.attempts == 0
    assert row.subscriber_id == subscriber_id("queued@example.org")
    assert row.next_attempt_at <= utcnow()
    # Nothing was sent from inside the request: the server has not even been contacted.
    assert smtp_server.recorder.received == []
    assert smtp_server.recorder.connections == 0


def test_the_outbox_row_commits_or_rolls_back_with_the_signup(
    default_list: MailingList,
    client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    smtp_server: SMTPServer,
) -> None:
    """A crash in the worker after the mail was queued but before the commit
    leaves neither behind: the signup stays in the intake, marked failed."""
    real_append = signup.append_events

    def append_then_crash(*args: Any, **kwargs: Any) -> None:
        real_append(*args, **kwargs)  # the outbox row was inserted before this
        raise RuntimeError("crash before commit")

    response = client.post(
        "/subscribe", data={"email": "crash@example.org"}, headers={"Origin": ORIGIN}
    )
    assert response.status_code == 200
    db.session.commit()
    monkeypatch.setattr(signup, "append_events", append_then_crash)
    drain_intake()

    assert rows() == []
    assert db.session.scalar(select(func.count(Subscriber.id))) == 0
    failed = db.session.scalars(select(SignupIntake)).one()
    assert failed.failed_at is not None
    assert "crash before commit" in (failed.last_error or "")
    db.session.commit()
    assert smtp_server.recorder.connections == 0


def test_worker_sends_the_queued_confirmation_and_marks_it_sent(
    default_list: MailingList, post_form: PostForm, deliver: Deliver, smtp_server: SMTPServer
) -> None:
    queue_signup(post_form, "first@example.org")
    mails = deliver()

    assert len(mails) == 1
    assert recipients(smtp_server.recorder.received) == ["first@example.org"]
    assert "/confirm/" in text_of(mails[0])
    row = only_row()
    assert row.status == OutboxStatus.SENT
    assert row.sent_at is not None
    assert row.lease_until is None
    assert row.last_error is None
    assert deliver() == []  # sent once, never again


# --- temporary and permanent failures ---------------------------------------------------


def test_server_down_keeps_the_mail_queued_with_backoff_then_sends_it_once(
    app: Flask,
    default_list: MailingList,
    post_form: PostForm,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    app.config["OUTBOX_RETRY_BASE_SECONDS"] = 60
    queue_signup(post_form, "outage@example.org")
    smtp_server.stop()

    before = utcnow()
    assert deliver() == []
    after = utcnow()
    row = only_row()
    assert row.status == OutboxStatus.QUEUED
    assert row.attempts == 1
    assert row.last_error
    assert "Connection refused" in row.last_error
    assert row.lease_until is None
    # Attempt 1 waits OUTBOX_RETRY_BASE_SECONDS * 2**0.
    assert before + timedelta(seconds=60) <= row.next_attempt_at
    assert row.next_attempt_at <= after + timedelta(seconds=60)

    # Not due yet: another run does nothing, even with the server back.
    smtp_server.start()
    assert deliver() == []
    assert only_row().attempts == 1

    # Second failure: attempt 2 waits twice as long.
    smtp_server.stop()
    make_due()
    before = utcnow()
    assert deliver() == []
    after = utcnow()
    row = only_row()
    assert row.attempts == 2
    assert row.status == OutboxStatus.QUEUED
    assert before + timedelta(seconds=120) <= row.next_attempt_at
    assert row.next_attempt_at <= after + timedelta(seconds=120)

    smtp_server.start()
    make_due()
    mails = deliver()
    assert len(mails) == 1
    assert recipients(smtp_server.recorder.received) == ["outage@example.org"]
    row = only_row()
    assert row.status == OutboxStatus.SENT
    assert row.attempts == 2
    assert deliver() == []
    assert len(smtp_server.recorder.received) == 1  # exactly once


def test_retry_happens_by_itself_once_the_backoff_has_passed(
    app: Flask,
    default_list: MailingList,
    post_form: PostForm,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    """With a tiny OUTBOX_RETRY_BASE_SECONDS the row simply becomes due again."""
    app.config["OUTBOX_RETRY_BASE_SECONDS"] = 0.05
    queue_signup(post_form, "soon@example.org")
    smtp_server.stop()
    assert deliver() == []
    row = only_row()
    assert row.attempts >= 1
    assert row.status == OutboxStatus.QUEUED

    smtp_server.start()
    deadline = row.next_attempt_at
    threading.Event().wait(max(0.0, (deadline - utcnow()).total_seconds()) + 0.05)
    assert len(deliver()) == 1
    assert only_row().status == OutboxStatus.SENT


def test_row_fails_after_max_attempts_of_a_recipient_refusal_and_is_kept(
    app: Flask,
    default_list: MailingList,
    post_form: PostForm,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    """A recipient the server keeps deferring (4xx) is given up after the limit."""
    app.config["OUTBOX_MAX_ATTEMPTS"] = 3
    app.config["OUTBOX_RETRY_BASE_SECONDS"] = 60
    queue_signup(post_form, "hopeless@example.org")
    smtp_server.recorder.refuse["hopeless@example.org"] = "451 4.2.0 mailbox busy, try later"

    for attempt in (1, 2):
        assert deliver() == []
        row = only_row()
        assert row.attempts == attempt
        assert row.status == OutboxStatus.QUEUED
        make_due()
    assert deliver() == []
    row = only_row()
    assert row.attempts == 3
    assert row.status == OutboxStatus.FAILED
    assert row.last_error
    assert "451" in row.last_error
    assert row.lease_until is None

    # A failed row is kept for the record, and never tried again.
    smtp_server.recorder.refuse.clear()
    make_due()
    assert deliver() == []
    assert only_row().status == OutboxStatus.FAILED
    assert smtp_server.recorder.received == []


def test_an_outage_never_fails_a_mail_however_long_it_lasts(
    app: Flask,
    default_list: MailingList,
    post_form: PostForm,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    """The server being down is not the recipient's fault: far past the attempt limit
    the mail is still queued, its wait is capped (so it goes soon after the outage
    ends), and it is delivered once the server is back."""
    from newsletter.mail.retry import OUTAGE_MAX_BACKOFF

    app.config["OUTBOX_MAX_ATTEMPTS"] = 3
    app.config["OUTBOX_RETRY_BASE_SECONDS"] = 60
    queue_signup(post_form, "patient@example.org")
    smtp_server.stop()

    for attempt in range(1, 9):
        assert deliver() == []
        row = only_row()
        assert (row.status, row.attempts) == (OutboxStatus.QUEUED, attempt)
        wait = (row.next_attempt_at - utcnow()).total_seconds()
        assert wait <= OUTAGE_MAX_BACKOFF
        make_due()
    assert wait > OUTAGE_MAX_BACKOFF - 5  # 60 s * 2**7 would be far more: the cap holds

    smtp_server.start()
    (mail,) = deliver()
    assert str(mail["To"]) == "patient@example.org"
    assert only_row().status == OutboxStatus.SENT


def test_permanent_refusal_fails_the_row_at_once_and_the_batch_goes_on(
    default_list: MailingList, post_form: PostForm, deliver: Deliver, smtp_server: SMTPServer
) -> None:
    for email in ("before@example.org", "nosuch@example.org", "after@example.org"):
        queue_signup(post_form, email)
    smtp_server.recorder.refuse["nosuch@example.org"] = "550 5.1.1 no such user"

    mails = deliver()

    assert sorted(str(m["To"]) for m in mails) == ["after@example.org", "before@example.org"]
    assert smtp_server.recorder.connections == 1  # the refusal did not cost a reconnect
    by_subscriber = {r.subscriber_id: r for r in rows()}
    refused = by_subscriber[subscriber_id("nosuch@example.org")]
    assert refused.status == OutboxStatus.FAILED
    assert refused.last_error is not None
    assert "550" in refused.last_error
    assert "no such user" in refused.last_error
    assert refused.lease_until is None
    for email in ("before@example.org", "after@example.org"):
        assert by_subscriber[subscriber_id(email)].status == OutboxStatus.SENT

    # Permanent means permanent: it is not retried later.
    smtp_server.recorder.refuse.clear()
    make_due()
    assert deliver() == []


def test_temporary_refusal_is_retried_not_failed(
    app: Flask,
    default_list: MailingList,
    post_form: PostForm,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    app.config["OUTBOX_RETRY_BASE_SECONDS"] = 60
    queue_signup(post_form, "greylisted@example.org")
    queue_signup(post_form, "fine@example.org")
    smtp_server.recorder.refuse["greylisted@example.org"] = "451 4.3.0 try later"

    mails = deliver()

    # The deferred row waits; the row behind it in the batch still goes out.
    assert [str(m["To"]) for m in mails] == ["fine@example.org"]
    greylisted = next(
        r for r in rows() if r.subscriber_id == subscriber_id("greylisted@example.org")
    )
    assert greylisted.status == OutboxStatus.QUEUED
    assert greylisted.attempts == 1
    assert greylisted.last_error is not None
    assert "451" in greylisted.last_error
    assert greylisted.next_attempt_at > utcnow() + timedelta(seconds=50)

    del smtp_server.recorder.refuse["greylisted@example.org"]
    make_due([greylisted.id])
    mails = deliver()
    assert [str(m["To"]) for m in mails] == ["greylisted@example.org"]
    assert {r.status for r in rows()} == {OutboxStatus.SENT}


def test_one_smtp_connection_carries_a_whole_batch(
    default_list: MailingList, post_form: PostForm, deliver: Deliver, smtp_server: SMTPServer
) -> None:
    addresses = [f"batch{i}@example.org" for i in range(5)]
    for email in addresses:
        queue_signup(post_form, email)
    assert len(rows()) == 5

    mails = deliver()

    assert sorted(str(m["To"]) for m in mails) == sorted(addresses)
    assert smtp_server.recorder.connections == 1
    assert {r.status for r in rows()} == {OutboxStatus.SENT}


# --- leases and concurrent workers -----------------------------------------------------


def test_rows_leased_by_a_crashed_worker_wait_for_the_lease_to_expire(
    default_list: MailingList, post_form: PostForm, deliver: Deliver, smtp_server: SMTPServer
) -> None:
    queue_signup(post_form, "leased@example.org")
    set_rows(lease_until=utcnow() + timedelta(minutes=5), leased_by="crashed-host:1:1")

    assert deliver() == []
    row = only_row()
    assert row.status == OutboxStatus.QUEUED
    assert row.leased_by == "crashed-host:1:1"
    assert smtp_server.recorder.connections == 0

    set_rows(lease_until=utcnow() - timedelta(seconds=1))  # the lease ran out
    mails = deliver()
    assert [str(m["To"]) for m in mails] == ["leased@example.org"]
    row = only_row()
    assert row.status == OutboxStatus.SENT
    assert row.leased_by != "crashed-host:1:1"  # taken over by the live worker


def test_concurrent_claims_get_disjoint_rows(
    app: Flask, default_list: MailingList, post_form: PostForm
) -> None:
    """Two workers claiming at the same moment never get the same row.

    PostgreSQL: FOR UPDATE SKIP LOCKED. SQLite: BEGIN IMMEDIATE serialises the
    two claims, so the second sees the first one's lease.
    """
    for i in range(10):
        queue_signup(post_form, f"claim{i}@example.org")
    db.session.commit()

    barrier = threading.Barrier(2)
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def claim(owner: str) -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=10)
                claimed[owner] = claim_batch(owner, 4)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(f"worker-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    first, second = claimed["worker-1"], claimed["worker-2"]
    assert len(first) == 4
    assert len(second) == 4
    assert set(first).isdisjoint(second)

    leased = {r.id: r.leased_by for r in rows()}
    assert all(leased[i] == "worker-1" for i in first)
    assert all(leased[i] == "worker-2" for i in second)
    assert sum(1 for owner in leased.values() if owner is None) == 2


@pytest.mark.postgres_only
@pytest.mark.skipif(
    BACKEND != "postgresql",
    reason="row locks held by another open transaction exist only on PostgreSQL; "
    "SQLite has a single writer, so the claim would wait rather than skip",
)
def test_claim_skips_rows_locked_by_another_transaction(
    default_list: MailingList, post_form: PostForm
) -> None:
    for i in range(5):
        queue_signup(post_form, f"locked{i}@example.org")
    ids = [r.id for r in rows()]

    with db.engine.connect() as other:
        other.begin()
        # Another worker is in the middle of claiming the first two rows.
        locked = other.scalars(
            select(OutboxMessage.id).where(OutboxMessage.id.in_(ids[:2])).with_for_update()
        ).all()
        assert sorted(locked) == ids[:2]
        claimed = claim_batch("skipper", 10)  # must not block on the locked rows
        other.rollback()

    assert sorted(claimed) == ids[2:]


def test_two_workers_running_at_once_send_every_mail_exactly_once(
    app: Flask, default_list: MailingList, post_form: PostForm, smtp_server: SMTPServer
) -> None:
    app.config["OUTBOX_BATCH_SIZE"] = 3
    addresses = [f"parallel{i}@example.org" for i in range(12)]
    for email in addresses:
        queue_signup(post_form, email)
    db.session.commit()

    errors: list[BaseException] = []

    def work() -> None:
        try:
            run_worker(app, threading.Event(), once=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(recipients(smtp_server.recorder.received)) == sorted(addresses)
    assert {r.status for r in rows()} == {OutboxStatus.SENT}


# --- mail that no longer applies ------------------------------------------------------


def test_welcome_mail_is_skipped_when_the_subscriber_left_before_it_was_sent(
    default_list: MailingList,
    client: FlaskClient,
    subscribe: Callable[..., EmailMessage],
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    confirmation = subscribe("changed-mind@example.org")
    assert client.post(link_path(confirmation, "confirm")).status_code == 200
    welcome_row = rows()[-1]
    assert welcome_row.kind == OutboxKind.WELCOME
    assert welcome_row.status == OutboxStatus.QUEUED

    # They unsubscribe (e.g. from the manage page) before the worker gets to the welcome.
    subscriber = db.session.get(Subscriber, welcome_row.subscriber_id)
    assert subscriber is not None
    token = make_token(Purpose.UNSUBSCRIBE, subscriber.token_key)
    db.session.commit()
    assert client.post(f"/unsubscribe/{token}").status_code == 200

    received_before = len(smtp_server.recorder.received)
    assert deliver() == []
    assert len(smtp_server.recorder.received) == received_before
    row = rows()[-1]
    assert row.id == welcome_row.id
    assert row.status == OutboxStatus.SKIPPED
    assert row.sent_at is None
    assert row.last_error == "no longer subscribed"


def test_queued_confirmation_goes_with_an_erased_subscriber(
    default_list: MailingList, post_form: PostForm, deliver: Deliver, smtp_server: SMTPServer
) -> None:
    queue_signup(post_form, "erase-me@example.org")
    queue_signup(post_form, "keep-me@example.org")
    assert len(rows()) == 2

    db.session.execute(delete(Subscriber).where(Subscriber.email_key == "erase-me@example.org"))
    db.session.commit()

    remaining = rows()
    assert [r.subscriber_id for r in remaining] == [subscriber_id("keep-me@example.org")]
    mails = deliver()
    assert [str(m["To"]) for m in mails] == ["keep-me@example.org"]
    assert "erase-me@example.org" not in recipients(smtp_server.recorder.received)


def test_confirmation_is_skipped_when_nothing_is_pending_any_more(
    default_list: MailingList, post_form: PostForm, deliver: Deliver
) -> None:
    queue_signup(post_form, "already@example.org")
    db.session.execute(
        update(Subscription).values(status=SubscriptionStatus.UNSUBSCRIBED)
    )  # withdrawn before the confirmation went out
    db.session.commit()

    assert deliver() == []
    row = only_row()
    assert row.status == OutboxStatus.SKIPPED
    assert row.last_error == "nothing left to confirm"


def test_every_outbox_kind_has_exactly_one_renderer() -> None:
    """The dispatcher maps each kind to its feature's renderer, by recipient."""
    maps = [set(SUBSCRIBER_MAILS), set(STAFF_MAILS), set(ADDRESS_MAILS)]
    assert sum(map(len, maps)) == len(set().union(*maps))
    assert set().union(*maps) == set(OutboxKind)


# --- what the mails look like on the wire --------------------------------------------


@pytest.fixture
def welcome_received(
    app: Flask,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    smtp_server: SMTPServer,
) -> Received:
    """The welcome mail as the SMTP server received it (raw bytes and parsed)."""
    welcome = subscribed("receipt@example.org", name="Rita Læser")
    received = smtp_server.recorder.received[-1]
    assert received.message["Message-ID"] == welcome["Message-ID"]
    return received


def test_welcome_mail_has_the_list_headers_in_plain_ascii(welcome_received: Received) -> None:
    raw, message = welcome_received.raw, welcome_received.message

    assert b"List-Unsubscribe: <http://newsletter.test/unsubscribe/" in raw
    unsubscribe = logical_header(raw, b"List-Unsubscribe")
    assert unsubscribe.isascii()
    assert b"=?" not in unsubscribe  # no RFC 2047 encoded word hiding the URL
    assert b"\r\n" not in unsubscribe  # one line: the URL is never folded
    assert re.fullmatch(
        rb"List-Unsubscribe: <http://newsletter\.test/unsubscribe/[\w.\-]+>", unsubscribe
    )
    assert logical_header(raw, b"List-Unsubscribe-Post") == (
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"
    )
    assert logical_header(raw, b"List-Id") == b"List-Id: Nyhedsbrev <nyhedsbrev.newsletter.test>"
    assert re.fullmatch(
        rb"Message-ID: <[^<>@\s]+@newsletter\.test>", logical_header(raw, b"Message-ID")
    )
    assert logical_header(raw, b"Date").startswith(b"Date: ")
    assert message["Date"].datetime is not None

    # Every header line is 7-bit; the Danish name is in the (encoded) body.
    for line in header_block(raw):
        assert line.isascii(), line
    assert "Rita Læser" in text_of(message)


def test_welcome_mail_lines_and_body_encodings_are_safe(
    app: Flask,
    make_list: Callable[..., MailingList],
    subscribed: Callable[..., EmailMessage],
    smtp_server: SMTPServer,
) -> None:
    # A consent text far longer than one SMTP line may be, with Danish letters.
    long_text = "Jeg giver samtykke til at modtage nyhedsbreve på e-mail om æbler og øl. " * 40
    make_list(consent_text=long_text, default=True)
    welcome = subscribed("longtext@example.org")
    raw = smtp_server.recorder.received[-1].raw

    for line in raw.split(b"\r\n"):
        assert len(line) <= 998, line[:80]
    assert raw.isascii()  # 7-bit clean: no 8BITMIME needed at any hop
    leaves = [p for p in welcome.walk() if not p.is_multipart()]
    assert {p.get_content_type() for p in leaves} == {"text/plain", "text/html"}
    for part in leaves:
        assert part["Content-Transfer-Encoding"] in ("quoted-printable", "7bit")
    assert long_text.strip() in " ".join(text_of(welcome).split())
    assert "æbler og øl" in html_of(welcome)


def test_list_unsubscribe_offers_mailto_when_configured(
    app_factory: Callable[..., Flask], smtp_server: SMTPServer
) -> None:
    mailto_app = app_factory(MAIL_UNSUBSCRIBE_MAILTO="unsubscribe@newsletter.test")
    with mailto_app.app_context():
        create_list("nyhedsbrev", "Nyhedsbrev", DEFAULT_CONSENT_TEXT, default=True)
        client = mailto_app.test_client()
        response = client.post(
            "/subscribe",
            data={"email": "mailto@example.org"},
            headers={"Origin": "http://newsletter.test"},
        )
        assert response.status_code == 200
        db.session.commit()
        run_worker(mailto_app, threading.Event(), once=True)
        (confirmation,) = smtp_server.messages
        assert client.post(link_path(confirmation, "confirm")).status_code == 200
        db.session.commit()
        run_worker(mailto_app, threading.Event(), once=True)

    confirm_raw, welcome_raw = (r.raw for r in smtp_server.recorder.received)
    assert b"List-Unsubscribe" not in confirm_raw  # transactional mail: no list headers
    unsubscribe = logical_header(welcome_raw, b"List-Unsubscribe")
    assert re.fullmatch(
        rb"List-Unsubscribe: <http://newsletter\.test/unsubscribe/[\w.\-]+>, "
        rb"<mailto:unsubscribe@newsletter\.test\?subject=unsubscribe>",
        unsubscribe,
    )
    assert b"=?" not in unsubscribe
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in welcome_raw


def test_confirmation_mail_is_transactional_without_list_headers(
    default_list: MailingList, post_form: PostForm, deliver: Deliver, smtp_server: SMTPServer
) -> None:
    queue_signup(post_form, "transactional@example.org")
    (confirmation,) = deliver()
    raw = smtp_server.recorder.received[-1].raw

    assert confirmation["List-Unsubscribe"] is None
    assert confirmation["List-Unsubscribe-Post"] is None
    assert b"List-Unsubscribe" not in raw
    assert confirmation["Message-ID"].endswith("@newsletter.test>")
    assert confirmation["Date"]
    for line in raw.split(b"\r\n"):
        assert len(line) <= 998


def test_non_ascii_list_name_does_not_break_the_welcome_mail(
    make_list: Callable[..., MailingList],
    subscribed: Callable[..., EmailMessage],
    smtp_server: SMTPServer,
) -> None:
    """A Danish list name ends up in List-Id; the mail must still be sendable."""
    make_list(slug="kunder-fyn", name="Kunder på Fyn", default=True)
    welcome = subscribed("fyn@example.org")

    assert str(welcome["List-Id"]) == "Kunder på Fyn <kunder-fyn.newsletter.test>"
    raw = smtp_server.recorder.received[-1].raw
    for line in header_block(raw):
        assert line.isascii(), line
    unsubscribe = logical_header(raw, b"List-Unsubscribe")
    assert unsubscribe.startswith(b"List-Unsubscribe: <http://newsletter.test/unsubscribe/")
    assert b"=?" not in unsubscribe


# --- language --------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "da"])
def test_mail_is_rendered_in_the_subscribers_language(
    default_list: MailingList,
    post_form: PostForm,
    deliver: Deliver,
    locale: str,
) -> None:
    queue_signup(post_form, f"lang-{locale}@example.org")
    db.session.execute(update(Subscriber).values(locale=locale))
    db.session.commit()

    (mail,) = deliver()
    assert f'<html lang="{locale}">' in html_of(mail)
    assert "/confirm/" in text_of(mail)
    assert only_row().status == OutboxStatus.SENT


def test_api_signup_language_reaches_the_mail(
    default_list: MailingList, client: FlaskClient, deliver: Deliver
) -> None:
    response = client.post(
        "/api/v1/subscriptions", json={"email": "english@example.org", "locale": "en"}
    )
    assert response.status_code == 202
    (mail,) = deliver()
    assert '<html lang="en">' in html_of(mail)


# --- the command ---------------------------------------------------------------------


def test_worker_command_once_sends_what_is_queued(
    default_list: MailingList,
    post_form: PostForm,
    runner: FlaskCliRunner,
    smtp_server: SMTPServer,
) -> None:
    queue_signup(post_form, "cli-one@example.org")
    queue_signup(post_form, "cli-two@example.org")
    db.session.commit()

    result = runner.invoke(args=["worker", "--once"])

    assert result.exit_code == 0, result.output
    assert "worker" in result.output
    assert sorted(recipients(smtp_server.recorder.received)) == [
        "cli-one@example.org",
        "cli-two@example.org",
    ]
    assert {r.status for r in rows()} == {OutboxStatus.SENT}
    # Nothing left: a second run sends nothing more.
    assert runner.invoke(args=["worker", "--once"]).exit_code == 0
    assert len(smtp_server.recorder.received) == 2


# --- one bad mail never holds up the others ------------------------------------------


def test_address_needing_smtputf8_is_delivered_with_smtputf8(
    default_list: MailingList, post_form: PostForm, deliver: Deliver, smtp_server: SMTPServer
) -> None:
    """A non-ASCII local part is sent with the SMTPUTF8 extension, headers in UTF-8."""
    queue_signup(post_form, "søren@example.org")

    (mail,) = deliver()

    received = smtp_server.recorder.received[-1]
    assert received.rcpt_tos == ["søren@example.org"]
    assert "To: søren@example.org".encode() in received.raw
    assert str(mail["To"]) == "søren@example.org"
    (row,) = rows()
    assert row.status == OutboxStatus.SENT


def test_address_needing_smtputf8_fails_alone_when_the_relay_lacks_it(
    default_list: MailingList, post_form: PostForm, deliver: Deliver, smtp_server: SMTPServer
) -> None:
    """Without SMTPUTF8 at the relay the mail cannot go out: that row fails with the
    reason, and the rest of the batch still goes over the same connection."""
    smtp_server.restart(smtputf8=False)
    queue_signup(post_form, "ascii-one@example.org")
    queue_signup(post_form, "søren@example.org")
    queue_signup(post_form, "ascii-two@example.org")

    mails = deliver()

    assert sorted(str(m["To"]) for m in mails) == [
        "ascii-one@example.org",
        "ascii-two@example.org",
    ]
    assert smtp_server.recorder.connections == 1
    bad = next(r for r in rows() if r.subscriber_id == subscriber_id("søren@example.org"))
    assert bad.status == OutboxStatus.FAILED
    assert bad.lease_until is None
    assert bad.last_error is not None
    assert "SMTPUTF8" in bad.last_error


def test_a_mail_that_cannot_be_rendered_backs_off_without_blocking_the_batch(
    app: Flask,
    default_list: MailingList,
    post_form: PostForm,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    app.config["OUTBOX_RETRY_BASE_SECONDS"] = 60
    app.config["OUTBOX_MAX_ATTEMPTS"] = 2
    for email in ("good-a@example.org", "broken@example.org", "good-b@example.org"):
        queue_signup(post_form, email)
    broken = subscriber_id("broken@example.org")
    bad_id = next(r.id for r in rows() if r.subscriber_id == broken)
    set_rows([bad_id], kind=OutboxKind.WELCOME, payload={})  # a corrupt row

    mails = deliver()

    assert sorted(str(m["To"]) for m in mails) == ["good-a@example.org", "good-b@example.org"]
    bad = next(r for r in rows() if r.id == bad_id)
    assert bad.status == OutboxStatus.QUEUED
    assert bad.attempts == 1
    assert bad.lease_until is None  # not stuck under a lease
    assert bad.last_error is not None
    assert "KeyError" in bad.last_error
    assert bad.next_attempt_at > utcnow() + timedelta(seconds=50)

    make_due([bad_id])
    assert deliver() == []
    bad = next(r for r in rows() if r.id == bad_id)
    assert bad.status == OutboxStatus.FAILED
    assert bad.attempts == 2


def test_an_unexpected_send_error_retries_that_mail_and_the_rest_still_go(
    app: Flask,
    default_list: MailingList,
    post_form: PostForm,
    deliver: Deliver,
    smtp_server: SMTPServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app.config["OUTBOX_RETRY_BASE_SECONDS"] = 60
    real_send = transport.send_transaction

    def send_transaction(
        host: smtplib.SMTP, sender: str, recipient: str, *args: Any, **kwargs: Any
    ) -> Any:
        if recipient == "poison@example.org":
            raise RuntimeError("boom")
        return real_send(host, sender, recipient, *args, **kwargs)

    monkeypatch.setattr(transport, "send_transaction", send_transaction)
    for email in ("one@example.org", "poison@example.org", "two@example.org", "three@example.org"):
        queue_signup(post_form, email)

    mails = deliver()

    assert sorted(str(m["To"]) for m in mails) == [
        "one@example.org",
        "three@example.org",
        "two@example.org",
    ]
    poison = next(r for r in rows() if r.subscriber_id == subscriber_id("poison@example.org"))
    assert poison.status == OutboxStatus.QUEUED
    assert poison.attempts == 1
    assert poison.lease_until is None
    assert poison.last_error is not None
    assert "boom" in poison.last_error
    others = [r for r in rows() if r.id != poison.id]
    assert {r.status for r in others} == {OutboxStatus.SENT}
