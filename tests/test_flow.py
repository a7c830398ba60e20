"""The core path end to end: signup, confirmation mail, confirm, welcome, one-click unsubscribe."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import ConsentEvent, MailingList, Subscription, SubscriptionStatus

from .fixtures.ledger import seal_and_verify
from .fixtures.mailflow import html_of, link_path, text_of


def status_of(email_key: str) -> SubscriptionStatus:
    from newsletter.models import Subscriber

    db.session.commit()
    subscription = db.session.scalars(
        select(Subscription).join(Subscriber).where(Subscriber.email_key == email_key)
    ).one()
    return subscription.status


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_signup_confirm_and_one_click_unsubscribe(
    client: FlaskClient,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
    encoding: str,
) -> None:
    confirmation = subscribe("Reader@Example.org", name="Rita Reader")
    # Transactional mail: no list headers.
    assert confirmation["List-Unsubscribe"] is None
    assert confirmation["To"] == "Rita Reader <Reader@example.org>" or "Reader@example.org" in str(
        confirmation["To"]
    )
    assert "Reader@example.org" not in link_path(confirmation, "confirm")
    assert status_of("reader@example.org") == SubscriptionStatus.PENDING

    confirm_path = link_path(confirmation, "confirm")
    page = client.get(confirm_path)
    assert page.status_code == 200
    assert b'<form method="post">' in page.data
    assert status_of("reader@example.org") == SubscriptionStatus.PENDING  # GET changes nothing

    assert client.post(confirm_path).status_code == 200
    assert status_of("reader@example.org") == SubscriptionStatus.ACTIVE
    assert client.post(confirm_path).status_code == 200  # idempotent
    assert status_of("reader@example.org") == SubscriptionStatus.ACTIVE

    (welcome,) = deliver()
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header_url = str(welcome["List-Unsubscribe"]).strip("<>")
    assert header_url.startswith("http://newsletter.test/unsubscribe/")
    assert welcome["List-Id"] == "Nyhedsbrev <nyhedsbrev.newsletter.test>"
    assert welcome["Message-ID"].endswith("@newsletter.test>")
    assert welcome["Date"]
    # The same unsubscribe link in both bodies; the receipt shows the consent text.
    assert header_url in text_of(welcome)
    assert header_url.replace("&", "&amp;") in html_of(welcome)
    assert default_list.consent_texts[0].text in text_of(welcome)
    assert "C.A. Olesens Gade 4" in text_of(welcome)

    path = header_url.removeprefix("http://newsletter.test")
    if encoding == "urlencoded":
        response = client.post(path, data={"List-Unsubscribe": "One-Click"})
    else:
        response = client.post(
            path,
            data={"List-Unsubscribe": "One-Click"},
            content_type="multipart/form-data",
        )
    assert response.status_code == 200  # never a redirect
    assert "Set-Cookie" not in response.headers
    assert status_of("reader@example.org") == SubscriptionStatus.UNSUBSCRIBED

    events = [
        (e.event, e.channel)
        for e in db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq))
    ]
    assert events == [
        ("requested", "form"),
        ("confirmed", "confirm_link"),
        ("withdrawn", "one_click"),
    ]
    assert seal_and_verify().ok


def test_unsubscribe_page_get_changes_nothing_and_button_unsubscribes(
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
) -> None:
    welcome = subscribed("page@example.org")
    path = link_path(welcome, "unsubscribe")
    page = client.get(path)
    assert page.status_code == 200
    assert status_of("page@example.org") == SubscriptionStatus.ACTIVE
    done = client.post(path)
    assert done.status_code == 200
    assert b"/manage/" in done.data  # links to the preference page to resubscribe
    assert status_of("page@example.org") == SubscriptionStatus.UNSUBSCRIBED
    event = db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq.desc())).first()
    assert event is not None
    assert event.channel == "unsubscribe_page"
    assert client.post(path).status_code == 200  # again: still fine


def test_old_confirmation_link_does_not_resubscribe_after_unsubscribe(
    client: FlaskClient,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    confirmation = subscribe("twice@example.org")
    confirm_path = link_path(confirmation, "confirm")
    client.post(confirm_path)
    (welcome,) = deliver()
    client.post(link_path(welcome, "unsubscribe"))
    response = client.post(confirm_path)
    assert response.status_code == 200
    assert status_of("twice@example.org") == SubscriptionStatus.UNSUBSCRIBED
    assert deliver() == []
