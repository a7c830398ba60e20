"""Right of access and portability: "send me a copy of my data", the download link, staff export.

The copy is never handed out on the page: the preference link may have been
forwarded, so a fresh, expiring link goes to the address itself. That link's
GET shows a button and hands out nothing (mail scanners prefetch links); the
POST returns the JSON file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from email.message import EmailMessage

from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.models import (
    AuditEntry,
    MailingList,
    OutboxKind,
    OutboxMessage,
    Subscriber,
)
from newsletter.privacy.data_export import subscriber_data_export
from newsletter.tokens import Purpose, make_token
from newsletter.web import RedactTokens

from .fixtures.mailflow import link_path, text_of

Mails = Callable[[], list[EmailMessage]]


def ask_for_copy(client: FlaskClient, manage_path: str) -> str:
    """Press "Send me a copy of my data" on the preference page; the page's HTML."""
    response = client.post(manage_path, data={"action": "export"})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def export_mails(mails: list[EmailMessage]) -> list[EmailMessage]:
    """The data-export link mails among ``mails``."""
    return [m for m in mails if "/data/" in text_of(m)]


def outbox_count() -> int:
    """Rows in the outbox now."""
    db.session.commit()
    count = db.session.scalar(select(func.count()).select_from(OutboxMessage)) or 0
    db.session.commit()
    return count


def test_a_subscriber_downloads_a_copy_of_their_data(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Mails,
) -> None:
    welcome = subscribed("Kopi@Example.org", name="Karen Kopi")
    manage = link_path(welcome, "manage")
    page = client.get(manage).get_data(as_text=True)
    assert "Send me a copy of my data" in page
    assert 'name="action" value="export"' in page

    # A campaign, so that the copy lists a newsletter too.
    campaign = create_campaign("nyhedsbrev", "Nyt i november", "Hej {{ name }}.")
    assert start_campaign(campaign.id) == 1
    assert len(deliver()) == 1

    html = ask_for_copy(client, manage)
    assert "We have sent a link to your data to Kopi@example.org" in html
    assert "/data/" not in html  # the link goes to the mailbox only
    mails = export_mails(deliver())
    assert len(mails) == 1
    mail = mails[0]
    assert mail["To"] == "Karen Kopi <Kopi@example.org>"
    assert mail["List-Unsubscribe"] is None  # asked for: transactional
    download = link_path(mail, "data")

    # GET: a page with one button; nothing is handed out, nothing changes.
    before = outbox_count()
    page_response = client.get(download)
    assert page_response.status_code == 200
    assert page_response.headers["Cache-Control"] == "no-store"
    assert page_response.mimetype == "text/html"
    assert "Download my data" in page_response.get_data(as_text=True)
    assert "Kopi@example.org" not in page_response.get_data(as_text=True)
    assert outbox_count() == before

    # POST: the JSON file.
    response = client.post(download)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="my-data-')
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers
    document = json.loads(response.get_data(as_text=True))

    assert document["profile"]["email"] == "Kopi@example.org"
    assert document["profile"]["name"] == "Karen Kopi"
    assert [(s["list"], s["status"]) for s in document["subscriptions"]] == [
        ("nyhedsbrev", "active")
    ]
    assert document["subscriptions"][0]["consent_text"]["version"] == 1
    assert [e["event"] for e in document["consent_history"]] == ["requested", "confirmed"]
    assert document["consent_history"][0]["channel"] == "form"
    assert [(m["subject"], m["status"]) for m in document["mails"]["newsletters"]] == [
        ("Nyt i november", "sent")
    ]
    kinds = [(m["kind"], m["status"]) for m in document["mails"]["transactional"]]
    assert kinds == [("confirm", "sent"), ("welcome", "sent"), ("data_export", "sent")]
    assert "token_key" not in json.dumps(document)  # a credential, not data about the person
    subscriber = db.session.scalars(select(Subscriber)).one()
    assert subscriber.token_key not in response.get_data(as_text=True)


def test_a_forwarded_preference_link_cannot_flood_the_inbox(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Mails,
) -> None:
    manage = link_path(subscribed("flood@example.org"), "manage")
    for _ in range(3):
        ask_for_copy(client, manage)
    assert len(export_mails(deliver())) == 1
    db.session.commit()
    queued = db.session.scalars(
        select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.DATA_EXPORT)
    ).all()
    assert len(queued) == 1


def test_an_expired_link_offers_a_fresh_one(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Mails,
) -> None:
    app.config["CONFIRM_RESEND_WINDOW"] = 0
    manage = link_path(subscribed("late@example.org"), "manage")
    ask_for_copy(client, manage)
    download = link_path(export_mails(deliver())[0], "data")

    app.config["DATA_EXPORT_MAX_AGE"] = -1  # every link is now too old
    for method in (client.get, client.post):
        response = method(download)
        assert response.status_code == 410
        assert "This link has expired" in response.get_data(as_text=True)
        assert response.mimetype == "text/html"  # no data on an expired link

    assert client.post(download, data={"resend": "1"}).status_code == 410
    fresh = export_mails(deliver())
    assert len(fresh) == 1
    app.config["DATA_EXPORT_MAX_AGE"] = 3600
    assert client.post(link_path(fresh[0], "data")).mimetype == "application/json"


def test_bad_and_foreign_tokens_are_refused(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
) -> None:
    subscribed("tokens@example.org")
    db.session.commit()
    subscriber = db.session.scalars(select(Subscriber)).one()
    manage_token = make_token(Purpose.MANAGE, subscriber.token_key)
    db.session.commit()
    assert client.post(f"/data/{manage_token}").status_code == 400  # another purpose
    assert client.post("/data/not-a-token").status_code == 400
    assert client.get("/data/" + "x" * 600).status_code == 400

    # After erasure, a genuine link finds nothing.
    export_token = make_token(Purpose.DATA_EXPORT, subscriber.token_key)
    db.session.delete(subscriber)
    db.session.commit()
    assert client.post(f"/data/{export_token}").status_code == 404


def test_staff_export_function_and_command(
    app: Flask,
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
) -> None:
    subscribed("staff-export@example.org")
    db.session.commit()
    subscriber = db.session.scalars(select(Subscriber)).one()
    document = subscriber_data_export(subscriber.id)
    assert document["profile"]["email"] == "staff-export@example.org"

    result = runner.invoke(args=["privacy", "export", "STAFF-EXPORT@example.org"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    printed.pop("generated_at")
    document.pop("generated_at")
    assert printed == document
    audit = db.session.scalars(select(AuditEntry)).one()
    assert (audit.action, audit.object_id, audit.actor_email) == (
        "subscriber.export",
        str(subscriber.id),
        "(command line)",
    )

    unknown = runner.invoke(args=["privacy", "export", "nobody@example.org"])
    assert unknown.exit_code == 1
    assert "No subscriber has that address." in unknown.output
    invalid = runner.invoke(args=["privacy", "export", "not an address"])
    assert invalid.exit_code == 2


def test_download_tokens_are_cut_from_logged_request_lines() -> None:
    record = logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '"POST /data/%s HTTP/1.1" 200 -',
        ("abcdefSECRET",),
        None,
    )
    RedactTokens().filter(record)
    assert record.getMessage() == '"POST /data/abcdef… HTTP/1.1" 200 -'
