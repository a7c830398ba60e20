"""Signups of one address at the same moment, from several threads.

Each thread has its own app context, so its own session and connection. On
PostgreSQL the unique address key and the subscriber row lock make them take
turns; on SQLite the single writer (BEGIN IMMEDIATE) does. Either way there is
one subscriber, one confirmation mail per resend window, and an intact chain.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.models import (
    Channel,
    ConsentEvent,
    MailingList,
    OutboxMessage,
    Subscriber,
    utcnow,
)

from .fixtures.intake import SignupRequest, sign_up_now
from .fixtures.ledger import seal_and_verify
from .fixtures.threads import sign_up_from_threads

THREADS = 6


def _sign_up_at_once(app: Flask, email: str) -> None:
    sign_up_from_threads(app, lambda _number: [email], THREADS)


def _count(model: type) -> int:
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def test_new_address_at_once_gives_one_subscriber_and_one_mail(
    app: Flask, default_list: MailingList
) -> None:
    _sign_up_at_once(app, "same@example.org")
    assert _count(Subscriber) == 1
    assert _count(OutboxMessage) == 1
    assert _count(ConsentEvent) == THREADS  # every request is logged
    assert seal_and_verify().ok


def test_known_address_past_the_window_gets_one_new_mail(
    app: Flask, default_list: MailingList
) -> None:
    sign_up_now(SignupRequest(email="again@example.org", channel=Channel.API, evidence=Evidence()))
    subscriber = db.session.scalars(select(Subscriber)).one()
    window = app.config["CONFIRM_RESEND_WINDOW"]
    subscriber.last_confirmation_sent_at = utcnow() - timedelta(seconds=window + 60)
    db.session.commit()

    _sign_up_at_once(app, "again@example.org")
    assert _count(Subscriber) == 1
    assert _count(OutboxMessage) == 2  # the first mail and exactly one resend
    assert seal_and_verify().ok
