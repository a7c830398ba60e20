"""One recipient's message: the campaign's invariant parts, prepared once per
batch (the bodies once per layout language the batch needs), and the personal
parts (name, unsubscribe and preference links) filled in per recipient."""

from __future__ import annotations

import html
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..mail.dkim import sign_message
from ..mail.headers import Mailbox
from ..mail.message import OutgoingMail, wire_address
from ..mail.render import feedback_id, returning_to
from ..models.campaigns import Campaign, CampaignRendering
from ..tokens import Purpose, make_token
from ..urls import external_url, mail_domain
from .compose import MANAGE_URL, NAME, UNSUBSCRIBE_URL, main_locale, split_template
from .mime import CampaignEnvelope, EncodedBody, build_encoded, make_envelope
from .outcomes import Recipient


@dataclass(frozen=True)
class CampaignContent:
    """A sending campaign's invariant parts (content is frozen once sending starts).

    ``html`` and ``text`` are the main rendering; ``languages`` holds the
    bodies whose layout is in another language, by locale.
    """

    envelope: CampaignEnvelope
    sender_address: str
    html: EncodedBody
    text: EncodedBody
    languages: Mapping[str, tuple[EncodedBody, EncodedBody]] = field(default_factory=dict)

    def bodies(self, locale: str) -> tuple[EncodedBody, EncodedBody]:
        """HTML and text for a reader of ``locale``: the rendering in that
        language when the campaign has one, else the main rendering."""
        return self.languages.get(locale) or (self.html, self.text)


def encode_template(template: str) -> EncodedBody:
    """A rendered template, quoted-printable-encoded once, with its placeholders as slots."""
    # The same line-end reading as quoted_printable's, done before the split so
    # that no CRLF can be cut in two by a slot.
    template = template.replace("\r\n", "\n").replace("\r", "\n")
    return EncodedBody.encode(*split_template(template))


def load_content(campaign_id: int, locales: Collection[str] | None = None) -> CampaignContent:
    """Per-campaign invariants, computed once per batch (a query, a few headers and
    the encoding of both bodies, once per layout language).

    ``locales`` are the layout languages the batch's recipients read: only their
    renderings are read and encoded (None: every rendering the campaign has).
    """
    campaign = db.session.get(Campaign, campaign_id)
    assert campaign is not None
    assert campaign.rendered_html is not None
    languages: dict[str, tuple[EncodedBody, EncodedBody]] = {}
    others = None if locales is None else set(locales) - {main_locale(campaign)}
    if others is None or others:
        query = select(
            CampaignRendering.locale, CampaignRendering.html, CampaignRendering.text
        ).where(CampaignRendering.campaign_id == campaign_id)
        if others is not None:
            query = query.where(CampaignRendering.locale.in_(sorted(others)))
        for locale, rendered_html, rendered_text in db.session.execute(query):
            languages[locale] = (encode_template(rendered_html), encode_template(rendered_text))
    mailing_list = campaign.mailing_list
    envelope = make_envelope(
        campaign.sender,
        campaign.subject,
        Mailbox(mailing_list.name, f"{mailing_list.slug}.{mail_domain()}"),
        mail_domain(),
        current_app.config.get("MAIL_UNSUBSCRIBE_MAILTO") or "",
        feedback_id(campaign.id, mailing_list.slug),
    )
    return CampaignContent(
        envelope,
        parseaddr(campaign.sender)[1],
        encode_template(campaign.rendered_html),
        encode_template(campaign.rendered_text or ""),
        languages,
    )


# Stands in for the token in a link built once per batch (URL-safe, so the
# token replacing it needs no escaping either).
TOKEN_SLOT = "TOKENSLOT7f3a"  # noqa: S105 - a placeholder, not a secret


@dataclass(frozen=True)
class LinkTemplates:
    """Absolute unsubscribe and manage URLs with a slot for the token.

    Building a URL with url_for needs a request context, which costs more than
    everything else in a recipient's rendering: done once per batch instead.
    """

    unsubscribe: str
    manage: str

    @classmethod
    def build(cls) -> LinkTemplates:
        """Resolve both routes once."""
        return cls(
            unsubscribe=external_url("public.unsubscribe", token=TOKEN_SLOT),
            manage=external_url("public.manage", token=TOKEN_SLOT),
        )


def render(recipient: Recipient, content: CampaignContent, links: LinkTemplates) -> OutgoingMail:
    """The signed (when configured) message for one recipient, its layout in
    the recipient's language, sent from the delivery's own envelope sender
    when BOUNCE_DOMAIN is set (mail.render.returning_to)."""
    html_body, text_body = content.bodies(recipient.locale)
    unsubscribe = links.unsubscribe.replace(
        TOKEN_SLOT, make_token(Purpose.UNSUBSCRIBE, recipient.token_key, (recipient.list_id,))
    )
    manage = links.manage.replace(TOKEN_SLOT, make_token(Purpose.MANAGE, recipient.token_key))
    values = {NAME: recipient.name, UNSUBSCRIBE_URL: unsubscribe, MANAGE_URL: manage}
    address = wire_address(recipient.email)
    message = build_encoded(
        content.envelope,
        to_address=address,
        to_name=recipient.name,
        unsubscribe_url=unsubscribe,
        text=text_body.fill(values),
        html=html_body.fill({key: html.escape(value) for key, value in values.items()}),
    )
    mail = OutgoingMail(content.sender_address, address, sign_message(message))
    return returning_to(mail, "d", recipient.delivery_id)
