"""Campaign drafts: validate, create and edit (audited), and the campaign row lock.

Creating and editing are each one transaction (``@transactional``): the draft
and its audit entry commit together, and a refusal leaves nothing behind.
"""

from __future__ import annotations

import hashlib
from email.utils import getaddresses, parseaddr
from typing import Any

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..models import MailingList, StaffUser
from ..models.campaigns import Campaign, CampaignStatus
from ..service_messages import page_gettext as _
from ..staff import audit
from ..transaction import transactional
from ..validation import CONTROL_CHARACTERS, ENCODED_WORD, InvalidInput

MAX_SUBJECT = 200
MAX_BODY = 500_000
MAX_SENDER = 320


class CampaignStateError(Exception):
    """The requested change does not apply to the campaign's current state."""


@transactional
def create_campaign(
    list_slug: str,
    subject: str,
    body_markdown: str,
    sender: str | None = None,
    *,
    actor: StaffUser | None = None,
    ip: str | None = None,
) -> Campaign:
    """Create a draft campaign; audited when ``actor`` is given (the console)."""
    mailing_list, subject, sender = _checked(list_slug, subject, body_markdown, sender)
    campaign = Campaign(
        list_id=mailing_list.id, subject=subject, body_markdown=body_markdown, sender=sender
    )
    db.session.add(campaign)
    db.session.flush()
    if actor is not None:
        details = _snapshot(campaign, mailing_list.slug)
        audit.record(actor, "campaign.create", "campaign", campaign.id, details=details, ip=ip)
    return campaign


EDITABLE = (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED)


@transactional
def update_campaign(
    campaign_id: int,
    *,
    list_slug: str,
    subject: str,
    body_markdown: str,
    sender: str,
    actor: StaffUser,
    ip: str | None = None,
) -> Campaign:
    """Change a draft or scheduled campaign; audited with before/after.

    Refused once sending has started: the worker reads subject and sender for
    every batch, so an edit then would change mails half-way through a send.
    """
    campaign = locked_campaign(campaign_id)
    if campaign.status not in EDITABLE:
        raise CampaignStateError(f"campaign {campaign_id} is {campaign.status}")
    before = _snapshot(campaign, campaign.mailing_list.slug)
    mailing_list, subject, sender = _checked(list_slug, subject, body_markdown, sender)
    campaign.list_id, campaign.mailing_list = mailing_list.id, mailing_list
    campaign.subject, campaign.sender, campaign.body_markdown = subject, sender, body_markdown
    changed = audit.changes(before, _snapshot(campaign, mailing_list.slug))
    if changed:
        audit.record(actor, "campaign.update", "campaign", campaign_id, details=changed, ip=ip)
    return campaign


def _checked(
    list_slug: str, subject: str, body_markdown: str, sender: str | None
) -> tuple[MailingList, str, str]:
    """Validate a campaign's fields: (its open list, subject, sender).

    Subject and sender go into headers: no control characters and no encoded
    word (=?…?=), which mail programs would decode into the header.
    """
    subject = subject.strip()
    if not subject or len(subject) > MAX_SUBJECT:
        raise InvalidInput(
            "subject", _("Give a subject of 1 to %(max)s characters.", max=MAX_SUBJECT)
        )
    if CONTROL_CHARACTERS.search(subject):
        raise InvalidInput("subject", _("The subject contains control characters."))
    if ENCODED_WORD.search(subject):
        raise InvalidInput(
            "subject",
            _(
                "The subject cannot contain an encoded word (=?…?=): mail programs"
                " would decode it into the mail's header."
            ),
        )
    if not body_markdown.strip() or len(body_markdown) > MAX_BODY:
        raise InvalidInput("body", _("Give a body of 1 to %(max)s characters.", max=MAX_BODY))
    mailing_list = db.session.scalar(select(MailingList).where(MailingList.slug == list_slug))
    if mailing_list is None or mailing_list.archived_at is not None:
        raise InvalidInput("list", _("Unknown list: %(slug)s.", slug=list_slug))
    sender = (sender or current_app.config["MAIL_DEFAULT_SENDER"]).strip()
    if CONTROL_CHARACTERS.search(sender) or len(sender) > MAX_SENDER:
        raise InvalidInput("sender", _("The sender is too long or contains control characters."))
    if ENCODED_WORD.search(sender) or "=?" in parseaddr(sender)[1]:
        raise InvalidInput(
            "sender",
            _(
                "The sender cannot contain an encoded word (=?…?=): mail programs"
                " would decode it into the mail's header."
            ),
        )
    try:
        # Syntax only: the operator's own domain may be a special-use one (.test).
        # One mailbox: From gets the first only, so a list would be cut short.
        if len(getaddresses([sender])) != 1:
            raise EmailNotValidError("more than one address")
        validate_email(
            parseaddr(sender)[1],
            check_deliverability=False,
            globally_deliverable=False,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        # A sentence of ours, not email-validator's English reason: the console
        # is in Danish too, and the form shows what was typed.
        raise InvalidInput(
            "sender",
            _(
                "The sender's address is not valid. Write it as name@domain,"
                " with a name before it if you like: Inklusio <nyhedsbrev@example.dk>."
            ),
        ) from exc
    return mailing_list, subject, sender


def _snapshot(campaign: Campaign, list_slug: str) -> dict[str, Any]:
    """The audited fields; the body as its size and digest (it may be 500 kB)."""
    digest = hashlib.sha256(campaign.body_markdown.encode()).hexdigest()[:16]
    return {
        "list": list_slug,
        "subject": campaign.subject,
        "sender": campaign.sender,
        "body": f"{len(campaign.body_markdown)} chars, sha256 {digest}",
    }


def locked_campaign(campaign_id: int) -> Campaign:
    """The campaign, row-locked until the transaction ends; LookupError if there is none."""
    campaign = db.session.scalar(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    )
    if campaign is None:
        raise LookupError(f"no campaign {campaign_id}")
    return campaign
