"""Lists and their consent texts."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import func, select

from ..extensions import db
from ..models import ConsentText, MailingList
from .validation import SLUG_PATTERN, InvalidInput

DEFAULT_LIST_NAME = "Nyhedsbrev"
DEFAULT_CONSENT_TEXT = (
    "Ja tak, jeg vil gerne modtage nyhedsbrevet på e-mail med nyt indhold fra hjemmesiden "
    "og annoncering af ydelser. Tilmeldingen er frivillig, og jeg kan til enhver tid "
    "framelde mig med linket i hver mail."
)


def create_list(
    slug: str, name: str, consent_text: str, description: str = "", *, default: bool = False
) -> MailingList:
    """Create a list with version 1 of its consent text, and commit."""
    if not SLUG_PATTERN.match(slug):
        raise InvalidInput("slug", "Use lower-case letters, digits and hyphens (max 64).")
    name, consent_text = name.strip(), consent_text.strip()
    if not name or len(name) > 200:
        raise InvalidInput("name", "Give the list a name of 1 to 200 characters.")
    if not consent_text:
        raise InvalidInput("consent_text", "A list needs a consent text.")
    if db.session.scalar(select(MailingList.id).where(MailingList.slug == slug)):
        raise InvalidInput("slug", f"A list named {slug!r} exists already.")
    mailing_list = MailingList(slug=slug, name=name, description=description, is_default=default)
    db.session.add(mailing_list)
    db.session.flush()
    db.session.add(ConsentText(list_id=mailing_list.id, version=1, text=consent_text))
    db.session.commit()
    return mailing_list


def ensure_default_list() -> MailingList | None:
    """Create the default list when there is no list at all; return it if created."""
    if db.session.scalar(select(func.count(MailingList.id))):
        return None
    return create_list(
        current_app.config["DEFAULT_LIST_SLUG"],
        DEFAULT_LIST_NAME,
        DEFAULT_CONSENT_TEXT,
        default=True,
    )


def current_consent_text(list_id: int) -> ConsentText:
    """The consent text version in force for a list (the newest)."""
    text = db.session.scalars(
        select(ConsentText)
        .where(ConsentText.list_id == list_id)
        .order_by(ConsentText.version.desc())
        .limit(1)
    ).first()
    if text is None:
        raise LookupError(f"list {list_id} has no consent text")
    return text


def open_lists() -> list[MailingList]:
    """Lists people can subscribe to, default first."""
    return list(
        db.session.scalars(
            select(MailingList)
            .where(MailingList.archived_at.is_(None))
            .order_by(MailingList.is_default.desc(), MailingList.name)
        )
    )


def resolve_lists(slugs: list[str], field: str = "list") -> list[MailingList]:
    """The open lists named by ``slugs``, or the default list when none is named."""
    if not slugs:
        default = db.session.scalars(
            select(MailingList)
            .where(MailingList.archived_at.is_(None))
            .order_by(MailingList.is_default.desc(), MailingList.id)
            .limit(1)
        ).first()
        if default is None:
            raise InvalidInput(field, "There is no list to subscribe to yet.")
        return [default]
    found = {
        m.slug: m
        for m in db.session.scalars(
            select(MailingList).where(
                MailingList.slug.in_(slugs), MailingList.archived_at.is_(None)
            )
        )
    }
    missing = [slug for slug in slugs if slug not in found]
    if missing:
        raise InvalidInput(field, f"Unknown list: {', '.join(missing)}.")
    return [found[slug] for slug in slugs]
