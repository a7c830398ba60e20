"""The verification status of one address's events, as the staff console shows it.

For each event of the address (matched by the keyed pseudonym, like the proof):

- ``waiting``: not sealed yet (its ``seq`` is past the latest checkpoint); the
  worker seals it within LEDGER_SEAL_INTERVAL seconds.
- ``verified``: sealed, its leaf as recomputed now from the row and the texts
  equals the stored leaf, its inclusion proof from the stored tree leads to
  the root of the latest checkpoint whose signature holds under a key of the
  ledger, and its personal fields match their commitment (or were erased
  together with the salt).
- ``failed``: any of those does not hold; ``reasons`` says which.

These are the checks ``newsletter-verify`` makes on the person's bundle, made
here from the database, so staff see a failure before anyone else does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import and_, select

from newsletter_verify import (
    Checkpoint,
    leaf_hash,
    parse_checkpoint,
    parse_note,
    parse_vkey,
    verify_inclusion,
    verify_note,
)

from ..extensions import db
from ..models import ConsentEvent, LedgerKey, LedgerNode
from ..transaction import in_transaction
from ..validation import normalise_email
from .append import PERSONAL_FIELDS
from .keyring import SigningKeyError
from .keys import commitment, email_digests
from .leaf import LEAF_COLUMNS, Texts, leaf_bytes
from .proofs import inclusion_proof
from .seal import LedgerBroken, latest_checkpoint, seal_waiting

log = logging.getLogger(__name__)

VERIFIED = "verified"
WAITING = "waiting"
FAILED = "failed"


@dataclass(frozen=True)
class EventStatus:
    """One event's state and, when it failed, every reason."""

    seq: int
    state: str
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckpointStatus:
    """The checkpoint the events were checked against (None before the first seal)."""

    size: int
    signed_at: str
    reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the checkpoint is signed by a key of the ledger and matches its row."""
        return not self.reasons


@dataclass(frozen=True)
class AddressStatus:
    """The status of each of an address's events, by ``seq``."""

    checkpoint: CheckpointStatus | None
    events: dict[int, EventStatus] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """How many events failed."""
        return sum(1 for status in self.events.values() if status.state == FAILED)


def address_status(address: str) -> AddressStatus:
    """Check every event of ``address`` against the latest checkpoint (read only)."""
    _email, email_key = normalise_email(address)
    latest = latest_checkpoint()
    checkpoint, signed = _checkpoint(latest)
    texts = Texts.load()
    leaf = LedgerNode.__table__.alias("leaf")
    rows = db.session.execute(
        select(
            *LEAF_COLUMNS,
            *(getattr(ConsentEvent, name) for name in PERSONAL_FIELDS),
            leaf.c.hash.label("stored_leaf"),
        )
        .outerjoin(leaf, and_(leaf.c.level == 0, leaf.c.idx == ConsentEvent.seq - 1))
        .where(ConsentEvent.email_digest.in_(email_digests(email_key)))
        .order_by(ConsentEvent.seq)
    ).mappings()
    events = {row["seq"]: _event(row, texts, checkpoint, signed) for row in rows}
    return AddressStatus(checkpoint, events)


def _checkpoint(row: Any) -> tuple[CheckpointStatus | None, Checkpoint | None]:
    """The latest checkpoint's status and, when its signature holds, its signed body."""
    if row is None:
        return None, None
    signed_at = row.signed_at.strftime("%Y-%m-%d %H:%M:%S") if row.signed_at else ""
    try:
        note = parse_note(row.note)
        body = parse_checkpoint(note.body)
    except ValueError as exc:
        return CheckpointStatus(
            row.size, signed_at, (_("the checkpoint is unreadable: %(error)s", error=str(exc)),)
        ), None
    verifiers = [parse_vkey(vkey) for vkey in db.session.scalars(select(LedgerKey.vkey))]
    if not any(verify_note(note, verifier) for verifier in verifiers):
        reason = _("the checkpoint's signature does not verify with any key of the ledger")
        return CheckpointStatus(row.size, signed_at, (reason,)), None
    if (body.size, body.root.hex()) != (row.size, row.root_hash):
        reason = _("the checkpoint's signed size or root differs from its row")
        return CheckpointStatus(row.size, signed_at, (reason,)), body
    return CheckpointStatus(row.size, signed_at), body


def _event(
    row: Mapping[Any, Any],
    texts: Texts,
    checkpoint: CheckpointStatus | None,
    signed: Checkpoint | None,
) -> EventStatus:
    """One event's status (see the module docstring)."""
    seq = row["seq"]
    reasons = _commitment_problems(row)
    size = signed.size if signed is not None else (checkpoint.size if checkpoint else 0)
    if seq > size:
        return EventStatus(seq, FAILED if reasons else WAITING, tuple(reasons))
    reasons += _text_problems(row, texts)
    leaf = leaf_hash(leaf_bytes(row, texts))
    stored = bytes(row["stored_leaf"]) if row["stored_leaf"] is not None else None
    if stored is None:
        reasons.append(_("sealed, but its leaf is not stored"))
    elif stored != leaf:
        reasons.append(
            _(
                "does not match its sealed leaf: the event, its consent text or its "
                "privacy policy was changed after it was sealed"
            )
        )
    if signed is None:
        reasons.append(_("no checkpoint with a valid signature to check it against"))
    else:
        reasons += _inclusion_problems(seq - 1, stored if stored is not None else leaf, signed)
    return EventStatus(seq, FAILED if reasons else VERIFIED, tuple(reasons))


def _inclusion_problems(index: int, leaf: bytes, signed: Checkpoint) -> list[str]:
    """The stored leaf must be provably in the signed tree (checked with the stored
    leaf, so that a changed event and a changed tree are told apart)."""
    try:
        proof = inclusion_proof(index, signed.size)
    except KeyError:
        return [_("a tree node its inclusion proof needs is missing")]
    if not verify_inclusion(index, signed.size, leaf, proof, signed.root):
        return [_("its inclusion proof does not lead to the signed checkpoint's root")]
    return []


def _commitment_problems(row: Mapping[Any, Any]) -> list[str]:
    """Personal fields must match their commitment, or be erased with the salt."""
    personal = {name: row[name] for name in PERSONAL_FIELDS if name != "salt"}
    if row["salt"] is None:
        if any(value is not None for value in personal.values()):
            return [_("personal fields without their salt")]
        return []
    if commitment(bytes.fromhex(row["salt"]), personal) != row["personal_commitment"]:
        return [_("its personal fields do not match their commitment")]
    return []


def _text_problems(row: Mapping[Any, Any], texts: Texts) -> list[str]:
    """The consent text and policy the event names must hash as when they were written."""
    found = []
    text = texts.consent.get(row["consent_text_id"]) if row["consent_text_id"] else None
    if text is not None and text.changed:
        found.append(
            _("its consent text (version %(v)s) was edited after it was written", v=text.version)
        )
    policy = texts.policies.get(row["policy_version_id"]) if row["policy_version_id"] else None
    if policy is not None and policy.changed:
        found.append(
            _(
                "its privacy policy (version %(v)s) was edited after it was imported",
                v=policy.version,
            )
        )
    return found


def seal_for_proof() -> bool:
    """Seal every event waiting now (its own transaction), so that a proof or a
    data export made next covers the newest events too; True when it sealed.

    A proof must still be handed out when sealing fails (a broken ledger, a
    missing key file): the failure is logged, ``newsletter ledger verify`` and
    the dashboard name it, and the proof covers what was sealed before.
    Inside a caller's transaction nothing is sealed: a seal holds the tree's
    lock until its transaction ends, and that must not be the caller's.
    """
    if in_transaction():
        return False
    try:
        seal_waiting()
    except (LedgerBroken, SigningKeyError, OSError) as exc:
        log.error("sealing before a consent proof failed: %s", exc)
        return False
    return True
