"""One recipient's message: the campaign's invariant parts, prepared once per
batch, and the personal parts (name, unsubscribe and preference links) filled
in per recipient."""

from __future__ import annotations

import html
from dataclasses import dataclass
from email.utils import parseaddr

from flask import current_app

from ..extensions import db
from ..mail.dkim import sign_message
from ..mail.message import OutgoingMail, wire_address
from ..mail.render import external_url, mail_domain
from ..models.campaigns import Campaign
from ..tokens import Purpose, make_token
from .compose import MANAGE_URL, NAME, UNSUBSCRIBE_URL, split_template
from .mime import CampaignEnvelope, EncodedBody, build_encoded, make_envelope
from .outcomes import Recipient


@dataclass(frozen=True)
class CampaignContent:
    """A sending campaign's invariant parts (content is frozen once sending starts)."""

    envelope: CampaignEnvelope
    sender_address: str
    html: EncodedBody
    text: EncodedBody


def encode_template(template: str) -> EncodedBody:
    """A rendered template, quoted-printable-encoded once, with its placeholders as slots."""
    # The same line-end reading as quoted_printable's, done before the split so
    # that no CRLF can be cut in two by a slot.
    template = template.replace("\r\n", "\n").replace("\r", "\n")
    return EncodedBody.encode(*split_template(template))


def load_content(campaign_id: int) -> CampaignContent:
    """Per-campaign invariants, computed once per batch (a query, a few headers and
    the encoding of both bodies)."""
    campaign = db.session.get(Campaign, campaign_id)
    assert campaign is not None
    assert campaign.rendered_html is not None
    mailing_list = campaign.mailing_list
    envelope = make_envelope(
        campaign.sender,
        campaign.subject,
        f"{mailing_list.name} <{mailing_list.slug}.{mail_domain()}>",
        mail_domain(),
        current_app.config.get("MAIL_UNSUBSCRIBE_MAILTO") or "",
    )
    return CampaignContent(
        envelope,
        parseaddr(campaign.sender)[1],
        encode_template(campaign.rendered_html),
        encode_template(campaign.rendered_text or ""),
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
    """The signed (when configured) message for one recipient."""
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
        text=content.text.fill(values),
        html=content.html.fill({key: html.escape(value) for key, value in values.items()}),
    )
    return OutgoingMail(content.sender_address, address, sign_message(message))
