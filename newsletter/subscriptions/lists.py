"""Lists and their consent texts.

Each function that writes is one transaction (``@transactional``): staff
changes (``actor`` given) write their audit entry in it, and a refusal
(``InvalidInput``) leaves nothing behind.
Consent texts are immutable versions: a change of wording adds a row, so the
ledger and every subscription keep pointing at the exact text that was shown.
"""

from __future__ import annotations

import re
from typing import Any

from flask import current_app
from sqlalchemy import func, select, update

from ..extensions import db
from ..models import ConsentText, MailingList, StaffUser, Subscription, utcnow
from ..service_messages import page_gettext as _
from ..staff import audit
from ..transaction import transactional
from ..validation import CONTROL_CHARACTERS, ENCODED_WORD, SLUG_PATTERN, InvalidInput

MAX_NAME = 200
MAX_DESCRIPTION = 1000
MAX_CONSENT_TEXT = 5000
# Line breaks and tabs belong in longer texts; other control characters never do.
TEXT_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

DEFAULT_LIST_NAME = "Nyhedsbrev"
DEFAULT_CONSENT_TEXT = (
    "Ja tak, jeg vil gerne modtage nyhedsbrevet på e-mail med nyt indhold fra hjemmesiden "
    "og annoncering af ydelser. Tilmeldingen er frivillig, og jeg kan til enhver tid "
    "framelde mig med linket i hver mail."
)


@transactional
def create_list(
    slug: str,
    name: str,
    consent_text: str,
    description: str = "",
    *,
    default: bool = False,
    actor: StaffUser | None = None,
    ip: str | None = None,
) -> MailingList:
    """Create a list with version 1 of its consent text.

    With ``actor`` (a change made in the console) the creation is audited.
    """
    if not SLUG_PATTERN.match(slug):
        raise InvalidInput("slug", _("Use lower-case letters, digits and hyphens (max 64)."))
    name, description = _clean_name(name), _clean_text("description", description, MAX_DESCRIPTION)
    consent_text = _clean_text("consent_text", consent_text, MAX_CONSENT_TEXT)
    if not consent_text:
        raise InvalidInput("consent_text", _("A list needs a consent text."))
    if db.session.scalar(select(MailingList.id).where(MailingList.slug == slug)):
        raise InvalidInput("slug", _("A list named %(slug)s exists already.", slug=repr(slug)))
    mailing_list = MailingList(slug=slug, name=name, description=description, is_default=False)
    db.session.add(mailing_list)
    db.session.flush()
    if default:
        _make_sole_default(mailing_list)
    text = ConsentText(list_id=mailing_list.id, version=1, text=consent_text)
    db.session.add(text)
    db.session.flush()
    if actor is not None:
        details = {**_snapshot(mailing_list), "consent_text_id": text.id, "consent_version": 1}
        audit.record(actor, "list.create", "list", mailing_list.id, details=details, ip=ip)
    return mailing_list


@transactional
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


def get_list(list_id: int) -> MailingList | None:
    """The list with this id (archived or not), or None."""
    return db.session.get(MailingList, list_id)


def all_lists() -> list[MailingList]:
    """Every list for the console: open ones first, default first, then by name."""
    return list(
        db.session.scalars(
            select(MailingList).order_by(
                MailingList.archived_at.is_not(None),
                MailingList.is_default.desc(),
                MailingList.name,
            )
        )
    )


def consent_history(list_id: int) -> list[tuple[ConsentText, int]]:
    """Every consent text version of a list, newest first, with how many
    subscriptions were given under it."""
    used = (
        select(Subscription.consent_text_id, func.count().label("n"))
        .where(Subscription.list_id == list_id)
        .group_by(Subscription.consent_text_id)
        .subquery()
    )
    rows = db.session.execute(
        select(ConsentText, func.coalesce(used.c.n, 0))
        .outerjoin(used, used.c.consent_text_id == ConsentText.id)
        .where(ConsentText.list_id == list_id)
        .order_by(ConsentText.version.desc())
    ).all()
    return [(text, int(count)) for text, count in rows]


@transactional
def update_list(
    list_id: int,
    *,
    name: str,
    description: str,
    default: bool,
    consent_text: str | None = None,
    actor: StaffUser,
    ip: str | None = None,
) -> ConsentText | None:
    """Change a list's name, description and default flag.

    A ``consent_text`` that differs from the version in force becomes a new
    version in the same transaction; that version is returned (None otherwise).
    """
    mailing_list = _locked(list_id)
    before = _snapshot(mailing_list)
    mailing_list.name = _clean_name(name)
    mailing_list.description = _clean_text("description", description, MAX_DESCRIPTION)
    if default and not mailing_list.is_default:
        if mailing_list.archived_at is not None:
            raise InvalidInput("default", _("An archived list cannot be the default list."))
        _make_sole_default(mailing_list)
    elif not default:
        mailing_list.is_default = False
    changed = audit.changes(before, _snapshot(mailing_list))
    if changed:
        audit.record(actor, "list.update", "list", list_id, details=changed, ip=ip)
    version = None
    if consent_text is not None:
        version = _add_consent_version(mailing_list, consent_text, actor, ip)
    return version


@transactional
def set_archived(
    list_id: int, archived: bool, *, actor: StaffUser, ip: str | None = None
) -> MailingList:
    """Archive (no new signups or campaigns; subscribers stay) or reopen a list."""
    mailing_list = _locked(list_id)
    if archived == (mailing_list.archived_at is not None):
        return mailing_list
    if archived and mailing_list.is_default:
        raise InvalidInput("default", _("Make another list the default before archiving this one."))
    mailing_list.archived_at = utcnow() if archived else None
    action = "list.archive" if archived else "list.unarchive"
    audit.record(actor, action, "list", list_id, details={"slug": mailing_list.slug}, ip=ip)
    return mailing_list


def _locked(list_id: int) -> MailingList:
    """The list, locked for this transaction (serialises version numbering)."""
    mailing_list = db.session.scalar(
        select(MailingList).where(MailingList.id == list_id).with_for_update()
    )
    if mailing_list is None:
        raise LookupError(f"no list {list_id}")
    return mailing_list


def _add_consent_version(
    mailing_list: MailingList, raw: str, actor: StaffUser | None, ip: str | None
) -> ConsentText | None:
    """Insert the next version unless the text is the one in force (in the caller's transaction).

    Earlier versions are never touched: subscriptions and ledger events keep
    their ids, and new signups see the new version from now on.
    """
    text = _clean_text("consent_text", raw, MAX_CONSENT_TEXT)
    if not text:
        raise InvalidInput("consent_text", _("A list needs a consent text."))
    current = current_consent_text(mailing_list.id)
    if text == current.text:
        return None
    version = ConsentText(list_id=mailing_list.id, version=current.version + 1, text=text)
    db.session.add(version)
    db.session.flush()
    details = {
        "before": {"version": current.version, "consent_text_id": current.id},
        "after": {"version": version.version, "consent_text_id": version.id},
    }
    audit.record(actor, "list.consent_version", "list", mailing_list.id, details=details, ip=ip)
    return version


def _make_sole_default(mailing_list: MailingList) -> None:
    """Make this the one default list (the signup form preselects only one)."""
    db.session.execute(
        update(MailingList)
        .where(MailingList.id != mailing_list.id, MailingList.is_default.is_(True))
        .values(is_default=False)
    )
    mailing_list.is_default = True


def _snapshot(mailing_list: MailingList) -> dict[str, Any]:
    """The audited fields of a list."""
    return {
        "slug": mailing_list.slug,
        "name": mailing_list.name,
        "description": mailing_list.description,
        "default": mailing_list.is_default,
    }


def _clean_name(raw: str) -> str:
    """A list name: one line, 1 to MAX_NAME characters, no encoded word."""
    if CONTROL_CHARACTERS.search(raw or ""):
        raise InvalidInput("name", _("The name contains control characters."))
    if ENCODED_WORD.search(raw or ""):
        # The name is in List-Id and the welcome mail's subject.
        raise InvalidInput(
            "name",
            _(
                "The list name cannot contain an encoded word (=?…?=): mail programs"
                " would decode it into the mail's header."
            ),
        )
    name = " ".join((raw or "").split())
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(
            "name", _("Give the list a name of 1 to %(max)s characters.", max=MAX_NAME)
        )
    return name


def _clean_text(field: str, raw: str, limit: int) -> str:
    """A longer text: line ends normalised, trimmed, bounded, no control characters."""
    text = (raw or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if TEXT_CONTROL_CHARACTERS.search(text):
        raise InvalidInput(field, _("The text contains control characters."))
    if len(text) > limit:
        raise InvalidInput(field, _("Use at most %(max)s characters.", max=limit))
    return text
