"""Reading the bounce mailbox: every message classified, recorded, then moved away.

``fetch_bounces`` reads the folder of BOUNCE_IMAP_URL, oldest message first.
Each message is classified (classify.py) and each of its reports recorded
(``record_report``: one transaction each, idempotent). A message whose
reports are all recorded (or that asks for nothing) is moved to
BOUNCE_IMAP_PROCESSED_FOLDER (default "Processed", created when missing), or
deleted when that setting is the empty string. A message that cannot be read
stays where it is, marked with the keyword NewsletterUnreadable so that later
runs pass it by, and is counted; one whose recording failed (say, the
database is down) stays unmarked and is tried again next run. The log names
messages by UID and reason only, never by address.

``fetch_due`` is the worker's: it runs ``fetch_bounces`` when
BOUNCE_IMAP_URL is set and BOUNCE_FETCH_INTERVAL seconds (default 300) have
passed since this process last did, and never raises. Several workers may
read the same mailbox: a report recorded twice counts once, and a message
another worker moved first is gone when this one asks for it.
"""

from __future__ import annotations

import imaplib
import logging
import time
from dataclasses import asdict, dataclass

from flask import Flask, current_app

from ..extensions import db
from .classify import Unreadable, classify
from .imap import Mailbox, MailboxError, parse_url
from .reports import record_report

log = logging.getLogger(__name__)

DEFAULT_PROCESSED_FOLDER = "Processed"
DEFAULT_INTERVAL = 300
# Messages read in one run at most; the rest wait for the next.
DEFAULT_LIMIT = 500
# A larger message is not read at all (a bounce returns at most our own mail).
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
_LAST_RUN = "newsletter.bounce_fetch_last"  # app.extensions: monotonic time of the last run


@dataclass
class FetchCounts:
    """What one run did (counts only)."""

    messages: int = 0  # read this run
    reports: int = 0  # bounces, complaints and auto-replies found in them
    recorded: int = 0  # new reports recorded and acted on
    duplicates: int = 0  # reports recorded before
    unreadable: int = 0  # messages left in the folder this run, marked
    unreadable_waiting: int = 0  # marked messages in the folder after the run
    failed: int = 0  # messages left for the next run: recording or moving failed
    moved: int = 0  # messages moved to the processed folder
    deleted: int = 0  # messages deleted (the processed folder setting is empty)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def fetch_bounces(limit: int = DEFAULT_LIMIT) -> FetchCounts:
    """Read, classify, record and move up to ``limit`` messages (module docstring).
    Raises MailboxError when the mailbox cannot be used at all."""
    config = current_app.config
    url = str(config.get("BOUNCE_IMAP_URL") or "")
    if not url:
        raise MailboxError("BOUNCE_IMAP_URL is not set.")
    processed = config.get("BOUNCE_IMAP_PROCESSED_FOLDER", DEFAULT_PROCESSED_FOLDER)
    processed = "" if processed is None else str(processed)
    domain = config.get("BOUNCE_DOMAIN") or None
    timeout = float(config.get("MAIL_TIMEOUT") or 30)
    counts = FetchCounts()
    with Mailbox(parse_url(url), timeout) as mailbox:
        try:
            if processed:
                mailbox.ensure_folder(processed)
            for uid in mailbox.uids()[:limit]:
                _handle(mailbox, uid, processed, domain, counts)
            counts.unreadable_waiting = mailbox.unreadable_count()
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(f"the IMAP session failed: {type(exc).__name__}") from None
    return counts


def _handle(
    mailbox: Mailbox, uid: int, processed: str, domain: str | None, counts: FetchCounts
) -> None:
    """One message: classify, record, move (or mark as unreadable)."""
    size = mailbox.size(uid)
    if size is None:
        return  # gone: another worker moved it
    counts.messages += 1
    if size > MAX_MESSAGE_BYTES:
        _keep_unreadable(mailbox, uid, counts, f"larger than {MAX_MESSAGE_BYTES} bytes")
        return
    raw = mailbox.fetch(uid)
    if raw is None:
        counts.messages -= 1
        return
    result = classify(raw, domain)
    if isinstance(result, Unreadable):
        _keep_unreadable(mailbox, uid, counts, result.reason)
        return
    counts.reports += len(result)
    try:
        for report in result:
            outcome = record_report(report)
            if outcome.duplicate:
                counts.duplicates += 1
            else:
                counts.recorded += 1
    except Exception as exc:  # the database: the message stays for the next run
        db.session.rollback()
        counts.failed += 1
        log.error("bounces: message uid %s not recorded (%s); kept", uid, type(exc).__name__)
        return
    try:
        if processed:
            mailbox.move(uid, processed)
            counts.moved += 1
        else:
            mailbox.delete(uid)
            counts.deleted += 1
    except MailboxError as exc:
        counts.failed += 1
        log.warning("bounces: message uid %s recorded but not moved: %s", uid, exc)


def _keep_unreadable(mailbox: Mailbox, uid: int, counts: FetchCounts, reason: str) -> None:
    counts.unreadable += 1
    log.warning("bounces: message uid %s is unreadable (%s); kept in the folder", uid, reason)
    try:
        mailbox.mark_unreadable(uid)
    except MailboxError as exc:  # a server without keywords: read again next run
        log.warning("bounces: message uid %s could not be marked: %s", uid, exc)


def fetch_due(app: Flask, now: float | None = None) -> FetchCounts | None:
    """Run ``fetch_bounces`` if BOUNCE_IMAP_URL is set and the interval has
    passed since this process's last run; None when it did not run or failed
    (logged). Never raises: the worker's round goes on."""
    if not app.config.get("BOUNCE_IMAP_URL"):
        return None
    now = time.monotonic() if now is None else now
    interval = float(app.config.get("BOUNCE_FETCH_INTERVAL", DEFAULT_INTERVAL))
    last = app.extensions.get(_LAST_RUN)
    if last is not None and now - last < interval:
        return None
    app.extensions[_LAST_RUN] = now
    try:
        counts = fetch_bounces()
    except MailboxError as exc:
        log.warning("bounces: the bounce mailbox could not be read: %s", exc)
        return None
    except Exception as exc:
        db.session.rollback()
        log.error("bounces: fetching failed (%s); tried again next interval", type(exc).__name__)
        return None
    if counts.messages:
        log.info("bounces: %s", " ".join(f"{k}={v}" for k, v in counts.as_dict().items()))
    return counts
