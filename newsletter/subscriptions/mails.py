"""The subscription mails, rendered when sent: the double opt-in confirmation
and the welcome (consent receipt) after confirming."""

from __future__ import annotations

from typing import Any

from flask import current_app, render_template
from flask_babel import gettext
from sqlalchemy import select

from ..extensions import db
from ..mail.message import OutgoingMail
from ..mail.render import NothingToSend, list_headers, list_links, to_subscriber
from ..models import Subscriber, Subscription, SubscriptionStatus
from ..tokens import Purpose, make_token
from ..urls import external_url


def confirmation_mail(subscriber: Subscriber, payload: dict[str, Any]) -> OutgoingMail:
    """The double opt-in mail for the lists in ``payload["lists"]`` still pending:
    transactional, so no List-Unsubscribe. The token names only those lists."""
    pending = [
        s
        for s in _subscriptions(subscriber, payload.get("lists", []))
        if s.status == SubscriptionStatus.PENDING
    ]
    if not pending:
        raise NothingToSend("nothing left to confirm")
    ids = tuple(sorted(s.list_id for s in pending))
    token = make_token(Purpose.CONFIRM, subscriber.token_key, ids)
    context = {
        "subscriber": subscriber,
        "subscriptions": pending,
        "confirm_url": external_url("public.confirm", token=token),
        "max_age_days": max(1, current_app.config["CONFIRM_MAX_AGE"] // 86400),
        "organization": current_app.config["ORGANIZATION_NAME"],
        "postal_address": current_app.config["POSTAL_ADDRESS"],
    }
    return to_subscriber(
        subscriber,
        subject=gettext("Please confirm your subscription"),
        text=render_template("mail/confirm.txt", **context),
        html=render_template("mail/confirm.html", **context),
    )


def welcome_mail(subscriber: Subscriber, payload: dict[str, Any]) -> OutgoingMail:
    """The consent receipt for ``payload["list"]``, only while the subscription is
    active: a list mail with unsubscribe headers."""
    subscriptions = _subscriptions(subscriber, [int(payload["list"])])
    if not subscriptions or subscriptions[0].status != SubscriptionStatus.ACTIVE:
        raise NothingToSend("no longer subscribed")
    subscription = subscriptions[0]
    links = list_links(subscriber, subscription.mailing_list)
    context = {
        "subscriber": subscriber,
        "subscription": subscription,
        "mailing_list": subscription.mailing_list,
        "consent_text": subscription.consent_text,
        "links": links,
        "organization": current_app.config["ORGANIZATION_NAME"],
        "postal_address": current_app.config["POSTAL_ADDRESS"],
    }
    return to_subscriber(
        subscriber,
        subject=gettext("Welcome to %(name)s", name=subscription.mailing_list.name),
        text=render_template("mail/welcome.txt", **context),
        html=render_template("mail/welcome.html", **context),
        headers=list_headers(subscription.mailing_list, links),
    )


def _subscriptions(subscriber: Subscriber, list_ids: list[int]) -> list[Subscription]:
    """The subscriber's subscriptions to these lists, as they are now."""
    return list(
        db.session.scalars(
            select(Subscription).where(
                Subscription.subscriber_id == subscriber.id, Subscription.list_id.in_(list_ids)
            )
        )
    )
