"""The confirmation-mail window (CONFIRM_RESEND_WINDOW) is per list, not per address.

A confirmation mail is withheld only when the mails queued or sent within the
window already name every list now pending: repeating a request sends nothing
new, a list that no recent mail names gets one at once. Mails are counted at
the suite's SMTP server after the real worker ran.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from newsletter.extensions import db
from newsletter.models import (
    MailingList,
    OutboxMessage,
    Subscriber,
    SubscriptionStatus,
)

from .fixtures.ledger import seal_and_verify
from .fixtures.mailflow import Deliver, link_path, text_of
from .fixtures.preferences import Lists, statuses

OWN = "http://newsletter.test"  # BASE_URL: our own origin
SENT_NOW = "We have sent you a mail to confirm the lists you added."
SENT_BEFORE = "We sent you a mail to confirm these lists a few minutes ago"


def save(client: FlaskClient, path: str, wanted: list[MailingList]) -> TestResponse:
    """Submit the preference form as its own button does."""
    response = client.post(
        path, data={"action": "save", "lists": [str(m.id) for m in wanted], "locale": "en"}
    )
    assert response.status_code == 200
    return response


def sign_up(client: FlaskClient, email: str, *slugs: str) -> TestResponse:
    """POST /subscribe from our own origin for the lists named."""
    response = client.post(
        "/subscribe", data={"email": email, "list": list(slugs)}, headers={"Origin": OWN}
    )
    assert response.status_code == 200
    return response


def window_passes(app: Flask) -> None:
    """Move every record of a confirmation mail back by the whole window."""
    shift = timedelta(seconds=app.config["CONFIRM_RESEND_WINDOW"] + 1)
    db.session.commit()
    for subscriber in db.session.scalars(select(Subscriber)):
        if subscriber.last_confirmation_sent_at is not None:
            subscriber.last_confirmation_sent_at -= shift
    for message in db.session.scalars(select(OutboxMessage)):
        message.created_at -= shift
    db.session.commit()


# -- the preference page -------------------------------------------------------------


def test_leaving_and_rejoining_a_list_sends_one_confirmation_per_window(
    app: Flask, client: FlaskClient, lists: Lists, manage_path: str, deliver: Deliver
) -> None:
    news, tech = lists["nyhedsbrev"], lists["tech"]
    assert SENT_NOW in save(client, manage_path, [news, tech]).get_data(as_text=True)
    for _ in range(3):  # before the worker ran: the first mail is still queued
        save(client, manage_path, [news])
        page = save(client, manage_path, [news, tech]).get_data(as_text=True)
        assert SENT_BEFORE in page
        assert SENT_NOW not in page
    (first,) = deliver()
    for _ in range(3):  # and after it was sent
        save(client, manage_path, [news])
        assert SENT_BEFORE in save(client, manage_path, [news, tech]).get_data(as_text=True)
    assert deliver() == []

    # The one mail's link confirms the list, which is pending again.
    assert client.post(link_path(first, "confirm")).status_code == 200
    assert statuses("reader@example.org")["tech"] == SubscriptionStatus.ACTIVE
    deliver()  # the welcome mail

    save(client, manage_path, [news])
    window_passes(app)
    for _ in range(3):
        save(client, manage_path, [news])
        save(client, manage_path, [news, tech])
    (second,) = deliver()  # after the window, one more
    assert client.post(link_path(second, "confirm")).status_code == 200
    assert statuses("reader@example.org")["tech"] == SubscriptionStatus.ACTIVE
    assert seal_and_verify().ok


def test_ticking_another_list_within_the_window_sends_a_confirmation_for_it(
    client: FlaskClient, lists: Lists, manage_path: str, deliver: Deliver
) -> None:
    news, tech, events = lists["nyhedsbrev"], lists["tech"], lists["events"]
    save(client, manage_path, [news, tech])
    assert len(deliver()) == 1
    save(client, manage_path, [news])  # leave tech, then join it with events
    assert SENT_NOW in save(client, manage_path, [news, tech, events]).get_data(as_text=True)
    (mail,) = deliver()
    assert "Arrangementer" in text_of(mail)
    assert client.post(link_path(mail, "confirm")).status_code == 200
    assert statuses("reader@example.org") == {
        "nyhedsbrev": SubscriptionStatus.ACTIVE,
        "tech": SubscriptionStatus.ACTIVE,
        "events": SubscriptionStatus.ACTIVE,
    }


def test_the_same_preference_change_at_once_from_several_requests_sends_one_mail(
    app: Flask, lists: Lists, manage_path: str, deliver: Deliver
) -> None:
    wanted = [str(lists["nyhedsbrev"].id), str(lists["tech"].id)]
    threads, errors = 6, []
    barrier = threading.Barrier(threads)
    db.session.commit()  # hold no lock while the threads run (SQLite's single writer)

    def work() -> None:
        try:
            browser = app.test_client()
            barrier.wait(timeout=30)
            data = {"action": "save", "lists": wanted, "locale": "en"}
            assert browser.post(manage_path, data=data).status_code == 200
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    started = [threading.Thread(target=work) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=60)
    assert errors == []
    assert len(deliver()) == 1
    assert seal_and_verify().ok


# -- the signup form ---------------------------------------------------------------


def test_a_known_address_signing_up_for_another_list_within_the_window_gets_its_confirmation(
    client: FlaskClient, lists: Lists, deliver: Deliver
) -> None:
    sign_up(client, "known@example.org", "tech")
    assert len(deliver()) == 1
    answer = sign_up(client, "known@example.org", "events")
    assert answer.data == sign_up(client, "fresh@example.org", "events").data
    mails = [m for m in deliver() if "known@example.org" in str(m["To"])]
    assert len(mails) == 1
    assert client.post(link_path(mails[0], "confirm")).status_code == 200
    assert statuses("known@example.org")["events"] == SubscriptionStatus.ACTIVE


def test_signing_up_again_for_lists_already_mailed_within_the_window_sends_nothing(
    client: FlaskClient, lists: Lists, deliver: Deliver
) -> None:
    sign_up(client, "known@example.org", "tech")
    sign_up(client, "known@example.org", "events")
    first, second = deliver()
    for slugs in (["tech"], ["events"], ["tech", "events"]):
        sign_up(client, "known@example.org", *slugs)
    assert deliver() == []
    # Each earlier link still confirms what it named.
    assert client.post(link_path(first, "confirm")).status_code == 200
    assert client.post(link_path(second, "confirm")).status_code == 200
    assert statuses("known@example.org") == {
        "tech": SubscriptionStatus.ACTIVE,
        "events": SubscriptionStatus.ACTIVE,
    }
