""" "Erase me" on the preference page: a confirm step, then privacy.erasure.erase_subscriber.

After it, the ledger still verifies, the address is on the suppression list
(as a keyed digest only) and no mail goes to it again.
"""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage

from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.ledger.keys import email_digest
from newsletter.models import (
    ConsentEvent,
    MailingList,
    OutboxMessage,
    Subscriber,
    Suppression,
)

from .fixtures.mailflow import link_path

Mails = Callable[[], list[EmailMessage]]


def state() -> tuple[int, int, int, int]:
    """Subscribers, events, outbox rows, suppressions."""
    db.session.commit()
    counts = tuple(
        db.session.scalar(select(func.count()).select_from(model)) or 0
        for model in (Subscriber, ConsentEvent, OutboxMessage, Suppression)
    )
    db.session.commit()
    return counts  # type: ignore[return-value]


def test_erase_me_with_a_confirm_step(
    app: Flask,
    client: FlaskClient,
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Mails,
) -> None:
    welcome = subscribed("erase.me@example.org", name="Eva")
    subscribed("stays@example.org")
    manage = link_path(welcome, "manage")
    unsubscribe = link_path(welcome, "unsubscribe")
    page = client.get(manage).get_data(as_text=True)
    erase_path = f"{manage}/erase"
    assert f'href="{erase_path}"' in page

    # The link and the confirm page change nothing (scanners prefetch links).
    before = state()
    confirm_page = client.get(erase_path)
    assert confirm_page.status_code == 200
    assert "This cannot be undone." in confirm_page.get_data(as_text=True)
    assert "erase.me@example.org" in confirm_page.get_data(as_text=True)
    assert confirm_page.headers["Cache-Control"] == "no-store"
    # A POST without the confirm field is only the confirm page again.
    assert "This cannot be undone." in client.post(erase_path).get_data(as_text=True)
    assert state() == before

    response = client.post(erase_path, data={"erase": "yes"})
    assert response.status_code == 200
    assert "We have erased your data." in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers

    db.session.commit()
    assert db.session.scalar(select(Subscriber.email).where(Subscriber.name == "Eva")) is None
    digest = email_digest("erase.me@example.org")
    assert db.session.scalar(select(Suppression.reason).where(Suppression.email_digest == digest))
    events = db.session.scalars(
        select(ConsentEvent).where(ConsentEvent.email_digest == digest).order_by(ConsentEvent.seq)
    ).all()
    assert [e.event for e in events] == ["requested", "confirmed", "erased"]
    assert events[-1].channel == "manage_page"
    assert all(e.email is None and e.ip is None and e.user_agent is None for e in events)
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output

    # Never mailed again: a campaign reaches only the other subscriber.
    campaign = create_campaign("nyhedsbrev", "After erasure", "Text.")
    assert start_campaign(campaign.id) == 1
    assert [m["To"] for m in deliver()] == ["stays@example.org"]

    # Old links: the manage and erase pages find nothing; one-click still answers 200.
    assert client.get(manage).status_code == 404
    again = client.post(erase_path, data={"erase": "yes"})
    assert again.status_code == 404
    assert "We hold no data for this link any more." in again.get_data(as_text=True)
    assert client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200


def test_erase_page_refuses_a_bad_token(app: Flask, client: FlaskClient) -> None:
    assert client.get("/manage/not-a-token/erase").status_code == 400
    assert client.post("/manage/not-a-token/erase", data={"erase": "yes"}).status_code == 400
