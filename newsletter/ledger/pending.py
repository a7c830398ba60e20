"""An event on its way into the ledger: what both append paths take.

Callers say what happened, to whom and with what evidence; the ledger adds
the rest under the head lock (``seq``, time, the policy in force),
one event at a time (``chain.append_pending``) or many under one lock
(``batch.append_events``). Both turn a ``PendingEvent`` into the same row.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..extensions import db
from ..models import Subscriber
from .evidence import Evidence
from .keys import commitment, email_digest


@dataclass(frozen=True)
class Recorded:
    """When an event appended later happened, and the privacy policy in force
    then (None before any was imported): a signup taken from the intake."""

    at: datetime
    policy_version_id: int | None


@dataclass(frozen=True)
class PendingEvent:
    """One consent event, before it is chained.

    ``email`` is the address as stored (a personal field, cleared by erasure),
    ``email_key`` its normalised form, which the keyed ``email_digest`` is made
    of. ``evidence`` is the request's (a system event or an import has none:
    an import's evidence is in ``details``). ``recorded`` is set when the event
    happened before it is appended: its ``occurred_at`` and policy are then
    those recorded, not the time and policy of the append.
    """

    event: str
    channel: str
    subscriber_id: int | None
    email: str | None
    email_key: str
    evidence: Evidence = field(default_factory=Evidence)
    list_id: int | None = None
    consent_text_id: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    recorded: Recorded | None = None

    @classmethod
    def of(
        cls,
        subscriber: Subscriber,
        *,
        event: str,
        channel: str,
        evidence: Evidence,
        list_id: int | None = None,
        consent_text_id: int | None = None,
        details: Mapping[str, Any] | None = None,
        recorded: Recorded | None = None,
    ) -> PendingEvent:
        """The event of a subscriber row; one added in this transaction is flushed
        first, so that the event names its id."""
        if subscriber.id is None:
            db.session.flush()
        return cls(
            event=event,
            channel=channel,
            subscriber_id=subscriber.id,
            email=subscriber.email,
            email_key=subscriber.email_key,
            evidence=evidence,
            list_id=list_id,
            consent_text_id=consent_text_id,
            details=details or {},
            recorded=recorded,
        )

    def columns(self, key: bytes) -> dict[str, Any]:
        """The event's column values that do not depend on its place in the
        ledger: the keyed address digest made under ``key`` (the ledger key in
        use), and a fresh salt with the commitment to the personal fields."""
        personal = personal_fields(self.email, self.evidence)
        salt = secrets.token_bytes(32)
        return {
            "event": str(self.event),
            "channel": str(self.channel),
            "subscriber_id": self.subscriber_id,
            "list_id": self.list_id,
            "consent_text_id": self.consent_text_id,
            "email_digest": email_digest(self.email_key, key),
            "details": dict(self.details),
            "salt": salt.hex(),
            "personal_commitment": commitment(salt, personal),
            **personal,
        }


def personal_fields(email: str | None, evidence: Evidence) -> dict[str, str | None]:
    """An event's personal fields: in the leaf only through the salted
    commitment, cleared by erasure together with the salt."""
    return {
        "email": email,
        "ip": evidence.ip,
        "user_agent": evidence.user_agent,
        "source_url": evidence.source_url,
    }
