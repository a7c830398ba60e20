"""CSV export of subscribers (a filtered console view, or `newsletter list export`).

One row per subscription: who, which list, its status and the consent times.
Rows are produced in keyset batches, each read in its own short unit of work,
so a million rows never sit in memory and SQLite's write lock (every
transaction there is BEGIN IMMEDIATE) is released between batches.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import datetime

from sqlalchemy import select

from ..extensions import db
from ..models import ConsentText, MailingList, StaffUser, Subscriber, Subscription
from ..staff import audit
from ..transaction import transactional, unit_of_work
from .search import SubscriberFilter, subscriber_ids

COLUMNS = (
    "email",
    "name",
    "locale",
    "list",
    "status",
    "consent_text_version",
    "requested_at",
    "confirmed_at",
    "unsubscribed_at",
    "subscriber_since",
)
BATCH_SIZE = 1000
# A spreadsheet runs a cell that starts with one of these as a formula
# (CSV injection, OWASP); a leading apostrophe makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: str) -> str:
    """The cell as text a spreadsheet will not evaluate."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


@transactional
def record_export(
    flt: SubscriberFilter, *, actor: StaffUser | None, ip: str | None, target: str
) -> None:
    """Write the audit entry for an export (who, which filter, where to), committed.

    Written before the first row goes out: an export that is cut off half way
    has still happened.
    """
    audit.record(
        actor,
        "subscribers.export",
        "subscribers",
        "",
        details={"filter": flt.as_args(), "target": target},
        ip=ip,
    )


def export_rows(flt: SubscriberFilter, batch_size: int = BATCH_SIZE) -> Iterator[list[str]]:
    """The header, then one row per matching subscription, newest subscriber first."""
    yield list(COLUMNS)
    before: int | None = None
    while True:
        # Each batch is read in its own unit of work, ended before the caller
        # sends the rows on.
        with unit_of_work():
            ids_query, key = subscriber_ids(flt)
            if before is not None:
                ids_query = ids_query.where(key < before)
            ids = list(db.session.scalars(ids_query.order_by(key.desc()).limit(batch_size)))
            rows = _subscription_rows(flt, ids) if ids else []
        yield from rows
        if len(ids) < batch_size:
            break
        before = ids[-1]


def _subscription_rows(flt: SubscriberFilter, ids: list[int]) -> list[list[str]]:
    """The rows for one batch of subscriber ids, in the order of ``ids``."""
    query = (
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.name,
            Subscriber.locale,
            Subscriber.created_at,
            MailingList.slug,
            Subscription.status,
            ConsentText.version,
            Subscription.requested_at,
            Subscription.confirmed_at,
            Subscription.unsubscribed_at,
        )
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .join(MailingList, MailingList.id == Subscription.list_id)
        .join(ConsentText, ConsentText.id == Subscription.consent_text_id)
        .where(Subscriber.id.in_(ids))
        .order_by(Subscriber.id.desc(), MailingList.slug)
    )
    if flt.list_id is not None:
        query = query.where(Subscription.list_id == flt.list_id)
    if flt.status is not None:
        query = query.where(Subscription.status == flt.status)
    return [
        [
            row.email,
            row.name,
            row.locale,
            row.slug,
            str(row.status),
            str(row.version),
            _time(row.requested_at),
            _time(row.confirmed_at),
            _time(row.unsubscribed_at),
            _time(row.created_at),
        ]
        for row in db.session.execute(query)
    ]


def _time(value: datetime | None) -> str:
    """ISO 8601 in UTC, or empty."""
    return value.isoformat() if value else ""


def csv_chunks(rows: Iterable[list[str]], rows_per_chunk: int = 500) -> Iterator[str]:
    """The rows as CSV text (RFC 4180, CRLF), every cell neutralised, in chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    pending = 0
    for row in rows:
        writer.writerow([neutralise(cell) for cell in row])
        pending += 1
        if pending >= rows_per_chunk:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if pending:
        yield buffer.getvalue()
