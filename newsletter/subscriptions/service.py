"""The subscription lifecycle. Each public function is one transaction (``@transactional``)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..ledger import Evidence, append_event
from ..mail.outbox import enqueue
from ..models import (
    Channel,
    ConsentEventType,
    MailingList,
    OutboxKind,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from ..tokens import TokenPayload
from ..transaction import transactional
from ..validation import clean_locale
from . import suppression
from .lifecycle import (
    ACTIVE_OR_PENDING,
    append_all,
    maybe_send_confirmation,
    request_lists,
    terms_in_force,
)
from .lists import open_lists
from .withdrawal import withdraw


class UnknownSubscriber(LookupError):
    """A genuine link whose subscriber no longer exists (erased)."""


def subscriber_for(payload: TokenPayload, *, lock: bool = False) -> Subscriber:
    """The subscriber a verified token names.

    With ``lock`` the row is locked until commit and read afresh, so two
    requests for one subscriber take turns and cannot both decide that a
    confirmation mail is due, nor both add the same subscription. The lock
    comes before any ledger append (row first, head second).
    """
    query = select(Subscriber).where(Subscriber.token_key == payload.subscriber_key)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    subscriber = db.session.scalar(query)
    if subscriber is None:
        raise UnknownSubscriber(payload.subscriber_key[:6])
    return subscriber


@dataclass(frozen=True)
class ConfirmOutcome:
    """Which lists are now active, and which could not be (left meanwhile)."""

    active: list[MailingList]
    not_pending: list[MailingList]


@transactional
def confirm(payload: TokenPayload, evidence: Evidence) -> ConfirmOutcome:
    """Confirm the pending subscriptions a confirmation link names. Idempotent.

    Only *pending* subscriptions are confirmed: an old confirmation link must
    not bring back someone who unsubscribed after it was sent. Each
    confirmation is logged and followed by a welcome mail (the consent receipt).
    """
    subscriber = subscriber_for(payload)
    active, not_pending = [], []
    for subscription in _subscriptions_named(subscriber, payload.list_ids):
        if subscription.status == SubscriptionStatus.PENDING:
            # Confirming proves the mailbox receives mail again: an earlier hard
            # bounce no longer stands (the person signed up anew and confirmed).
            suppression.lift(subscriber.email_key)
            subscription.status = SubscriptionStatus.ACTIVE
            subscription.confirmed_at = utcnow()
            append_event(
                event=ConsentEventType.CONFIRMED,
                channel=Channel.CONFIRM_LINK,
                subscriber=subscriber,
                evidence=evidence,
                list_id=subscription.list_id,
                consent_text_id=subscription.consent_text_id,
            )
            enqueue(OutboxKind.WELCOME, subscriber, list=subscription.list_id)
        if subscription.status == SubscriptionStatus.ACTIVE:
            active.append(subscription.mailing_list)
        else:
            not_pending.append(subscription.mailing_list)
    return ConfirmOutcome(active=active, not_pending=not_pending)


@transactional
def resend_confirmation(payload: TokenPayload) -> None:
    """Queue a fresh confirmation mail for an expired link (within the window)."""
    subscriber = subscriber_for(payload, lock=True)
    maybe_send_confirmation(subscriber)


@transactional
def unsubscribe(payload: TokenPayload, channel: Channel, evidence: Evidence) -> list[MailingList]:
    """Withdraw consent at once for the lists the link names (all when none).

    Idempotent: a second request changes nothing and logs nothing.
    """
    subscriber = subscriber_for(payload)
    named = _subscriptions_named(subscriber, payload.list_ids)
    return list(withdraw(subscriber, named, channel=channel, evidence=evidence))


def _subscriptions_named(subscriber: Subscriber, list_ids: tuple[int, ...]) -> list[Subscription]:
    """The subscriber's subscriptions on ``list_ids``, or all of them when empty."""
    if not list_ids:
        return list(subscriber.subscriptions)
    return [s for s in subscriber.subscriptions if s.list_id in list_ids]


@dataclass(frozen=True)
class PreferenceOutcome:
    """What a preference change did. ``confirmation_sent`` is False when the lists
    requested are named by a confirmation mail sent within the window already."""

    requested: list[MailingList]
    withdrawn: list[MailingList]
    locale_changed: bool
    confirmation_sent: bool = False


@transactional
def update_preferences(
    payload: TokenPayload, wanted_list_ids: set[int], locale: str | None, evidence: Evidence
) -> PreferenceOutcome:
    """Apply the preference page: lists wanted, language.

    Leaving a list takes effect at once. Joining one goes through double
    opt-in again: the manage link is in every newsletter and may be forwarded,
    so it can withdraw consent but never grant it. The confirmation mail keeps
    to the resend window (``maybe_send_confirmation``), so leaving and
    rejoining a list cannot flood the mailbox.
    """
    subscriber = subscriber_for(payload, lock=True)
    locale = clean_locale(locale, current_app.config["LANGUAGES"])
    by_list = {s.list_id: s for s in subscriber.subscriptions}
    offered = {m.id: m for m in open_lists()}
    to_join = [
        offered[i]
        for i in sorted(wanted_list_ids & offered.keys())
        if i not in by_list or by_list[i].status not in ACTIVE_OR_PENDING
    ]
    to_leave = [s for i, s in by_list.items() if i not in wanted_list_ids]
    withdrawn = list(withdraw(subscriber, to_leave, channel=Channel.MANAGE_PAGE, evidence=evidence))
    sent = False
    if to_join:
        terms = terms_in_force([m.id for m in to_join])
        events = request_lists(subscriber, terms, Channel.MANAGE_PAGE, evidence)
        sent = maybe_send_confirmation(subscriber)
        append_all(events, terms.policy)

    locale_changed = locale is not None and locale != subscriber.locale
    if locale_changed:
        subscriber.locale = str(locale)
        append_event(
            event=ConsentEventType.PREFERENCES_CHANGED,
            channel=Channel.MANAGE_PAGE,
            subscriber=subscriber,
            evidence=evidence,
            details={"locale": subscriber.locale},
        )
    return PreferenceOutcome(
        requested=to_join,
        withdrawn=withdrawn,
        locale_changed=locale_changed,
        confirmation_sent=sent,
    )
