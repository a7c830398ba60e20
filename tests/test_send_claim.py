"""The claim per campaign (campaigns/claim.py): several campaigns sending at once,
served in the order they started, and a pause that commits between two claims
is honoured by the very next batch."""

from __future__ import annotations

from collections import Counter

from flask import Flask

from newsletter.campaigns.claim import claim_deliveries
from newsletter.campaigns.delivery import send_deliveries
from newsletter.campaigns.service import pause_campaign, resume_campaign
from newsletter.extensions import db
from newsletter.models import DeliveryStatus, MailingList

from .fixtures.smtp import SMTPServer
from .test_sending_guarantees import (
    add_subscribers,
    delivery_statuses,
    mails_per_recipient,
    progress,
    started_campaign,
)


def subjects(smtp_server: SMTPServer) -> list[str]:
    """The subject of every received mail, in order."""
    return [str(r.message["Subject"]) for r in smtp_server.recorder.received]


def test_two_sending_campaigns_go_out_in_the_order_they_started_each_exactly_once(
    app: Flask, default_list: MailingList, smtp_server: SMTPServer
) -> None:
    addresses = add_subscribers(default_list, 7)
    first = started_campaign("First")
    second = started_campaign("Second")
    app.config["DELIVERY_BATCH_SIZE"] = 5

    batches = []
    while batch := send_deliveries(app, "test-worker").handled:
        batches.append(batch)

    assert batches == [5, 5, 4]  # the second batch takes the rest of one and the next
    assert subjects(smtp_server) == ["First"] * 7 + ["Second"] * 7
    assert set(mails_per_recipient(smtp_server).values()) == {2}
    assert sorted(mails_per_recipient(smtp_server)) == addresses
    for campaign_id in (first, second):
        state = progress(campaign_id)
        assert (state.status, state.sent, state.queued) == ("done", 7, 0)


def test_a_paused_campaign_is_not_claimed_and_the_other_goes_on(
    app: Flask, default_list: MailingList, smtp_server: SMTPServer
) -> None:
    add_subscribers(default_list, 6)
    first = started_campaign("First")
    second = started_campaign("Second")
    app.config["DELIVERY_BATCH_SIZE"] = 4
    assert send_deliveries(app, "test-worker").sent == 4  # all from "First"

    pause_campaign(first)
    db.session.commit()
    while send_deliveries(app, "test-worker").handled:
        pass

    assert Counter(subjects(smtp_server)) == {"First": 4, "Second": 6}
    assert Counter(delivery_statuses(first).values()) == {
        DeliveryStatus.SENT: 4,
        DeliveryStatus.QUEUED: 2,
    }
    assert progress(first).status == "paused"
    assert progress(second).status == "done"

    resume_campaign(first)
    db.session.commit()
    while send_deliveries(app, "test-worker").handled:
        pass
    assert Counter(subjects(smtp_server)) == {"First": 6, "Second": 6}
    assert progress(first).status == "done"


def test_a_claim_returns_what_the_send_loop_needs_without_another_lookup(
    app: Flask, default_list: MailingList
) -> None:
    add_subscribers(default_list, 3)
    campaign_id = started_campaign("Claimed")

    claimed = claim_deliveries("test-worker", 10)
    db.session.commit()

    assert len(claimed) == 3
    assert [c.id for c in claimed] == sorted(c.id for c in claimed)
    assert {(c.campaign_id, c.list_id, c.attempts) for c in claimed} == {
        (campaign_id, default_list.id, 0)
    }
    assert all(c.subscriber_id is not None for c in claimed)
    # Leased: a second claim finds nothing until the lease runs out.
    assert claim_deliveries("other-worker", 10) == []
    db.session.commit()
