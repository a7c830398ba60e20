"""The consent ledger: append events, seal them into a signed Merkle tree, verify, prove."""

from .append import append_event
from .evidence import Evidence, evidence_from_request
from .keys import email_digests
from .verify import verify_ledger

__all__ = ["Evidence", "append_event", "email_digests", "evidence_from_request", "verify_ledger"]
