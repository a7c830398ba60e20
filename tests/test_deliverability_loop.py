"""The loop end to end: a campaign goes out through the worker, a provider reports a
hard bounce and a complaint by signed webhook, and the compliance report shows them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from email.message import EmailMessage

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import select

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.models import BounceReport, MailingList

from . import webhook_calls as calls
from .fixtures.mailflow import Deliver
from .fixtures.staff import StaffClient

READERS = ["ada@example.org", "bo@example.org", "cy@example.org"]


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Iterator[Flask]:
    """Every provider's webhook configured, and VERP on."""
    application = app_factory(**calls.settings(), BOUNCE_DOMAIN="bounce.newsletter.test")
    with application.app_context():
        yield application


def post(client: FlaskClient, provider: str, payload: object) -> None:
    body, headers = getattr(calls, provider)(payload)
    response = client.post(
        f"/webhooks/bounces/{provider}",
        data=body,
        headers={"Content-Type": "application/json", **headers},
    )
    assert response.status_code == 200, response.get_data(as_text=True)


def test_webhook_reports_reach_the_compliance_report_and_the_console(
    app: Flask,
    client: FlaskClient,
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Deliver,
    staff_client: Callable[..., StaffClient],
) -> None:
    for address in READERS:
        subscribed(address)
    campaign = create_campaign(default_list.slug, "Nyt", "Hej {{ name }}")
    start_campaign(campaign.id)
    assert len(deliver()) == len(READERS)

    post(
        client,
        "postmark",
        calls.with_recipient("postmark", calls.sample("postmark_bounce.json"), READERS[0]),
    )
    post(
        client,
        "mailgun",
        calls.with_recipient("mailgun", calls.sample("mailgun_complained.json"), READERS[1]),
    )
    kinds = {row.kind for row in db.session.scalars(select(BounceReport))}
    assert kinds == {"hard", "complaint"}

    result = runner.invoke(args=["report", "deliverability", "--json"])
    document = json.loads(result.output)
    (mine,) = [c for c in document["campaigns"] if c["id"] == campaign.id]
    counts = {key: mine[key] for key in ("sends", "hard_bounces", "complaints")}
    assert counts == {"sends": 3, "hard_bounces": 1, "complaints": 1}
    assert mine["complaint_level"] == "over_limit" or mine["complaint_rate"] > 0.003
    assert document["window"]["complaints"] == 1
    assert document["unsubscribe_effect"]["mails_after"] == 0
    assert result.exit_code == 1  # 1 complaint in 3 mails is far over the 0.3 % line

    page = staff_client().get("/admin/deliverability")
    assert page.status_code == 200
    assert "Nyt" in page.get_data(as_text=True)
