"""What a public signup agrees to, read without touching anything of the person's.

A signup request must not read or write anything keyed by the address, and it
should cost one INSERT. So the open lists, the consent text version in force
for each and the privacy policy in force today are read once and kept for at
most SIGNUP_TERMS_CACHE_SECONDS in each process (``open_terms``):

- A change to a list, a consent text or a policy committed by this process
  makes its next signup read them afresh (``_note_change`` and ``_bump`` watch
  the session), so the console and the commands take effect at once here.
- Another process sees such a change within SIGNUP_TERMS_CACHE_SECONDS. A slug
  the snapshot does not know is looked up afresh before it is refused, so a new
  list is open at once everywhere; a list archived or a text edited elsewhere
  is seen within the window (the worker refuses an archived list).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

from flask import current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

from ..extensions import db
from ..models import ConsentText, MailingList, PolicyVersion, utcnow
from ..service_messages import page_gettext as _
from ..validation import InvalidInput
from .lifecycle import terms_query

_EXTENSION = "newsletter.open_terms"
_generation = itertools.count(1)
_current = [0]  # the generation of the newest committed change to lists, texts or policies
_lock = threading.Lock()


@dataclass(frozen=True)
class ListTerms:
    """An open list and the id of its consent text version in force."""

    list_id: int
    text_id: int


@dataclass(frozen=True)
class OpenTerms:
    """A snapshot of the open lists with their terms and the policy in force on ``day``."""

    by_slug: dict[str, ListTerms]
    default: ListTerms | None
    policy_id: int | None
    day: date
    generation: int
    read_at: float  # time.monotonic()

    def fresh(self, max_age: float) -> bool:
        """Whether no change was committed here since, the day is the same and
        the snapshot is younger than ``max_age`` seconds."""
        return (
            self.generation == _current[0]
            and self.day == utcnow().date()
            and time.monotonic() - self.read_at < max_age
        )

    def for_slugs(self, slugs: list[str]) -> list[ListTerms] | None:
        """The terms of the lists ``slugs`` names, in that order (the default list
        when none); None when a slug is not open or there is no list at all."""
        if not slugs:
            return [self.default] if self.default is not None else None
        found = [self.by_slug.get(slug) for slug in slugs]
        return None if None in found else [t for t in found if t is not None]


def open_terms(slugs: list[str], field: str) -> tuple[list[ListTerms], int | None]:
    """The terms of the open lists ``slugs`` names (the default list when none)
    and the policy in force: from the snapshot, read afresh when it is stale or
    does not know a slug. A slug that names no open list is the visitor's
    error, reported on ``field``."""
    snapshot = current_app.extensions.get(_EXTENSION)
    max_age = float(current_app.config["SIGNUP_TERMS_CACHE_SECONDS"])
    if snapshot is None or not snapshot.fresh(max_age) or snapshot.for_slugs(slugs) is None:
        snapshot = _read()
        current_app.extensions[_EXTENSION] = snapshot
    terms = snapshot.for_slugs(slugs)
    if terms is None and not slugs:
        raise InvalidInput(field, _("There is no list to subscribe to yet."))
    if terms is None:
        missing = [slug for slug in slugs if slug not in snapshot.by_slug]
        raise InvalidInput(field, _("Unknown list: %(slug)s.", slug=", ".join(missing)))
    return terms, snapshot.policy_id


def _read() -> OpenTerms:
    """Read the open lists, their consent texts and today's policy in one query."""
    generation = _current[0]
    today = utcnow().date()
    rows = db.session.execute(
        terms_query(today)
        .add_columns(MailingList.is_default)
        .where(MailingList.archived_at.is_(None))
        .order_by(MailingList.is_default.desc(), MailingList.id)
    ).all()
    missing = [row.id for row in rows if row.text_id is None]
    if missing:
        raise LookupError(f"list {missing[0]} has no consent text")
    by_slug = {row.slug: ListTerms(row.id, row.text_id) for row in rows}
    default = ListTerms(rows[0].id, rows[0].text_id) if rows else None
    policy_id = rows[0].policy_id if rows else None
    return OpenTerms(by_slug, default, policy_id, today, generation, time.monotonic())


_WATCHED = (MailingList, ConsentText, PolicyVersion)


@event.listens_for(Session, "after_flush")
def _note_change(session: Session, _context: Any) -> None:
    """Remember that this transaction wrote a list, a consent text or a policy."""
    changed = itertools.chain(session.new, session.dirty, session.deleted)
    if any(isinstance(obj, _WATCHED) for obj in changed):
        session.info["terms_changed"] = True


@event.listens_for(Session, "after_commit")
def _bump(session: Session) -> None:
    """After such a commit, every snapshot in this process is stale."""
    if session.info.pop("terms_changed", False):
        with _lock:
            _current[0] = next(_generation)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    """A rolled-back change changed nothing."""
    session.info.pop("terms_changed", None)
