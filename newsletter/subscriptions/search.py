"""Finding subscribers for the staff console and exports: filters and keyset pages.

One page must stay fast at a million subscribers on PostgreSQL (see
benchmarks/subscriber_search.py), so:

- pages are keyset pages (``id < before``, newest first), never OFFSET, and
  no exact COUNT is made per page;
- a fragment search uses LIKE/ILIKE '%fragment%', which PostgreSQL serves from
  the trigram GIN indexes of migration 0004, and needs 3 characters (a trigram);
- with a list filter the query starts from ``subscriptions`` and walks the
  (list_id, status, subscriber_id) index in order, stopping after one page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.orm import InstrumentedAttribute, selectinload

from ..extensions import db
from ..models import MailingList, Subscriber, Subscription, SubscriptionStatus
from ..service_messages import page_gettext as _
from ..validation import CONTROL_CHARACTERS, MAX_EMAIL, SLUG_PATTERN, InvalidInput

MIN_QUERY = 3  # pg_trgm indexes trigrams: a shorter fragment cannot use the index
MAX_PAGE_SIZE = 200
# LIKE's wildcards and our escape character, escaped so a search is literal.
LIKE_ESCAPE = "\\"


@dataclass(frozen=True)
class SubscriberFilter:
    """What the staff asked for: a fragment of address or name, a list, a status."""

    query: str = ""
    list_id: int | None = None
    list_slug: str = ""
    status: SubscriptionStatus | None = None

    def as_args(self) -> dict[str, str]:
        """The filter as query-string arguments (for links and the audit trail)."""
        args = {"q": self.query, "list": self.list_slug, "status": self.status or ""}
        return {key: str(value) for key, value in args.items() if value}


@dataclass(frozen=True)
class SearchPage:
    """One page of subscribers and the key of the next page (None: last page)."""

    subscribers: list[Subscriber]
    next_before: int | None
    statuses: dict[int, SubscriptionStatus] = field(default_factory=dict)


def parse_filter(args: Mapping[str, str]) -> SubscriberFilter:
    """Validate ``q``, ``list`` (a slug) and ``status``; raise InvalidInput naming the field."""
    raw_query = args.get("q") or ""
    # Looked for before whitespace is collapsed: split() would eat CR, LF and TAB.
    if CONTROL_CHARACTERS.search(raw_query):
        raise InvalidInput("q", _("The search contains control characters."))
    query = " ".join(raw_query.split())
    if len(query) > MAX_EMAIL:
        raise InvalidInput("q", _("Search for at most %(max)s characters.", max=MAX_EMAIL))
    if query and len(query) < MIN_QUERY:
        raise InvalidInput("q", _("Type at least %(min)s characters to search.", min=MIN_QUERY))
    slug = (args.get("list") or "").strip()
    list_id = None
    if slug:
        if not SLUG_PATTERN.match(slug):
            raise InvalidInput("list", _("Unknown list."))
        list_id = db.session.scalar(select(MailingList.id).where(MailingList.slug == slug))
        if list_id is None:
            raise InvalidInput("list", _("Unknown list."))
    raw_status = (args.get("status") or "").strip()
    try:
        status = SubscriptionStatus(raw_status) if raw_status else None
    except ValueError:
        raise InvalidInput("status", _("Unknown status.")) from None
    return SubscriberFilter(query=query, list_id=list_id, list_slug=slug, status=status)


def like_pattern(fragment: str) -> str:
    """``%fragment%`` with LIKE's wildcards escaped, so ``_`` and ``%`` match themselves."""
    escaped = fragment.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", r"\%").replace("_", r"\_")
    return f"%{escaped}%"


def subscriber_ids(
    flt: SubscriberFilter,
) -> tuple[Select[int], InstrumentedAttribute[int]]:
    """The ids matching ``flt`` and the column they are ordered by (newest first).

    With a list, the query is driven by ``subscriptions`` (one row per
    subscriber, as (subscriber_id, list_id) is unique); without one, by
    ``subscribers``, with a status filter as EXISTS over any list.
    """
    if flt.list_id is not None:
        key = Subscription.subscriber_id
        query = select(key).where(Subscription.list_id == flt.list_id)
        if flt.status is not None:
            query = query.where(Subscription.status == flt.status)
        if flt.query:
            query = query.join(Subscriber, Subscriber.id == Subscription.subscriber_id)
    else:
        key = Subscriber.id
        query = select(key)
        if flt.status is not None:
            query = query.where(
                exists().where(
                    Subscription.subscriber_id == Subscriber.id,
                    Subscription.status == flt.status,
                )
            )
    if flt.query:
        pattern = like_pattern(flt.query)
        query = query.where(
            or_(
                # email_key is case-folded already: a case-sensitive LIKE of the
                # case-folded fragment matches, and is what the index serves.
                Subscriber.email_key.like(pattern.casefold(), escape=LIKE_ESCAPE),
                Subscriber.name.ilike(pattern, escape=LIKE_ESCAPE),
            )
        )
    return query, key


def search_subscribers(
    flt: SubscriberFilter, *, before: int | None = None, size: int = 50
) -> SearchPage:
    """One keyset page of subscribers matching ``flt``, newest first, with subscriptions.

    One row more than asked is read to know whether a next page exists.
    """
    size = max(1, min(size, MAX_PAGE_SIZE))
    query, key = subscriber_ids(flt)
    if before is not None:
        query = query.where(key < before)
    ids = list(db.session.scalars(query.order_by(key.desc()).limit(size + 1)))
    has_next = len(ids) > size
    ids = ids[:size]
    loaded = db.session.scalars(
        select(Subscriber)
        .where(Subscriber.id.in_(ids))
        .options(selectinload(Subscriber.subscriptions).selectinload(Subscription.mailing_list))
    ).all()
    by_id = {s.id: s for s in loaded}
    subscribers = [by_id[i] for i in ids if i in by_id]
    statuses = {}
    if flt.list_id is not None:
        for subscriber in subscribers:
            for subscription in subscriber.subscriptions:
                if subscription.list_id == flt.list_id:
                    statuses[subscriber.id] = subscription.status
    return SearchPage(
        subscribers=subscribers,
        next_before=ids[-1] if has_next and ids else None,
        statuses=statuses,
    )
