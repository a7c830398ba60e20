"""The request side of a public signup: check it, store it, answer.

Every public signup (the hosted form, a static site's form, the JSON API)
does the same work whoever the address belongs to: it checks what does not
depend on the address (syntax of every field, the lists against the open
lists, ``terms.open_terms``), then INSERTs one intake row holding all the
evidence and commits. Nothing keyed by the address is read or written, so the
answer takes the same time for a new, a pending and an active address, and no
request waits for another's lock. A worker does the rest
(``intake_run.process_intake``) and deletes the row in the same transaction.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, insert, select

from ..extensions import db
from ..ledger import Evidence
from ..models import Channel, SignupIntake, utcnow
from ..transaction import transactional
from ..validation import clean_locale, clean_name, clean_slugs, normalise_email
from .terms import open_terms

# Set after each intake row is committed: a worker in this process (``newsletter
# run``) waits on it and starts at once; workers elsewhere poll (INTAKE_POLL_SECONDS).
arrived = threading.Event()


# Built once: a statement made per request (``.values(...)``) costs more to
# build and to key for the statement cache than the INSERT costs to send.
_INSERT = insert(SignupIntake.__table__)


@dataclass(frozen=True)
class SignupRequest:
    """A signup as received from a form or the API."""

    email: str
    channel: Channel
    evidence: Evidence
    name: str | None = None
    list_slugs: list[str] = field(default_factory=list)
    locale: str | None = None
    lists_field: str = "list"


@transactional
def accept_signup(request: SignupRequest) -> None:
    """Check a signup and store it for a worker: one INSERT, committed on return.

    The outcome is deliberately invisible to the caller, and so is the work:
    new, pending, active and unsubscribed addresses all take this same path.
    Raises InvalidInput, naming the field, for input that is wrong whoever
    sends it (a malformed address, an unknown list); then nothing is stored.
    """
    email, email_key = normalise_email(request.email)
    name = clean_name(request.name)
    slugs = clean_slugs(request.list_slugs, request.lists_field)
    locale = clean_locale(request.locale, current_app.config["LANGUAGES"])
    terms, policy_id = open_terms(slugs, request.lists_field)
    evidence = request.evidence
    db.session.execute(
        _INSERT,
        {
            "received_at": utcnow(),
            "channel": str(request.channel),
            "email": email,
            "email_key": email_key,
            "name": name,
            "locale": locale,
            "terms": [[t.list_id, t.text_id] for t in terms],
            "policy_version_id": policy_id,
            "ip": evidence.ip,
            "user_agent": evidence.user_agent,
            "source_url": evidence.source_url,
            "attempts": 0,
        },
    )


def signal_arrival() -> None:
    """Wake a worker in this process: call after ``accept_signup`` returned."""
    arrived.set()


def waiting_of(email_key: str) -> list[SignupIntake]:
    """The intake rows of an address (waiting or failed), oldest first: for
    erasure and the data export. A scan: the table holds only what waits."""
    return list(
        db.session.scalars(
            select(SignupIntake)
            .where(SignupIntake.email_key == email_key)
            .order_by(SignupIntake.id)
        )
    )


def forget_waiting(email_key: str) -> list[int]:
    """Delete an address's intake rows in the caller's transaction; their ids.

    A row a worker took meanwhile is not among them: the DELETE waits for the
    worker's commit, and the row is gone by then.
    """
    deleted = db.session.scalars(
        delete(SignupIntake)
        .where(SignupIntake.email_key == email_key)
        .returning(SignupIntake.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(int(row_id) for row_id in deleted)


# A signup waiting longer than this (seconds) means no worker is taking them:
# the dashboard and `newsletter check` say so.
LATE_SECONDS = 60

_WAITING = SignupIntake.failed_at.is_(None)
# How many rows wait, the oldest's request time, how many failed: one query.
QUEUE_STATE = select(
    func.count().filter(_WAITING),
    func.min(SignupIntake.received_at).filter(_WAITING),
    func.count().filter(SignupIntake.failed_at.is_not(None)),
)


@dataclass(frozen=True)
class QueueState:
    """The intake queue as staff see it: rows waiting, the oldest's time, failed rows."""

    waiting: int
    oldest: datetime | None
    failed: int

    @classmethod
    def of(cls, row: Any) -> QueueState:
        """The state from a row of QUEUE_STATE."""
        return cls(int(row[0] or 0), row[1], int(row[2] or 0))

    def waited(self) -> float | None:
        """Seconds the oldest waiting row has waited; None when none waits."""
        return (utcnow() - self.oldest).total_seconds() if self.oldest is not None else None

    def late(self) -> bool:
        """Whether the oldest waiting row has waited longer than LATE_SECONDS."""
        waited = self.waited()
        return waited is not None and waited > LATE_SECONDS


def queue_state() -> QueueState:
    """The intake queue now (QUEUE_STATE in the session's transaction)."""
    return QueueState.of(db.session.execute(QUEUE_STATE).one())
