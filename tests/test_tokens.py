"""Link tokens: no address inside, tamper-proof, scoped by salt, expiring, and key rotation.

Every link in a mail (/confirm/, /unsubscribe/, /manage/) is authorised only by
its signed token. These tests use tokens from real mails, sent by the real
worker to the loopback SMTP server, and check both the answer and that the
database did not change when a token is refused.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from newsletter.extensions import db
from newsletter.models import (
    ConsentEvent,
    MailingList,
    OutboxMessage,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.tokens import InvalidToken, Purpose, make_token, read_token

from .conftest import TEST_SECRET
from .fixtures.mailflow import LINK, html_of, link_path, text_of

ADDRESS = "Token.Reader@Example.org"
EMAIL_KEY = "token.reader@example.org"
NEW_SECRET = "a-brand-new-secret-key-after-rotation-9876543210"
ROUTES = ("confirm", "unsubscribe", "manage")
# The POST body that would change something if the token were accepted.
CHANGING_POST: dict[str, dict[str, str]] = {
    "confirm": {},
    "unsubscribe": {"List-Unsubscribe": "One-Click"},
    "manage": {"action": "unsubscribe_all"},
}


# --- helpers -----------------------------------------------------------------


def payload_bytes(token: str) -> bytes:
    """The decoded payload part of an itsdangerous URL-safe token (decompressed)."""
    compressed = token.startswith(".")
    raw = base64_decode(token.lstrip(".").split(".")[0])
    return zlib.decompress(raw) if compressed else raw


def link_tokens(message: EmailMessage) -> list[tuple[str, str]]:
    """(kind, token) for every link token in a mail: text, HTML and headers."""
    sources = [text_of(message), html_of(message), str(message.get("List-Unsubscribe", ""))]
    found = []
    for source in sources:
        for url in LINK.findall(source):
            match = re.match(r"^/(confirm|unsubscribe|manage)/([^/?#]+)", urlsplit(url).path)
            if match:
                found.append((match.group(1), match.group(2)))
    return found


def db_state() -> dict[str, Any]:
    """Everything a link could change, read in a transaction of its own."""
    db.session.commit()
    state = {
        "subscribers": db.session.scalar(select(func.count(Subscriber.id))),
        "events": db.session.scalar(select(func.count(ConsentEvent.id))),
        "outbox": db.session.scalar(select(func.count(OutboxMessage.id))),
        "subscriptions": sorted(
            (key, list_id, str(status))
            for key, list_id, status in db.session.execute(
                select(Subscriber.email_key, Subscription.list_id, Subscription.status).join(
                    Subscription
                )
            )
        ),
        "locales": sorted(db.session.scalars(select(Subscriber.locale))),
    }
    db.session.commit()  # SQLite: never hold the write lock across a request
    return state


def status_of(email_key: str) -> SubscriptionStatus:
    """The one subscription's status for an address."""
    db.session.commit()
    status = db.session.scalars(
        select(Subscription.status).join(Subscriber).where(Subscriber.email_key == email_key)
    ).one()
    db.session.commit()
    return status


def token_key_of(email_key: str) -> str:
    """The random key the subscriber's links name."""
    db.session.commit()
    key = db.session.scalars(
        select(Subscriber.token_key).where(Subscriber.email_key == email_key)
    ).one()
    db.session.commit()
    return key


def assert_invalid_page(response: TestResponse) -> None:
    """The clear "link is not valid" page: 400, no cookie, a way back to the form."""
    assert response.status_code == 400, response.get_data(as_text=True)[:500]
    body = response.get_data(as_text=True)
    assert "This link is not valid" in body
    assert 'href="/subscribe"' in body
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


class ShiftedClock:
    """Stands in for the ``time`` module inside itsdangerous.timed (it calls ``time.time()``)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        """The real time plus the offset."""
        return time.time() + self.offset


def shift_token_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move itsdangerous's clock (signing and verifying), and nothing else, by ``seconds``."""
    monkeypatch.setattr("itsdangerous.timed.time", ShiftedClock(seconds))


@pytest.fixture(autouse=True)
def english(client: FlaskClient) -> None:
    """Ask for English pages, so the assertions on text hold whatever translations exist."""
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"


@pytest.fixture
def pending(default_list: MailingList, subscribe: Callable[..., EmailMessage]) -> EmailMessage:
    """A pending subscriber; returns their confirmation mail."""
    return subscribe(ADDRESS)


# --- no address in tokens --------------------------------------------------------


def test_confirm_token_payload_names_the_random_key_not_the_address(
    default_list: MailingList, pending: EmailMessage
) -> None:
    token = link_path(pending, "confirm").removeprefix("/confirm/")
    payload = payload_bytes(token)
    # The payload is exactly the subscriber's random key and the lists: nothing else.
    assert json.loads(payload) == {"s": token_key_of(EMAIL_KEY), "l": [default_list.id]}
    for text in (payload.decode().lower(), unquote(token).lower()):
        assert "@" not in text
        assert "token.reader" not in text
        assert "example.org" not in text


def test_no_link_token_in_real_mails_contains_the_address(
    client: FlaskClient,
    default_list: MailingList,
    pending: EmailMessage,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    assert client.post(link_path(pending, "confirm")).status_code == 200
    (welcome,) = deliver()
    found = link_tokens(pending) + link_tokens(welcome)
    assert {kind for kind, _ in found} == {"confirm", "unsubscribe", "manage"}
    for kind, token in found:
        url_text = unquote(token).lower()
        payload = payload_bytes(unquote(token)).decode()
        assert "token.reader" not in url_text, kind
        assert "token.reader" not in payload.lower(), kind
        assert "@" not in payload, kind
        assert "example.org" not in payload.lower(), kind
        assert json.loads(payload)["s"] == token_key_of(EMAIL_KEY)


# --- tampered tokens --------------------------------------------------------------


def _change_one_character(token: str, index: int) -> str:
    """Swap one base64 character for one that differs in its high bits too."""
    old = token[index]
    new = "A" if old != "A" else "z"
    return token[:index] + new + token[index + 1 :]


TAMPERINGS: dict[str, Callable[[str], str]] = {
    "payload-character": lambda t: _change_one_character(t, 1 if t.startswith(".") else 0),
    "timestamp-character": lambda t: _change_one_character(t, t.rindex(".") - 2),
    "signature-character": lambda t: _change_one_character(t, t.rindex(".") + 1),
    "truncated": lambda t: t[:-1],
    "cut-in-half": lambda t: t[: len(t) // 2],
    "garbage": lambda t: "this-is-not-a-token",
    "dots-only": lambda t: "...",
    "over-512-characters": lambda t: t + "A" * (520 - len(t)),
}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_tampered_token_gets_400_and_changes_nothing(
    client: FlaskClient,
    default_list: MailingList,
    pending: EmailMessage,
    tampering: str,
    route: str,
    method: str,
) -> None:
    if route == "confirm":
        genuine = link_path(pending, "confirm").removeprefix("/confirm/")
    else:
        purpose = Purpose.UNSUBSCRIBE if route == "unsubscribe" else Purpose.MANAGE
        genuine = make_token(purpose, token_key_of(EMAIL_KEY), (default_list.id,))
    tampered = TAMPERINGS[tampering](genuine)
    assert tampered != genuine
    if tampering == "over-512-characters":
        assert len(tampered) > 512
    before = db_state()

    response = client.open(f"/{route}/{tampered}", method=method, data=CHANGING_POST[route])

    assert_invalid_page(response)
    assert db_state() == before
    # Control: the genuine token with the same request does change the state.
    assert client.post(f"/{route}/{genuine}", data=CHANGING_POST[route]).status_code == 200
    assert db_state() != before


def test_validly_signed_token_with_a_malformed_payload_is_invalid(app: Flask) -> None:
    """A good signature over the wrong shape (e.g. from an older format) is still refused."""
    for data in ({"s": 5}, {"x": "y"}, ["s"], {"s": "key", "l": ["1"]}, {"s": "key", "l": 1}):
        token = URLSafeTimedSerializer(TEST_SECRET, salt=Purpose.MANAGE).dumps(data)
        with pytest.raises(InvalidToken):
            read_token(Purpose.MANAGE, str(token))


# --- expiry -----------------------------------------------------------------------


def test_expired_confirm_link_offers_exactly_one_new_mail_that_works(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    pending: EmailMessage,
    deliver: Callable[[], list[EmailMessage]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old_path = link_path(pending, "confirm")
    later = app.config["CONFIRM_MAX_AGE"] + 3600
    # It is now an hour past the link's lifetime: move the token clock, and make
    # the record of the first confirmation mail just as old.
    shift_token_clock(monkeypatch, later)
    subscriber = db.session.scalars(
        select(Subscriber).where(Subscriber.email_key == EMAIL_KEY)
    ).one()
    assert subscriber.last_confirmation_sent_at is not None
    subscriber.last_confirmation_sent_at -= timedelta(seconds=later)
    db.session.commit()
    before = db_state()

    page = client.get(old_path)
    assert page.status_code == 410
    body = page.get_data(as_text=True)
    assert "This link has expired" in body
    assert '<form method="post">' in body
    assert 'name="resend" value="1"' in body
    assert "Set-Cookie" not in page.headers
    # The old page's confirm button (no "resend") neither confirms nor sends.
    stale = client.post(old_path)
    assert stale.status_code == 410
    assert 'name="resend"' in stale.get_data(as_text=True)
    assert db_state() == before
    assert status_of(EMAIL_KEY) == SubscriptionStatus.PENDING

    resent = client.post(old_path, data={"resend": "1"})
    assert resent.status_code == 410
    assert 'role="status"' in resent.get_data(as_text=True)
    assert "Set-Cookie" not in resent.headers
    assert db_state()["outbox"] == before["outbox"] + 1
    mails = deliver()
    assert len(mails) == 1
    assert EMAIL_KEY in str(mails[0]["To"]).lower()
    new_path = link_path(mails[0], "confirm")
    assert new_path != old_path

    # A second resend within CONFIRM_RESEND_WINDOW queues nothing more.
    again = client.post(old_path, data={"resend": "1"})
    assert again.status_code == 410
    assert db_state()["outbox"] == before["outbox"] + 1
    assert deliver() == []

    # The new link works (at the same, shifted, time) and the old one still does not.
    assert client.get(new_path).status_code == 200
    assert client.post(new_path).status_code == 200
    assert status_of(EMAIL_KEY) == SubscriptionStatus.ACTIVE
    assert client.post(old_path).status_code == 410


def test_confirm_link_just_inside_its_lifetime_still_works(
    app: Flask,
    client: FlaskClient,
    pending: EmailMessage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shift_token_clock(monkeypatch, app.config["CONFIRM_MAX_AGE"] - 60)
    assert client.post(link_path(pending, "confirm")).status_code == 200
    assert status_of(EMAIL_KEY) == SubscriptionStatus.ACTIVE


def test_unsubscribe_and_manage_links_never_expire(
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    welcome = subscribed(ADDRESS)
    shift_token_clock(monkeypatch, 10 * 365 * 24 * 3600)
    assert client.get(link_path(welcome, "manage")).status_code == 200
    assert client.get(link_path(welcome, "unsubscribe")).status_code == 200
    assert client.post(link_path(welcome, "unsubscribe")).status_code == 200
    assert status_of(EMAIL_KEY) == SubscriptionStatus.UNSUBSCRIBED


# --- salts ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    ("purpose", "route"),
    [
        (Purpose.UNSUBSCRIBE, "confirm"),
        (Purpose.MANAGE, "confirm"),
        (Purpose.CONFIRM, "unsubscribe"),
        (Purpose.MANAGE, "unsubscribe"),
        (Purpose.CONFIRM, "manage"),
        (Purpose.UNSUBSCRIBE, "manage"),
    ],
)
def test_token_for_another_purpose_is_refused(
    client: FlaskClient,
    default_list: MailingList,
    pending: EmailMessage,
    purpose: str,
    route: str,
    method: str,
) -> None:
    token = make_token(purpose, token_key_of(EMAIL_KEY), (default_list.id,))
    before = db_state()
    response = client.open(f"/{route}/{token}", method=method, data=CHANGING_POST[route])
    assert_invalid_page(response)
    assert db_state() == before
    assert status_of(EMAIL_KEY) == SubscriptionStatus.PENDING


def test_tokens_from_real_mails_only_open_their_own_route(
    client: FlaskClient,
    default_list: MailingList,
    pending: EmailMessage,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    confirm_token = link_path(pending, "confirm").removeprefix("/confirm/")
    assert client.post(f"/confirm/{confirm_token}").status_code == 200
    (welcome,) = deliver()
    before = db_state()
    assert status_of(EMAIL_KEY) == SubscriptionStatus.ACTIVE

    for route in ("unsubscribe", "manage"):
        assert_invalid_page(client.get(f"/{route}/{confirm_token}"))
        assert_invalid_page(client.post(f"/{route}/{confirm_token}", data=CHANGING_POST[route]))
    for kind in ("unsubscribe", "manage"):
        token = link_path(welcome, kind).removeprefix(f"/{kind}/")
        assert_invalid_page(client.get(f"/confirm/{token}"))
        assert_invalid_page(client.post(f"/confirm/{token}"))
    assert db_state() == before
    assert status_of(EMAIL_KEY) == SubscriptionStatus.ACTIVE


# --- SECRET_KEY rotation ----------------------------------------------------------


def test_old_tokens_verify_after_rotation_only_with_the_old_key_as_fallback(
    app: Flask,
    app_factory: Callable[..., Flask],
    default_list: MailingList,
    pending: EmailMessage,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    path = link_path(pending, "confirm")  # signed with the old key (TEST_SECRET)
    rotated = app_factory(SECRET_KEY=NEW_SECRET, SECRET_KEY_FALLBACKS=[TEST_SECRET])
    forgotten = app_factory(SECRET_KEY=NEW_SECRET)
    rotated_client, forgotten_client = rotated.test_client(), forgotten.test_client()
    for c in (rotated_client, forgotten_client):
        c.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    before = db_state()

    assert_invalid_page(forgotten_client.get(path))
    assert_invalid_page(forgotten_client.post(path))
    assert db_state() == before

    assert rotated_client.get(path).status_code == 200
    assert rotated_client.post(path).status_code == 200
    assert status_of(EMAIL_KEY) == SubscriptionStatus.ACTIVE

    # The welcome mail's links (old key too) behave the same way.
    (welcome,) = deliver()
    unsubscribe = link_path(welcome, "unsubscribe")
    assert_invalid_page(forgotten_client.post(unsubscribe))
    assert status_of(EMAIL_KEY) == SubscriptionStatus.ACTIVE
    assert rotated_client.post(unsubscribe).status_code == 200
    assert status_of(EMAIL_KEY) == SubscriptionStatus.UNSUBSCRIBED


def test_rotated_app_signs_with_the_new_key(app: Flask, app_factory: Callable[..., Flask]) -> None:
    rotated = app_factory(SECRET_KEY=NEW_SECRET, SECRET_KEY_FALLBACKS=[TEST_SECRET])
    with rotated.app_context():
        token = make_token(Purpose.MANAGE, "some-random-key")
    new_only = URLSafeTimedSerializer(NEW_SECRET, salt=Purpose.MANAGE)
    assert new_only.loads(token) == {"s": "some-random-key"}
    # The app that only knows the old key refuses it.
    with pytest.raises(InvalidToken):
        read_token(Purpose.MANAGE, token)
