"""Rendering primitives shared by every mail to a subscriber: the per-list
links and headers, and one mail from the configured sender.

Each feature renders its own kinds of mail with these (subscriptions the
confirmation and welcome, privacy the data copy, campaigns their test mail);
the worker's dispatcher picks the renderer for an outbox row by its kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from ..models import MailingList, Subscriber
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


def to_subscriber(
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
