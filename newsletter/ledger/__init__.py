"""The consent ledger: append events, verify the chain, prove consent."""

from .chain import append_event, verify_chain
from .evidence import Evidence, evidence_from_request
from .keys import email_digests

__all__ = ["Evidence", "append_event", "email_digests", "evidence_from_request", "verify_chain"]
