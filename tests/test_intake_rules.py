"""Rules of the signup intake that follow from answering before the work is done.

- The open lists are cached per web process (subscriptions/terms.py): a change
  in the same process counts at once, a new list anywhere at once, a list
  archived by another process within SIGNUP_TERMS_CACHE_SECONDS; the worker
  refuses a list archived meanwhile and names it.
- A signup records the consent text version and policy in force at the request.
- A withdrawal made after a signup's request wins over it when the worker
  applies the signup later.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.models import (
    Channel,
    ConsentEvent,
    MailingList,
    OutboxMessage,
    SignupIntake,
    StaffUser,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.subscriptions.intake import SignupRequest, accept_signup
from newsletter.subscriptions.lists import update_list
from newsletter.subscriptions.service import unsubscribe
from newsletter.tokens import Purpose, make_token, read_token

from .fixtures.intake import drain_intake, sign_up_now
from .fixtures.ledger import seal_and_verify

OWN = {"Origin": "http://newsletter.test"}


def _request(email: str, *slugs: str) -> SignupRequest:
    return SignupRequest(
        email=email, channel=Channel.API, evidence=Evidence(), list_slugs=list(slugs)
    )


def _intake() -> list[SignupIntake]:
    db.session.commit()
    rows = list(db.session.scalars(select(SignupIntake).order_by(SignupIntake.id)))
    db.session.commit()
    return rows


def test_a_list_created_in_another_process_is_open_at_once(
    client: FlaskClient, default_list: MailingList
) -> None:
    # Fill the snapshot, then add a list the way another process would: rows
    # written without this process's session noticing.
    assert client.post("/api/v1/subscriptions", json={"email": "a@example.org"}).status_code == 202
    lists = MailingList.__table__
    db.session.execute(lists.insert().values(slug="events", name="Events", is_default=False))
    list_id = db.session.scalar(select(lists.c.id).where(lists.c.slug == "events"))
    db.session.execute(
        db.metadata.tables["consent_texts"].insert().values(list_id=list_id, version=1, text="Ja.")
    )
    db.session.commit()
    response = client.post(
        "/api/v1/subscriptions", json={"email": "b@example.org", "lists": ["events"]}
    )
    assert response.status_code == 202, response.get_json()
    assert [row.terms[0][0] for row in _intake()] == [default_list.id, list_id]


def test_a_list_archived_by_another_process_is_refused_by_the_worker_naming_it(
    client: FlaskClient, default_list: MailingList, make_list: Callable[..., MailingList]
) -> None:
    events = make_list("events", "Events")
    db.session.commit()
    body = {"email": "late@example.org", "lists": ["events"]}
    assert client.post("/api/v1/subscriptions", json=body).status_code == 202
    # Archived behind this process's back: the snapshot still has it open.
    db.session.execute(
        update(MailingList).where(MailingList.id == events.id).values(archived_at=db.func.now())
    )
    db.session.commit()
    assert client.post("/api/v1/subscriptions", json=body).status_code == 202
    drain_intake()
    rows = _intake()
    assert len(rows) == 2
    assert all(row.failed_at is not None for row in rows)
    assert all(f"list {events.id} was archived" in (row.last_error or "") for row in rows)
    assert db.session.scalar(select(db.func.count(Subscriber.id))) == 0


def test_an_archived_list_is_refused_at_once_when_the_snapshot_is_stale(
    app_factory: Callable[..., Flask],
    default_list: MailingList,
    make_list: Callable[..., MailingList],
) -> None:
    events = make_list("events", "Events")
    db.session.commit()
    client = app_factory(SIGNUP_TERMS_CACHE_SECONDS=0).test_client()
    body = {"email": "late@example.org", "lists": ["events"]}
    assert client.post("/api/v1/subscriptions", json=body).status_code == 202
    db.session.execute(
        update(MailingList).where(MailingList.id == events.id).values(archived_at=db.func.now())
    )
    db.session.commit()
    refused = client.post("/api/v1/subscriptions", json=body)
    assert refused.status_code == 422
    assert refused.get_json() == {"error": "Unknown list: events.", "field": "lists"}
    assert len(_intake()) == 1


def test_a_new_consent_text_in_this_process_is_recorded_by_the_next_signup(
    app: Flask, default_list: MailingList, make_staff: Callable[..., StaffUser]
) -> None:
    staff = make_staff("owner")
    sign_up_now(_request("first@example.org"))
    update_list(
        default_list.id,
        name=default_list.name,
        description="",
        default=True,
        consent_text="Ja tak, en ny tekst.",
        actor=staff,
    )
    sign_up_now(_request("second@example.org"))
    texts = list(
        db.session.scalars(select(ConsentEvent.consent_text_id).order_by(ConsentEvent.seq))
    )
    assert len(texts) == 2
    assert texts[0] != texts[1]
    newest = db.session.scalar(
        select(db.func.max(db.metadata.tables["consent_texts"].c.id)).where(
            db.metadata.tables["consent_texts"].c.list_id == default_list.id
        )
    )
    assert texts[1] == newest
    assert seal_and_verify().ok


def test_an_unsubscribe_after_the_request_wins_over_the_waiting_signup(
    app: Flask, default_list: MailingList
) -> None:
    sign_up_now(_request("reader@example.org"))
    subscriber = db.session.scalars(select(Subscriber)).one()
    db.session.execute(
        update(Subscription).values(status=SubscriptionStatus.ACTIVE, confirmed_at=db.func.now())
    )
    db.session.commit()
    mails_before = db.session.scalar(select(db.func.count(OutboxMessage.id)))

    accept_signup(_request("reader@example.org"))  # waits in the intake ...
    token = make_token(Purpose.UNSUBSCRIBE, subscriber.token_key)
    unsubscribe(read_token(Purpose.UNSUBSCRIBE, token), Channel.ONE_CLICK, Evidence())
    drain_intake()  # ... and is applied after the unsubscribe

    subscription = db.session.scalars(select(Subscription)).one()
    assert subscription.status == SubscriptionStatus.UNSUBSCRIBED
    assert db.session.scalar(select(db.func.count(OutboxMessage.id))) == mails_before
    assert not _intake()
    assert seal_and_verify().ok


def test_a_signup_made_after_an_unsubscribe_asks_again(
    app: Flask, default_list: MailingList
) -> None:
    sign_up_now(_request("back@example.org"))
    subscriber = db.session.scalars(select(Subscriber)).one()
    token = make_token(Purpose.UNSUBSCRIBE, subscriber.token_key)
    unsubscribe(read_token(Purpose.UNSUBSCRIBE, token), Channel.ONE_CLICK, Evidence())
    sign_up_now(_request("back@example.org"))
    subscription = db.session.scalars(select(Subscription)).one()
    assert subscription.status == SubscriptionStatus.PENDING
    assert [
        e.event for e in db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq))
    ] == [
        "requested",
        "withdrawn",
        "requested",
    ]


def test_the_answer_does_not_wait_for_the_work(
    client: FlaskClient, default_list: MailingList
) -> None:
    assert (
        client.post("/subscribe", data={"email": "x@example.org"}, headers=OWN).status_code == 200
    )
    rows = _intake()
    assert len(rows) == 1
    assert rows[0].failed_at is None
    assert db.session.scalar(select(db.func.count(Subscriber.id))) == 0
    assert drain_intake() == 1
    assert not _intake()
    assert db.session.scalar(select(db.func.count(Subscriber.id))) == 1


def test_the_thank_you_page_follows_the_language_and_is_the_same_for_everyone(
    client: FlaskClient, default_list: MailingList
) -> None:
    def thanks(email: str, query: str = "", language: str = "da") -> bytes:
        response = client.post(
            f"/subscribe{query}",
            data={"email": email},
            headers={**OWN, "Accept-Language": language},
        )
        assert response.status_code == 200
        return response.data

    danish = thanks("a@example.org")
    assert thanks("b@example.org") == danish
    english = thanks("c@example.org", language="en")
    assert english != danish
    assert b'<html lang="en">' in english
    assert b'<html lang="da">' in danish
    switched = thanks("d@example.org", query="?lang=en")
    assert b'<html lang="en">' in switched
    assert b'href="?lang=da"' in switched


def test_a_database_error_on_a_signup_names_no_address(
    app: Flask, default_list: MailingList, caplog: pytest.LogCaptureFixture
) -> None:
    """A row that fails in the database keeps the error text, and the log gets it:
    neither may carry the address the statement was sent with."""
    accept_signup(_request("secret.person@example.org"))
    db.session.execute(update(SignupIntake).values(policy_version_id=999_999))
    db.session.commit()
    drain_intake()
    (row,) = _intake()
    assert row.failed_at is not None
    assert (row.last_error or "").startswith("IntegrityError")
    assert "secret.person" not in (row.last_error or "")
    assert "secret.person" not in caplog.text
