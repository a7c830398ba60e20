"""Turning outbox rows into mail messages, from the data as it is now."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, render_template
from flask_babel import force_locale, get_locale, gettext
from sqlalchemy import select

from ..campaigns.compose import layout_locale, personalise, stored_rendering
from ..campaigns.service import render_in_mail_language
from ..extensions import db
from ..models import (
    Campaign,
    MailingList,
    OutboxKind,
    OutboxMessage,
    StaffUser,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from ..tokens import Purpose, make_token
from ..urls import external_url, mail_domain
from .headers import Mailbox
from .message import OutgoingMail, compose_mail


class NothingToSend(Exception):
    """The mail no longer applies (e.g. a welcome for a list the person left)."""


@dataclass(frozen=True)
class ListLinks:
    """The per-recipient links every list mail carries."""

    unsubscribe: str
    manage: str


def list_links(subscriber: Subscriber, mailing_list: MailingList) -> ListLinks:
    """Unsubscribe (this list) and preference links for one recipient."""
    unsubscribe = make_token(Purpose.UNSUBSCRIBE, subscriber.token_key, (mailing_list.id,))
    manage = make_token(Purpose.MANAGE, subscriber.token_key)
    return ListLinks(
        unsubscribe=external_url("public.unsubscribe", token=unsubscribe),
        manage=external_url("public.manage", token=manage),
    )


def list_headers(mailing_list: MailingList, links: ListLinks) -> dict[str, str | Mailbox]:
    """RFC 2369 / RFC 8058 headers: one-click unsubscribe and the list's identity."""
    targets = [f"<{links.unsubscribe}>"]
    mailto = current_app.config.get("MAIL_UNSUBSCRIBE_MAILTO")
    if mailto:
        targets.append(f"<mailto:{mailto}?subject=unsubscribe>")
    return {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": list_id(mailing_list),
    }


def list_id(mailing_list: MailingList) -> Mailbox:
    """RFC 2919 ``List-Id``: the list's name as a phrase, then its identifier.

    The name is staff input and may be Danish: header_line quotes or encodes
    it as needed (a raw "å" cannot be sent in a 7-bit header).
    """
    return Mailbox(mailing_list.name, f"{mailing_list.slug}.{mail_domain()}")


def render_outbox_message(row: OutboxMessage) -> OutgoingMail:
    """Render an outbox row for its subscriber, in the subscriber's language
    (or, for a campaign's test mail, for the staff member who asked for it)."""
    if row.kind == OutboxKind.CAMPAIGN_TEST:
        return _campaign_test(row)
    subscriber = db.session.get(Subscriber, row.subscriber_id)
    if subscriber is None:
        raise NothingToSend("subscriber erased")
    with force_locale(subscriber.locale):
        if row.kind == OutboxKind.CONFIRM:
            return _confirmation(subscriber, row.payload.get("lists", []))
        if row.kind == OutboxKind.WELCOME:
            return _welcome(subscriber, int(row.payload["list"]))
        if row.kind == OutboxKind.DATA_EXPORT:
            from ..privacy.export_mail import data_export_mail

            return data_export_mail(subscriber)
    raise NothingToSend(f"unknown kind {row.kind}")  # pragma: no cover - the enum is closed


def _subscriptions(subscriber: Subscriber, list_ids: list[int]) -> list[Subscription]:
    return list(
        db.session.scalars(
            select(Subscription).where(
                Subscription.subscriber_id == subscriber.id, Subscription.list_id.in_(list_ids)
            )
        )
    )


def _confirmation(subscriber: Subscriber, list_ids: list[int]) -> OutgoingMail:
    """The double opt-in mail: transactional, so no List-Unsubscribe."""
    pending = [
        s for s in _subscriptions(subscriber, list_ids) if s.status == SubscriptionStatus.PENDING
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
    return _compose(
        subscriber,
        subject=gettext("Please confirm your subscription"),
        text=render_template("mail/confirm.txt", **context),
        html=render_template("mail/confirm.html", **context),
    )


def _welcome(subscriber: Subscriber, list_id: int) -> OutgoingMail:
    """The consent receipt sent after confirming: a list mail with unsubscribe headers."""
    subscriptions = _subscriptions(subscriber, [list_id])
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
    return _compose(
        subscriber,
        subject=gettext("Welcome to %(name)s", name=subscription.mailing_list.name),
        text=render_template("mail/welcome.txt", **context),
        html=render_template("mail/welcome.html", **context),
        headers=list_headers(subscription.mailing_list, links),
    )


def _compose(
    subscriber: Subscriber,
    *,
    subject: str,
    text: str,
    html: str,
    headers: dict[str, str | Mailbox] | None = None,
) -> OutgoingMail:
    """One transactional or list mail to a subscriber, from the configured sender."""
    return compose_mail(
        sender=current_app.config["MAIL_DEFAULT_SENDER"],
        to_address=subscriber.email,
        to_name=subscriber.name,
        subject=subject,
        text=text,
        html=html,
        domain=mail_domain(),
        headers=headers,
    )


def neutral_link(mailing_list: MailingList) -> str:
    """Where the personal links point in previews, test mails and the archive: the
    list's public signup page. It is harmless to open, and no token is made for
    someone who is not a subscriber."""
    return external_url("public.subscribe_form", list=mailing_list.slug)


def campaign_sample(
    campaign: Campaign, *, name: str, link: str, locale: str | None = None
) -> tuple[str, str]:
    """A campaign's HTML and text exactly as a recipient who reads ``locale``
    gets them, with ``name`` and ``link`` in place of the personal parts
    (previews and test mails).

    ``locale`` defaults to the current language: in the console, the staff
    member's; elsewhere the default. Once sending has started this is the
    frozen rendering that was sent to readers of that language (the main one
    when none of the recipients read it).
    """
    code = layout_locale(locale or str(get_locale() or ""))
    if campaign.rendered_html is not None:
        html, text = stored_rendering(campaign, code)
    else:
        rendered = render_in_mail_language(campaign, code)
        html, text = rendered.html, rendered.text
    values = {"name": name, "unsubscribe_url": link, "manage_url": link}
    return personalise(html, is_html=True, **values), personalise(text, is_html=False, **values)


def _campaign_test(row: OutboxMessage) -> OutgoingMail:
    """A campaign's test mail to the staff member who asked for it.

    The content is the campaign's, rendered now (a draft may have changed since
    the test was asked for), greeting the staff member by name. Its layout is in
    the language of the console the test was asked from (the payload's
    ``locale``, as the preview shows it), else the default language. The subject is
    prefixed "[Test]". It carries no List-Unsubscribe, List-Unsubscribe-Post or
    List-Id: the staff member is not on the list, so a one-click header would
    offer an unsubscribe that cannot do anything, and filters keyed on List-Id
    would file the test with the real issues. The unsubscribe and preference
    links in the body lead to the list's public signup page instead.
    """
    staff = db.session.get(StaffUser, row.staff_user_id)
    if staff is None or not staff.is_active:
        raise NothingToSend("staff account gone or inactive")
    campaign = db.session.get(Campaign, int(row.payload.get("campaign", 0)))
    if campaign is None:
        raise NothingToSend("campaign deleted")
    html, text = campaign_sample(
        campaign,
        name=staff.name,
        link=neutral_link(campaign.mailing_list),
        locale=_configured(row.payload.get("locale")),
    )
    return compose_mail(
        sender=campaign.sender,
        to_address=staff.email,
        to_name=staff.name,
        subject=f"[Test] {campaign.subject}",
        text=text,
        html=html,
        domain=mail_domain(),
    )


def _configured(locale: object) -> str:
    """``locale`` when it is one of LANGUAGES, else the default language."""
    if isinstance(locale, str) and locale in current_app.config["LANGUAGES"]:
        return locale
    return str(current_app.config["BABEL_DEFAULT_LOCALE"])
