"""One withdrawal (subscriptions/withdrawal.py) for the person's links and for staff.

The unsubscribe link, the preference page and a staff member acting on the
person's behalf all leave a list the same way: the subscription becomes
unsubscribed and the same ``withdrawn`` event is logged, apart from how the
request came (the channel) and, for staff, who did it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.models import (
    AuditEntry,
    Channel,
    ConsentEvent,
    MailingList,
    StaffUser,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.privacy.withdrawal import withdraw_by_staff
from newsletter.subscriptions import service
from newsletter.subscriptions.lists import current_consent_text
from newsletter.tokens import TokenPayload

from .fixtures.ledger import seal_and_verify

EVIDENCE = Evidence(ip="192.0.2.0/24", user_agent="Browser", source_url="http://x/unsubscribe")
# What the ledger adds to every event (the chain), or what tells the paths apart.
# Per event by construction: its place, time, and the fresh salt of its commitment.
CHAIN = {"id", "seq", "occurred_at", "salt", "personal_commitment"}
APART = {"channel", "details"}


def subscribed(lists: list[MailingList], status: SubscriptionStatus) -> Subscriber:
    """One person on ``lists`` with ``status`` (no ledger events of their own)."""
    person = Subscriber(email="Ada@Example.org", email_key="ada@example.org", name="Ada")
    db.session.add(person)
    db.session.flush()
    for mailing_list in lists:
        db.session.add(
            Subscription(
                subscriber_id=person.id,
                list_id=mailing_list.id,
                status=status,
                consent_text_id=current_consent_text(mailing_list.id).id,
            )
        )
    db.session.commit()
    return person


def subscribe_again(person: Subscriber, status: SubscriptionStatus) -> None:
    """Put every subscription of ``person`` back to ``status``."""
    for subscription in person.subscriptions:
        subscription.status, subscription.unsubscribed_at = status, None
    db.session.commit()


def withdrawals_since(seq: int) -> list[dict[str, Any]]:
    """The ``withdrawn`` events after ``seq``, as column values, in order."""
    rows = db.session.scalars(
        select(ConsentEvent).where(ConsentEvent.seq > seq).order_by(ConsentEvent.seq)
    )
    columns = [c.key for c in ConsentEvent.__table__.columns]
    events = [{key: getattr(row, key) for key in columns} for row in rows]
    assert {event["event"] for event in events} == {"withdrawn"}
    return events


def last_seq() -> int:
    """The newest event's ``seq`` (0 when there is none)."""
    return db.session.scalar(select(ConsentEvent.seq).order_by(ConsentEvent.seq.desc())) or 0


def without(events: list[dict[str, Any]], keys: set[str]) -> list[dict[str, Any]]:
    """``events`` without the columns in ``keys``."""
    return [{k: v for k, v in event.items() if k not in keys} for event in events]


def test_link_and_staff_withdrawals_log_the_same_events(
    app: Flask,
    make_list: Callable[..., MailingList],
    make_staff: Callable[..., StaffUser],
) -> None:
    news, events = make_list("news", "News"), make_list("events", "Events")
    person = subscribed([news, events], SubscriptionStatus.ACTIVE)
    staff = make_staff()
    payload = TokenPayload(person.token_key)

    start = last_seq()
    left = service.unsubscribe(payload, Channel.UNSUBSCRIBE_PAGE, EVIDENCE)
    by_link = withdrawals_since(start)
    assert {m.slug for m in left} == {"news", "events"}

    subscribe_again(person, SubscriptionStatus.ACTIVE)
    start = last_seq()
    left = withdraw_by_staff(person.id, list_ids=None, actor=staff, evidence=EVIDENCE)
    by_staff = withdrawals_since(start)
    assert {m.slug for m in left} == {"news", "events"}

    # The same person, lists, consent texts, policy, evidence and digests ...
    assert without(by_link, CHAIN | APART) == without(by_staff, CHAIN | APART)
    assert len(by_link) == 2
    # ... and only the channel and the staff member tell them apart.
    assert [(e["channel"], e["details"]) for e in by_link] == [("unsubscribe_page", {})] * 2
    staff_details = {"staff_id": staff.id}
    assert [(e["channel"], e["details"]) for e in by_staff] == [("staff", staff_details)] * 2
    assert seal_and_verify().ok

    # Both left every subscription unsubscribed, with the time it happened.
    db.session.expire_all()
    assert {s.status for s in person.subscriptions} == {SubscriptionStatus.UNSUBSCRIBED}
    assert all(s.unsubscribed_at is not None for s in person.subscriptions)
    # Only the staff path writes an audit entry, committed with the events.
    entry = db.session.scalars(select(AuditEntry)).one()
    assert (entry.action, entry.actor_id) == ("subscriber.unsubscribe", staff.id)
    assert entry.details == {
        "subscriptions": {
            "news": {"before": "active", "after": "unsubscribed"},
            "events": {"before": "active", "after": "unsubscribed"},
        }
    }


def test_the_preference_page_and_staff_withdraw_a_pending_list_alike(
    app: Flask,
    make_list: Callable[..., MailingList],
    make_staff: Callable[..., StaffUser],
) -> None:
    news = make_list("news", "News")
    person = subscribed([news], SubscriptionStatus.PENDING)
    staff = make_staff()

    start = last_seq()
    outcome = service.update_preferences(TokenPayload(person.token_key), set(), None, EVIDENCE)
    by_page = withdrawals_since(start)
    assert [m.slug for m in outcome.withdrawn] == ["news"]

    subscribe_again(person, SubscriptionStatus.PENDING)
    start = last_seq()
    withdraw_by_staff(person.id, list_ids={news.id}, actor=staff, evidence=EVIDENCE)
    by_staff = withdrawals_since(start)

    assert without(by_page, CHAIN | APART) == without(by_staff, CHAIN | APART)
    assert [e["channel"] for e in by_page + by_staff] == ["manage_page", "staff"]
    entry = db.session.scalars(select(AuditEntry)).one()
    assert entry.details == {
        "subscriptions": {"news": {"before": "pending", "after": "unsubscribed"}}
    }

    # Nothing left to withdraw: neither path logs anything a second time.
    start = last_seq()
    service.unsubscribe(TokenPayload(person.token_key), Channel.ONE_CLICK, EVIDENCE)
    assert withdraw_by_staff(person.id, list_ids=None, actor=staff, evidence=EVIDENCE) == []
    assert last_seq() == start
    assert db.session.scalar(select(AuditEntry.id).where(AuditEntry.id != entry.id)) is None
