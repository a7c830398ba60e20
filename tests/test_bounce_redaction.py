"""A hard bounce's SMTP reply is written to the (hashed, permanent) ledger without the address."""

from __future__ import annotations

from sqlalchemy import select

from newsletter.deliverability.suppress import redacted_reply, suppress_after_bounce
from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.models import Channel, ConsentEvent, ConsentEventType, Subscriber
from newsletter.privacy.erasure import erase_subscriber

from .fixtures.ledger import seal_and_verify


def test_addresses_in_replies_are_replaced() -> None:
    reply = "550 5.1.1 <Gone@Example.org>: Recipient address rejected: gone@example.org unknown"
    assert redacted_reply(reply) == (
        "550 5.1.1 <<address>>: Recipient address rejected: <address> unknown"
    )
    assert redacted_reply("550 5.1.1 no such user") == "550 5.1.1 no such user"
    assert len(redacted_reply("550 " + "x" * 500)) == 200


def test_erasure_after_a_bounce_leaves_no_trace_of_the_address(default_list, subscribed) -> None:
    subscribed("gone@example.org")
    suppress_after_bounce("gone@example.org", "550 5.1.1 <gone@example.org>: no such user")
    event = db.session.scalars(
        select(ConsentEvent).where(ConsentEvent.event == ConsentEventType.SUPPRESSED)
    ).one()
    assert event.details["reply"] == "550 5.1.1 <<address>>: no such user"

    subscriber = db.session.scalars(select(Subscriber)).one()
    erase_subscriber(subscriber.id, channel=Channel.STAFF, actor=None, evidence=Evidence())
    for row in db.session.scalars(select(ConsentEvent)):
        assert "gone" not in repr(row.details)
        assert row.email is None
    assert seal_and_verify().ok
