"""The preference page /manage/<token>: lists, language, unsubscribe from all.

The manage link is in every list mail and may be forwarded, so it can withdraw
consent at once but never grant it: a newly ticked list goes through double
opt-in again. GET changes nothing; no page sets a cookie.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import EmailMessage

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
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

from .fixtures.ledger import seal_and_verify
from .fixtures.mailflow import Deliver, link_path, text_of
from .fixtures.preferences import Lists, statuses


def events() -> list[ConsentEvent]:
    """Every ledger event in order."""
    db.session.commit()
    return list(db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq)))


def snapshot() -> tuple[int, int, list[tuple[str, str, str]]]:
    """Everything a page view could change: events, outbox, subscriber state."""
    db.session.commit()
    event_count = db.session.scalar(select(func.count()).select_from(ConsentEvent)) or 0
    outbox_count = db.session.scalar(select(func.count()).select_from(OutboxMessage)) or 0
    state = [
        (s.email_key, s.locale, str(sub.status))
        for s, sub in db.session.execute(
            select(Subscriber, Subscription)
            .join(Subscription)
            .order_by(Subscriber.id, Subscription.list_id)
        )
    ]
    db.session.commit()
    return event_count, outbox_count, state


def checked_boxes(html: str) -> set[int]:
    """The list ids whose checkbox the page shows ticked."""
    ticked = set()
    for tag in re.findall(r"<input[^>]*name=\"lists\"[^>]*>", html):
        if re.search(r"\bchecked\b", tag):
            ticked.add(int(re.search(r'value="(\d+)"', tag).group(1)))  # type: ignore[union-attr]
    return ticked


def save(
    client: FlaskClient, path: str, wanted: list[MailingList], locale: str = "en"
) -> TestResponse:
    """Submit the preference form as the page's own button does. The reader signed up
    from an English page (conftest.EnglishClient), so English is their language."""
    return client.post(
        path, data={"action": "save", "lists": [str(m.id) for m in wanted], "locale": locale}
    )


# -- GET ----------------------------------------------------------------------------------------


def test_get_shows_each_open_list_with_its_status_and_changes_nothing(
    client: FlaskClient,
    lists: Lists,
    manage_path: str,
    subscribe: Callable[..., EmailMessage],
    deliver: Deliver,
) -> None:
    # Make a pending list too: tick tech, do not confirm.
    assert save(client, manage_path, [lists["nyhedsbrev"], lists["tech"]]).status_code == 200
    deliver()
    before = snapshot()

    page = client.get(manage_path)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "reader@example.org" in html
    for mailing_list in lists.values():
        assert mailing_list.name in html
        assert f'value="{mailing_list.id}"' in html
    assert checked_boxes(html) == {lists["nyhedsbrev"].id, lists["tech"].id}
    # The pending list says so; the active one does not.
    tech_item = html.split(f'id="list-{lists["tech"].id}"', 1)[1].split("</li>", 1)[0]
    news_item = html.split(f'id="list-{lists["nyhedsbrev"].id}"', 1)[1].split("</li>", 1)[0]
    assert "awaiting your confirmation" in tech_item
    assert "awaiting your confirmation" not in news_item
    assert 'action" value="unsubscribe_all"' in html
    assert 'option value="en" selected' in html  # the language they signed up in

    assert "Set-Cookie" not in page.headers
    assert page.headers["Cache-Control"] == "no-store"
    assert snapshot() == before
    assert client.get(manage_path).status_code == 200  # twice: still nothing
    assert snapshot() == before


def test_get_does_not_show_archived_lists(
    client: FlaskClient, lists: Lists, manage_path: str
) -> None:
    db.session.execute(
        sa.update(MailingList)
        .where(MailingList.id == lists["events"].id)
        .values(archived_at=sa.func.now())
    )
    db.session.commit()
    html = client.get(manage_path).get_data(as_text=True)
    assert "Arrangementer" not in html
    assert "Tech notes" in html


@pytest.mark.parametrize("token", ["garbage", "x" * 600])
def test_bad_token_is_refused(client: FlaskClient, lists: Lists, token: str) -> None:
    response = client.get(f"/manage/{token}")
    assert response.status_code == 400
    assert "Set-Cookie" not in response.headers


def test_unsubscribe_token_does_not_open_the_manage_page(
    client: FlaskClient, lists: Lists, subscribed: Callable[..., EmailMessage]
) -> None:
    welcome = subscribed("scope@example.org")
    token = link_path(welcome, "unsubscribe").rsplit("/", 1)[1]
    assert client.get(f"/manage/{token}").status_code == 400


# -- lists ------------------------------------------------------------------------------------


def test_unticking_a_list_withdraws_at_once(
    client: FlaskClient, lists: Lists, manage_path: str, deliver: Deliver
) -> None:
    before = len(events())
    response = save(client, manage_path, [])
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert "Your choices are saved." in response.get_data(as_text=True)
    assert statuses("reader@example.org") == {"nyhedsbrev": SubscriptionStatus.UNSUBSCRIBED}

    new = events()[before:]
    assert [(e.event, e.channel, e.list_id) for e in new] == [
        ("withdrawn", "manage_page", lists["nyhedsbrev"].id)
    ]
    assert new[0].consent_text_id == lists["nyhedsbrev"].consent_texts[0].id
    assert deliver() == []  # withdrawing sends nothing
    assert seal_and_verify().ok


def test_ticking_a_new_list_needs_confirmation_again(
    client: FlaskClient, lists: Lists, manage_path: str, deliver: Deliver
) -> None:
    before = len(events())
    response = save(client, manage_path, [lists["nyhedsbrev"], lists["tech"]])
    assert response.status_code == 200
    assert "mail to confirm" in response.get_data(as_text=True)
    # Pending, not active: the manage link never grants consent by itself.
    assert statuses("reader@example.org") == {
        "nyhedsbrev": SubscriptionStatus.ACTIVE,
        "tech": SubscriptionStatus.PENDING,
    }
    new = events()[before:]
    assert [(e.event, e.channel, e.list_id) for e in new] == [
        ("requested", "manage_page", lists["tech"].id)
    ]
    assert new[0].consent_text_id == lists["tech"].consent_texts[0].id

    (confirmation,) = deliver()
    assert "reader@example.org" in str(confirmation["To"])
    assert confirmation["List-Unsubscribe"] is None  # transactional
    assert "Ja tak til tekniske noter." in text_of(confirmation)
    assert "Tech notes" in text_of(confirmation)

    assert client.post(link_path(confirmation, "confirm")).status_code == 200
    assert statuses("reader@example.org") == {
        "nyhedsbrev": SubscriptionStatus.ACTIVE,
        "tech": SubscriptionStatus.ACTIVE,
    }
    assert [(e.event, e.channel, e.list_id) for e in events()[before + 1 :]] == [
        ("confirmed", "confirm_link", lists["tech"].id)
    ]
    (receipt,) = deliver()
    assert "Tech notes" in str(receipt["Subject"])
    assert seal_and_verify().ok


def test_resubscribing_a_left_list_needs_confirmation_again(
    client: FlaskClient, lists: Lists, manage_path: str, deliver: Deliver
) -> None:
    save(client, manage_path, [])
    assert statuses("reader@example.org") == {"nyhedsbrev": SubscriptionStatus.UNSUBSCRIBED}
    save(client, manage_path, [lists["nyhedsbrev"]])
    assert statuses("reader@example.org") == {"nyhedsbrev": SubscriptionStatus.PENDING}
    (confirmation,) = deliver()
    client.post(link_path(confirmation, "confirm"))
    assert statuses("reader@example.org") == {"nyhedsbrev": SubscriptionStatus.ACTIVE}


def test_saving_unchanged_choices_records_nothing(
    client: FlaskClient, lists: Lists, manage_path: str, deliver: Deliver
) -> None:
    before = snapshot()
    assert save(client, manage_path, [lists["nyhedsbrev"]]).status_code == 200
    assert snapshot() == before
    assert deliver() == []


def test_a_malformed_list_value_changes_nothing(
    client: FlaskClient, lists: Lists, manage_path: str
) -> None:
    """A value that is not a list id (a slug, say) must not read as "no lists ticked"."""
    before = snapshot()
    response = client.post(
        manage_path, data={"action": "save", "lists": ["nyhedsbrev"], "locale": "da"}
    )
    assert response.status_code == 400
    assert 'id="lists-error"' in response.get_data(as_text=True)
    assert snapshot() == before
    assert statuses("reader@example.org") == {"nyhedsbrev": SubscriptionStatus.ACTIVE}


# -- language ---------------------------------------------------------------------------------


def test_changing_the_language_is_recorded(
    app: Flask, client: FlaskClient, lists: Lists, manage_path: str
) -> None:
    before = len(events())
    response = save(client, manage_path, [lists["nyhedsbrev"]], locale="da")
    assert response.status_code == 200
    subscriber = db.session.scalars(select(Subscriber)).one()
    assert subscriber.locale == "da"
    new = events()[before:]
    assert [(e.event, e.channel, e.details) for e in new] == [
        ("preferences_changed", "manage_page", {"locale": "da"})
    ]
    assert new[0].list_id is None
    assert statuses("reader@example.org") == {"nyhedsbrev": SubscriptionStatus.ACTIVE}
    # The page now speaks Danish, whatever the browser asks for, and shows Danish
    # as chosen. (A fresh app context, as in production.)
    db.session.commit()
    with app.app_context():
        page = client.get(manage_path).get_data(as_text=True)
    assert 'option value="da" selected' in page
    assert '<html lang="da">' in page
    assert seal_and_verify().ok


@pytest.mark.parametrize("locale", ["fr", "xx-evil", "EN"])
def test_an_unsupported_language_is_refused_and_changes_nothing(
    client: FlaskClient, lists: Lists, manage_path: str, locale: str
) -> None:
    before = snapshot()
    # Unticking the list in the same submission must not take effect either.
    response = save(client, manage_path, [], locale=locale)
    assert response.status_code == 400
    assert 'role="alert"' in response.get_data(as_text=True)
    assert snapshot() == before
    assert db.session.scalars(select(Subscriber)).one().locale == "en"


# -- unsubscribe from all -----------------------------------------------------------------------


def test_unsubscribe_from_all_withdraws_every_active_list(
    client: FlaskClient, lists: Lists, manage_path: str, deliver: Deliver
) -> None:
    save(client, manage_path, [lists["nyhedsbrev"], lists["tech"], lists["events"]])
    (confirmation,) = deliver()
    client.post(link_path(confirmation, "confirm"))
    deliver()
    assert set(statuses("reader@example.org").values()) == {SubscriptionStatus.ACTIVE}
    before = len(events())

    response = client.post(manage_path, data={"action": "unsubscribe_all"})
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert statuses("reader@example.org") == dict.fromkeys(
        ("nyhedsbrev", "tech", "events"), SubscriptionStatus.UNSUBSCRIBED
    )
    new = events()[before:]
    assert sorted((e.event, e.channel, e.list_id) for e in new) == sorted(
        ("withdrawn", "manage_page", m.id) for m in lists.values()
    )
    # Idempotent: again, nothing more is recorded.
    assert client.post(manage_path, data={"action": "unsubscribe_all"}).status_code == 200
    assert len(events()) == before + 3
    assert deliver() == []
    assert seal_and_verify().ok


def test_unsubscribe_from_all_also_cancels_pending_lists(
    client: FlaskClient, lists: Lists, manage_path: str
) -> None:
    save(client, manage_path, [lists["nyhedsbrev"], lists["tech"]])
    assert statuses("reader@example.org")["tech"] == SubscriptionStatus.PENDING
    client.post(manage_path, data={"action": "unsubscribe_all"})
    assert statuses("reader@example.org") == {
        "nyhedsbrev": SubscriptionStatus.UNSUBSCRIBED,
        "tech": SubscriptionStatus.UNSUBSCRIBED,
    }


# -- erased subscribers -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_manage_link_of_an_erased_subscriber_is_gone(
    client: FlaskClient, lists: Lists, manage_path: str, method: str
) -> None:
    subscriber = db.session.scalars(select(Subscriber)).one()
    db.session.delete(subscriber)
    db.session.commit()
    before = snapshot()

    response = client.open(manage_path, method=method, data={"action": "unsubscribe_all"})
    assert response.status_code == 404
    assert "no longer in use" in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    assert snapshot() == before
    assert seal_and_verify().ok
