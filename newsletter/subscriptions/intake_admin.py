"""Staff side of the signup intake: the rows a worker could not process.

A failed row (``failed_at`` set, ``last_error`` saying why) waits for staff
and blocks nothing. Staff see it with the lists it asks for, then either
retry it (the row is waiting again, from a clean slate, and the next worker
round takes it) or discard it (the row and the personal data in it are
gone). Both act only on a row that is still failed, so two people pressing
the button at once, or a worker that got there first, change nothing twice.
Both are audited without the address.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ..extensions import db
from ..models import MailingList, SignupIntake, StaffUser
from ..staff import audit
from ..transaction import transactional

# The failed rows shown on one page, oldest first; the rest wait for these.
FAILED_SHOWN = 200


@dataclass(frozen=True)
class AskedList:
    """A list a row asks for: its id and name (None: the list was deleted)."""

    id: int
    name: str | None


@dataclass(frozen=True)
class FailedRow:
    """One failed intake row as the console shows it."""

    id: int
    received_at: datetime
    failed_at: datetime | None
    channel: str
    email: str
    lists: list[AskedList]
    reason: str
    attempts: int


@transactional
def failed_rows(limit: int = FAILED_SHOWN) -> list[FailedRow]:
    """The failed rows, oldest first, with the names of the lists they ask
    for (a deleted list keeps its id and no name). Two queries."""
    rows = list(
        db.session.scalars(
            select(SignupIntake)
            .where(SignupIntake.failed_at.is_not(None))
            .order_by(SignupIntake.id)
            .limit(limit)
        )
    )
    list_ids = {int(pair[0]) for row in rows for pair in row.terms}
    names: dict[int, str] = (
        dict(
            db.session.execute(
                select(MailingList.id, MailingList.name).where(MailingList.id.in_(list_ids))
            ).all()
        )
        if list_ids
        else {}
    )
    return [
        FailedRow(
            id=row.id,
            received_at=row.received_at,
            failed_at=row.failed_at,
            channel=row.channel,
            email=row.email,
            lists=[AskedList(int(pair[0]), names.get(int(pair[0]))) for pair in row.terms],
            reason=row.last_error or "",
            attempts=row.attempts,
        )
        for row in rows
    ]


def _failed(row_id: int) -> SignupIntake | None:
    """The row if it is still failed, locked against a concurrent retry or discard."""
    return db.session.scalar(
        select(SignupIntake)
        .where(SignupIntake.id == row_id, SignupIntake.failed_at.is_not(None))
        .with_for_update()
    )


def _details(row: SignupIntake) -> dict[str, Any]:
    """What the audit trail keeps of a row: never the address, name or reason
    (an error's text may quote the address)."""
    return {
        "received_at": row.received_at.isoformat(),
        "channel": row.channel,
        "lists": [int(pair[0]) for pair in row.terms],
        "attempts": row.attempts,
    }


@transactional
def retry_failed(row_id: int, *, actor: StaffUser, ip: str | None = None) -> bool:
    """Make a failed row wait again from a clean slate (no failure, no lease,
    no attempts), audited; False when the row is not failed (any more).
    Call ``intake.signal_arrival`` after it returned to wake a worker here."""
    row = _failed(row_id)
    if row is None:
        return False
    audit.record(actor, "intake.retry", "signup_intake", row_id, details=_details(row), ip=ip)
    row.failed_at = row.last_error = row.lease_until = row.leased_by = None
    row.attempts = 0
    return True


@transactional
def discard_failed(row_id: int, *, actor: StaffUser, ip: str | None = None) -> bool:
    """Delete a failed row and the personal data in it, audited; False when
    the row is not failed (any more)."""
    row = _failed(row_id)
    if row is None:
        return False
    audit.record(actor, "intake.discard", "signup_intake", row_id, details=_details(row), ip=ip)
    db.session.delete(row)
    return True
