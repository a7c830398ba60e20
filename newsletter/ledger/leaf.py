"""A consent event as a Merkle leaf: the RFC 8785 form of everything it binds.

The leaf binds the event's fields, the exact consent text and privacy policy
by their SHA-256 (so editing a text afterwards breaks every leaf that showed
it), the keyed address digest and the salted commitment to the personal
fields. The formats are in docs/ledger.md; ``newsletter_verify`` checks them
with nothing but the bundle and the public key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from ..extensions import db
from ..models import ConsentEvent, ConsentText, MailingList, PolicyVersion
from .jcs import canonical

LEAF_VERSION = 1
# The event columns a leaf is made of (with ``seq`` and the text references).
LEAF_COLUMNS = (
    ConsentEvent.seq,
    ConsentEvent.event,
    ConsentEvent.channel,
    ConsentEvent.occurred_at,
    ConsentEvent.list_id,
    ConsentEvent.consent_text_id,
    ConsentEvent.policy_version_id,
    ConsentEvent.email_digest,
    ConsentEvent.personal_commitment,
    ConsentEvent.details,
)


@dataclass(frozen=True)
class TextRef:
    """A consent text or policy version as leaves name it: version and SHA-256 of the text."""

    version: int
    sha256: str
    stored_sha256: str | None

    @property
    def changed(self) -> bool:
        """True when the text no longer hashes to what was recorded when it was written."""
        return self.sha256 != self.stored_sha256


@dataclass(frozen=True)
class Texts:
    """The list slugs, consent texts and policies that leaves refer to, hashed
    from their text as it is now (read once per seal, verify or bundle)."""

    lists: dict[int, str]
    consent: dict[int, TextRef]
    policies: dict[int, TextRef]

    @classmethod
    def load(cls) -> Texts:
        """Read every list slug, consent text and policy version (a few rows)."""
        lists = {
            row.id: row.slug for row in db.session.execute(select(MailingList.id, MailingList.slug))
        }
        consent = {
            row.id: TextRef(row.version, sha256_hex(row.text), row.sha256)
            for row in db.session.execute(
                select(ConsentText.id, ConsentText.version, ConsentText.text, ConsentText.sha256)
            )
        }
        policies = {
            row.id: TextRef(row.version, sha256_hex(row.body_markdown), row.text_sha256)
            for row in db.session.execute(
                select(
                    PolicyVersion.id,
                    PolicyVersion.version,
                    PolicyVersion.body_markdown,
                    PolicyVersion.text_sha256,
                )
            )
        }
        return cls(lists, consent, policies)

    def changed(self) -> list[str]:
        """Each text whose content no longer matches the hash recorded with it."""
        found = [
            f"consent text #{text_id} (version {ref.version}) was edited after it was written"
            for text_id, ref in sorted(self.consent.items())
            if ref.changed
        ]
        found += [
            f"privacy policy version {ref.version} was edited after it was imported"
            for ref in sorted(self.policies.values(), key=lambda ref: ref.version)
            if ref.changed
        ]
        return found


def sha256_hex(text: str) -> str:
    """SHA-256 of a text's UTF-8 bytes, as hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def timestamp(value: datetime) -> str:
    """An instant as a leaf writes it: UTC, always six fraction digits, ``Z``."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def leaf_document(row: Mapping[Any, Any], texts: Texts) -> dict[str, Any]:
    """The leaf of one event row (the ``LEAF_COLUMNS``) as a JSON value."""
    text = texts.consent.get(row["consent_text_id"]) if row["consent_text_id"] else None
    policy = texts.policies.get(row["policy_version_id"]) if row["policy_version_id"] else None
    return {
        "v": LEAF_VERSION,
        "seq": row["seq"],
        "event": row["event"],
        "channel": row["channel"],
        "occurred_at": timestamp(row["occurred_at"]),
        "list": texts.lists.get(row["list_id"]) if row["list_id"] else None,
        "consent_text_version": text.version if text else None,
        "consent_text_sha256": text.sha256 if text else None,
        "policy_version": policy.version if policy else None,
        "policy_sha256": policy.sha256 if policy else None,
        "email_digest": row["email_digest"],
        "personal_commitment": row["personal_commitment"],
        "details": row["details"] or {},
    }


def leaf_bytes(row: Mapping[Any, Any], texts: Texts) -> bytes:
    """The leaf of one event row in its canonical (RFC 8785) form."""
    return canonical(leaf_document(row, texts))
