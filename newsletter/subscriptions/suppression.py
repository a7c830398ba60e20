"""The suppression list: addresses never to mail again, kept as keyed digests.

An address goes on the list after a hard bounce (``deliverability/suppress.py``,
reason ``bounce``) and when it is erased (``privacy/erasure.py``, reason
``erased``). It comes off only when the person signs up anew and confirms
(``service.confirm``). The list stores the address's keyed digest
(``ledger.keys.email_digest``), the same pseudonym as the ledger's, so it
holds no address in clear. A digest depends on the ledger key: a lift removes
the address under every key in use. Every function works in the caller's
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ..database import among
from ..extensions import db
from ..ledger.keys import email_digest, email_digests
from ..models import Suppression

BOUNCE = "bounce"
ERASED = "erased"
COMPLAINT = "complaint"
_CHUNK = 1000  # digests per query


def add(email_key: str, reason: str) -> bool:
    """Put an address on the list as its digest under the current key; False if already there.

    Idempotent: adding an address that is on the list changes nothing. Two
    workers may add one address at the same moment: the second one's insert
    hits the unique digest and is rolled back to a savepoint.
    """
    digest = email_digest(email_key)
    if db.session.scalar(select(Suppression.id).where(Suppression.email_digest == digest)):
        return False
    try:
        with db.session.begin_nested():
            db.session.add(Suppression(email_digest=digest, reason=reason))
    except IntegrityError:
        return False
    return True


def lift(email_key: str) -> None:
    """Take an address off the list, under every ledger key in use (confirming
    proves the mailbox receives mail again)."""
    db.session.execute(
        delete(Suppression).where(Suppression.email_digest.in_(email_digests(email_key)))
    )


def is_suppressed(email_key: str) -> bool:
    """Whether the address is on the list under any ledger key in use."""
    return bool(suppressed_among(email_digests(email_key)))


def suppressed_among(digests: Sequence[str]) -> set[str]:
    """The digests of ``digests`` that are on the list.

    Set-based: one query per thousand digests, on PostgreSQL with the digests
    as one array parameter (``among``). The caller chooses the digests: under
    the current key only, or under every key (``ledger.keys.email_digests``).
    """
    found: set[str] = set()
    unique = list(dict.fromkeys(digests))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        found.update(
            db.session.scalars(
                select(Suppression.email_digest).where(among(Suppression.email_digest, chunk))
            )
        )
    return found
