"""Campaigns end to end: compose, start, the real worker, every subscriber exactly once."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage

from flask.testing import FlaskClient
from sqlalchemy import func, select

from newsletter.campaigns.service import campaign_progress, create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.models import Delivery, DeliveryStatus, MailingList, SubscriptionStatus

from .fixtures.mailflow import html_of, link_path, text_of

BODY = "# Nyt fra os\n\nHej {{ name }}!\n\nLæs [mere](https://inklusio.dk/nyt).\n"


def test_campaign_reaches_every_confirmed_subscriber_once_with_one_click_unsubscribe(
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    subscribe: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    for n in range(3):
        subscribed(f"reader{n}@example.org", name=f"Reader {n}")
    subscribe("pending@example.org")  # never confirmed: gets nothing
    campaign = create_campaign("nyhedsbrev", "Nyt fra Inklusio - november", BODY)
    assert start_campaign(campaign.id) == 3

    mails = deliver()

    assert sorted(str(m["To"]) for m in mails) == [
        "Reader 0 <reader0@example.org>",
        "Reader 1 <reader1@example.org>",
        "Reader 2 <reader2@example.org>",
    ]
    assert deliver() == []  # nothing twice
    progress = campaign_progress(campaign.id)
    assert (progress.status, progress.sent, progress.queued) == ("done", 3, 0)
    mail = mails[0]
    assert mail["Subject"] == "Nyt fra Inklusio - november"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["List-Id"] == "Nyhedsbrev <nyhedsbrev.newsletter.test>"
    assert mail["Message-ID"]
    assert mail["Date"]
    url = str(mail["List-Unsubscribe"]).strip("<>")
    assert url in text_of(mail)
    assert url in html_of(mail)
    assert 'href="https://inklusio.dk/nyt"' in html_of(mail)  # no rewritten links
    assert "<style" not in html_of(mail)  # CSS inlined
    assert "C.A. Olesens Gade 4" in text_of(mail)
    assert "C.A. Olesens Gade 4" in html_of(mail)
    greeted = next(m for m in mails if "reader1@" in str(m["To"]))
    assert "Hej Reader 1!" in text_of(greeted)
    assert "Hej Reader 1!" in html_of(greeted)

    response = client.post(
        url.removeprefix("http://newsletter.test"), data={"List-Unsubscribe": "One-Click"}
    )
    assert response.status_code == 200
    db.session.commit()
    from newsletter.models import Subscriber, Subscription

    status = db.session.scalar(
        select(Subscription.status)
        .join(Subscriber)
        .where(Subscriber.email_key == str(mail["To"].addresses[0].addr_spec).casefold())
    )
    assert status == SubscriptionStatus.UNSUBSCRIBED
    assert link_path(mail, "manage")
    assert db.session.scalar(select(func.count(Delivery.id))) == 3
    assert set(db.session.scalars(select(Delivery.status))) == {DeliveryStatus.SENT}
