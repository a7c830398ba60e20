"""Rendering primitives shared by every mail to a subscriber: the per-list
links and headers, and one mail from the configured sender.

Each feature renders its own kinds of mail with these (subscriptions the
confirmation and welcome, privacy the data copy, campaigns their test mail);
the worker's dispatcher picks the renderer for an outbox row by its kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from flask import current_app

from ..models import MailingList, Subscriber
from ..tokens import Purpose, make_token
from ..urls import external_url, mail_domain
from .headers import Mailbox
from .message import OutgoingMail, compose_mail
from .verp import envelope_sender


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


def transactional_sender() -> str:
    """The From of transactional mail (confirmation, welcome, data copy, witness
    mail): MAIL_TRANSACTIONAL_SENDER when set, else MAIL_DEFAULT_SENDER."""
    config = current_app.config
    return str(config.get("MAIL_TRANSACTIONAL_SENDER") or config["MAIL_DEFAULT_SENDER"])


# What a Feedback-ID field may hold: Google reads the value as fields split at
# ":", so a field never holds one; no space, nothing outside ASCII.
_FEEDBACK_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
FEEDBACK_FIELD_MAX = 40


def feedback_field(value: object) -> str:
    """One Feedback-ID field: ASCII letters, digits, ".", "_" and "-" only
    (anything else becomes "-"), at most 40 characters."""
    return _FEEDBACK_UNSAFE.sub("-", str(value)).strip("-")[:FEEDBACK_FIELD_MAX] or "-"


SENDER_ID_LENGTH = (5, 15)  # Google: the SenderId is 5 to 15 characters


def feedback_sender() -> str:
    """The SenderId, Feedback-ID's last field, the same on every mail we send:
    FEEDBACK_ID_SENDER when set (cut to 15 characters); else the organisation's
    name or else the mail domain, the first that is 5 to 15 characters once made
    a field (see feedback_field), else the mail domain cut to 15."""
    shortest, longest = SENDER_ID_LENGTH
    config = current_app.config
    if config.get("FEEDBACK_ID_SENDER"):
        return feedback_field(config["FEEDBACK_ID_SENDER"])[:longest]
    domain = feedback_field(mail_domain())
    for candidate in (feedback_field(config.get("ORGANIZATION_NAME") or ""), domain):
        if shortest <= len(candidate) <= longest:
            return candidate
    return domain[:longest]


def feedback_id(campaign_id: int, list_slug: str) -> str:
    """Google's Feedback-ID for bulk mail, ``campaign:list:kind:sender``
    (https://support.google.com/mail/answer/6254652): the campaign's id and the
    list's slug, so the Postmaster Tools' feedback loop names which campaign
    and list drew complaints. Nothing about the recipient."""
    fields = (campaign_id, list_slug, "campaign")
    return ":".join([*map(feedback_field, fields), feedback_sender()])


def returning_to(mail: OutgoingMail, kind: str, row_id: int) -> OutgoingMail:
    """``mail`` with the envelope sender (MAIL FROM) that names its row, kind
    "d" a campaign delivery or "o" an outbox mail (verp.envelope_sender), when
    BOUNCE_DOMAIN is set; else unchanged. The From header stays as it is; the
    receiving server writes Return-Path from the envelope."""
    sender = envelope_sender(kind, row_id)
    return mail if sender is None else replace(mail, sender=sender)


def to_subscriber(
    subscriber: Subscriber,
    *,
    subject: str,
    text: str,
    html: str,
    headers: dict[str, str | Mailbox] | None = None,
) -> OutgoingMail:
    """One transactional mail to a subscriber (the welcome is a list mail too),
    from the transactional sender."""
    return compose_mail(
        sender=transactional_sender(),
        to_address=subscriber.email,
        to_name=subscriber.name,
        subject=subject,
        text=text,
        html=html,
        domain=mail_domain(),
        headers=headers,
    )
