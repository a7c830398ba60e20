"""A sending campaign pauses itself when its complaint rate passes 0.3 % or its
hard-bounce rate passes CAMPAIGN_PAUSE_HARD_BOUNCE_RATE after at least
CAMPAIGN_PAUSE_MIN_SENDS sends, and says why (deliverability/autopause.py);
a resumed campaign pauses again only when the rate rises above the one it
paused at."""

from __future__ import annotations

import json
from collections.abc import Callable
from email.message import EmailMessage

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select, update

from newsletter.campaigns.delivery import send_deliveries
from newsletter.campaigns.outcomes import DeliveryBatch
from newsletter.campaigns.service import (
    campaign_progress,
    create_campaign,
    pause_campaign,
    resume_campaign,
    start_campaign,
)
from newsletter.deliverability.autopause import (
    AUDIT_ACTION,
    check_campaign,
    check_campaigns,
    describe,
)
from newsletter.deliverability.reports import IncomingReport, record_report
from newsletter.extensions import db
from newsletter.models import (
    AuditEntry,
    BounceKind,
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    MailingList,
    Role,
    utcnow,
)
from newsletter.worker.round import work_once

from .fixtures.deliverability_data import add_reports, add_sent, sending_campaign
from .fixtures.smtp import SMTPServer
from .fixtures.staff import StaffClient


def status(campaign_id: int) -> CampaignStatus:
    db.session.commit()
    found = db.session.get(Campaign, campaign_id)
    assert found is not None
    db.session.refresh(found)
    return found.status


def reason_of(campaign_id: int) -> dict[str, object] | None:
    found = db.session.get(Campaign, campaign_id)
    assert found is not None
    db.session.refresh(found)
    return found.pause_reason


def campaign_with(mailing_list: MailingList, sends: int, complaints: int = 0, hard: int = 0) -> int:
    campaign = sending_campaign(mailing_list)
    add_sent(campaign, sends)
    add_reports(campaign, BounceKind.COMPLAINT, complaints)
    add_reports(campaign, BounceKind.HARD, hard)
    return campaign


def test_complaints_just_over_the_line_pause_with_the_reason(default_list: MailingList) -> None:
    campaign = campaign_with(default_list, 1333, complaints=4)  # 0.3001 %
    reason = check_campaign(campaign)
    assert reason is not None
    assert status(campaign) == CampaignStatus.PAUSED
    stored = reason_of(campaign)
    assert stored == reason
    assert stored["rule"] == "complaint_rate"
    assert (stored["count"], stored["of"], stored["line"]) == (4, 1333, 0.003)
    assert stored["rate"] == pytest.approx(4 / 1333)
    assert describe(stored) == (
        "paused automatically: complaint rate 0.30 % (4 of 1333 mails sent) passed the 0.3 % line"
    )
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == AUDIT_ACTION))
    assert entry is not None
    assert (entry.object_type, entry.object_id) == ("campaign", str(campaign))
    assert entry.actor_id is None
    assert entry.actor_email == "(automatic)"
    assert entry.details["status"] == {"before": "sending", "after": "paused"}
    assert entry.details["reason"]["count"] == 4


def test_complaints_just_under_or_at_the_line_do_not_pause(default_list: MailingList) -> None:
    under = campaign_with(default_list, 1334, complaints=4)  # 0.2999 %
    at = campaign_with(default_list, 1000, complaints=3)  # exactly 0.3 %: not passed
    assert check_campaigns([under, at]) == []
    assert status(under) == status(at) == CampaignStatus.SENDING
    assert reason_of(under) is None


def test_under_the_minimum_sends_nothing_pauses(default_list: MailingList) -> None:
    campaign = campaign_with(default_list, 999, complaints=200, hard=300)
    assert check_campaign(campaign) is None
    assert status(campaign) == CampaignStatus.SENDING
    add_sent(campaign, 1)  # the 1000th send: now the rates count
    assert check_campaign(campaign) is not None
    assert status(campaign) == CampaignStatus.PAUSED


def test_the_minimum_is_a_setting(app: Flask, default_list: MailingList) -> None:
    app.config["CAMPAIGN_PAUSE_MIN_SENDS"] = 10
    campaign = campaign_with(default_list, 10, complaints=1)
    assert check_campaign(campaign) is not None


def test_hard_bounces_over_the_setting_pause(app: Flask, default_list: MailingList) -> None:
    at_line = campaign_with(default_list, 1000, hard=50)  # 5 %: not passed
    assert check_campaign(at_line) is None
    over = campaign_with(default_list, 1000, hard=51)
    reason = check_campaign(over)
    assert reason is not None
    assert reason["rule"] == "hard_bounce_rate"
    assert reason["line"] == 0.05
    assert "hard-bounce rate 5.10 % (51 of 1000 mails attempted)" in describe(reason)
    # Refused during the send: a hard bounce of a mail attempted, not sent.
    refused = campaign_with(default_list, 950)
    add_reports(refused, BounceKind.HARD, 51, source="smtp")
    reason = check_campaign(refused)
    assert reason is not None
    assert (reason["count"], reason["of"]) == (51, 1001)
    app.config["CAMPAIGN_PAUSE_HARD_BOUNCE_RATE"] = 0.1
    lenient = campaign_with(default_list, 1000, hard=80)
    assert check_campaign(lenient) is None


def test_soft_bounces_and_auto_replies_never_pause(default_list: MailingList) -> None:
    campaign = sending_campaign(default_list)
    add_sent(campaign, 1000)
    add_reports(campaign, BounceKind.SOFT, 500)
    add_reports(campaign, BounceKind.AUTO_REPLY, 500)
    assert check_campaign(campaign) is None


def test_only_a_sending_campaign_pauses(default_list: MailingList) -> None:
    for state in (CampaignStatus.DONE, CampaignStatus.CANCELLED, CampaignStatus.PAUSED):
        campaign = sending_campaign(default_list, status=state)
        add_sent(campaign, 1000)
        add_reports(campaign, BounceKind.COMPLAINT, 50)
        assert check_campaign(campaign) is None
        assert status(campaign) == state
        assert reason_of(campaign) is None


def test_a_resumed_campaign_pauses_again_only_when_the_rate_rises(
    default_list: MailingList,
) -> None:
    campaign = campaign_with(default_list, 1000, complaints=4)  # 0.4 %
    assert check_campaign(campaign) is not None
    resume_campaign(campaign)
    assert status(campaign) == CampaignStatus.SENDING
    assert reason_of(campaign) is None  # staff resumed it: no automatic reason now
    assert check_campaign(campaign) is None  # the same reports
    add_sent(campaign, 200)
    add_reports(campaign, BounceKind.COMPLAINT, 1)  # 5 of 1200: 0.417 %, just above 0.4 %
    reason = check_campaign(campaign)
    assert reason is not None
    assert (reason["count"], reason["of"]) == (5, 1200)
    assert status(campaign) == CampaignStatus.PAUSED
    resume_campaign(campaign)
    add_sent(campaign, 300)  # 5 of 1500: 0.33 %, over the line but lower than before
    assert check_campaign(campaign) is None
    # The other rule still pauses it.
    add_reports(campaign, BounceKind.HARD, 80)
    reason = check_campaign(campaign)
    assert reason is not None
    assert reason["rule"] == "hard_bounce_rate"
    entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action == AUDIT_ACTION))
    assert len(list(entries)) == 3


def test_a_staff_pause_clears_the_automatic_reason(default_list: MailingList) -> None:
    campaign = campaign_with(default_list, 1000, complaints=10)
    assert check_campaign(campaign) is not None
    resume_campaign(campaign)
    pause_campaign(campaign)
    assert status(campaign) == CampaignStatus.PAUSED
    assert reason_of(campaign) is None


def test_a_complaint_through_record_report_pauses_its_campaign(
    default_list: MailingList, subscribed: Callable[..., EmailMessage]
) -> None:
    subscribed("reader@example.org")
    campaign = create_campaign(default_list.slug, "Hej", "Hej", "Inklusio <nl@example.org>")
    start_campaign(campaign.id)
    delivery = db.session.scalar(select(Delivery).where(Delivery.campaign_id == campaign.id))
    assert delivery is not None
    db.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id)
        .values(status=DeliveryStatus.SENT, sent_at=utcnow())
    )
    db.session.commit()
    add_sent(campaign.id, 999)
    add_reports(campaign.id, BounceKind.COMPLAINT, 3)  # 0.3 % of 1000: on the line
    assert check_campaign(campaign.id) is None
    outcome = record_report(
        IncomingReport(
            kind=BounceKind.COMPLAINT,
            source="imap",
            dedupe_key="arf-1",
            recipient="reader@example.org",
            delivery_id=delivery.id,
        )
    )
    assert outcome.action == "unsubscribed"
    assert status(campaign.id) == CampaignStatus.PAUSED  # record_report checked it
    reason = reason_of(campaign.id)
    assert reason is not None
    assert (reason["count"], reason["of"]) == (4, 1000)


def test_status_command_and_console_show_the_reason(
    runner: FlaskCliRunner,
    default_list: MailingList,
    staff_client: Callable[..., StaffClient],
) -> None:
    campaign = campaign_with(default_list, 1000, complaints=5)
    assert check_campaign(campaign) is not None
    db.session.commit()
    data = json.loads(runner.invoke(args=["campaign", "status", str(campaign), "--json"]).output)
    assert data["status"] == "paused"
    assert data["pause_reason"]["rule"] == "complaint_rate"
    assert data["pause_reason"]["count"] == 5
    assert campaign_progress(campaign).pause_reason == data["pause_reason"]
    text = runner.invoke(args=["campaign", "status", str(campaign)]).output
    assert (
        "paused automatically: complaint rate 0.50 % (5 of 1000 mails sent) passed the 0.3 % line"
        in text
    )
    viewer = staff_client(Role.VIEWER)
    expected = (
        "Paused automatically: the complaint rate 0.50 % (5 of 1000 mails sent) "
        "passed the 0.3 % line."
    )
    assert expected in viewer.get(f"/admin/campaigns/{campaign}").get_data(as_text=True)
    assert expected in viewer.get("/admin/deliverability").get_data(as_text=True)
    progress = viewer.get(f"/admin/campaigns/{campaign}/progress.json").get_json()
    assert progress["pause_reason"]["rule"] == "complaint_rate"


def test_smtp_refusals_of_a_real_batch_pause_the_campaign(
    app: Flask,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    smtp_server: SMTPServer,
) -> None:
    """The worker's path: the SMTP server refuses a recipient for good, the
    refusal is recorded as a hard bounce of the campaign, and the check after
    the batch pauses it before the rest goes out (CAMPAIGN_PAUSE_MIN_SENDS and
    DELIVERY_BATCH_SIZE lowered to this small campaign)."""
    app.config["CAMPAIGN_PAUSE_MIN_SENDS"] = 2
    app.config["DELIVERY_BATCH_SIZE"] = 2
    for name in ("gone", "ada", "bo", "cy"):
        subscribed(f"{name}@example.org")
    smtp_server.recorder.refuse["gone@example.org"] = "550 5.1.1 no such user"
    campaign = create_campaign(default_list.slug, "Hej", "Hej", "Inklusio <nl@example.org>")
    start_campaign(campaign.id)
    batches: list[DeliveryBatch] = []
    work_once(app, "test-worker", on_campaign_batch=batches.append)  # the worker's round
    ((batch,),) = (batches,)
    assert (batch.sent, batch.failed) == (1, 1)
    assert batch.campaigns == {campaign.id}
    reason = reason_of(campaign.id)
    assert reason is not None
    assert (reason["rule"], reason["count"], reason["of"]) == ("hard_bounce_rate", 1, 2)
    assert send_deliveries(app, "test-worker").handled == 0  # paused: nothing more goes out
    assert campaign_progress(campaign.id).queued == 2
