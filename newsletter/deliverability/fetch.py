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

One run reads the mailbox at a time, across all workers and the command: a
run holds a lease on a console_settings row (two readers would both copy a
message to the processed folder). ``fetch_due`` is the worker's: it runs
``fetch_bounces`` when BOUNCE_IMAP_URL is set and BOUNCE_FETCH_INTERVAL seconds
(default 300) have passed since the last run of any worker, and never raises.
Should two readers meet anyway (a lease run out), a report recorded twice
counts once and a message the other moved first is passed by.
"""

from __future__ import annotations

import imaplib
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import ConsoleSetting, utcnow
from .classify import Unreadable, classify
from .imap import Mailbox, MailboxError, MailboxSettings, MessageGone, parse_url
from .reports import record_report

log = logging.getLogger(__name__)

DEFAULT_PROCESSED_FOLDER = "Processed"
DEFAULT_INTERVAL = 300
# Messages read in one run at most; the rest wait for the next.
DEFAULT_LIMIT = 500
# A larger message is not read at all (a bounce returns at most our own mail).
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
_LAST_RUN = "newsletter.bounce_fetch_last"  # app.extensions: when this process last tried
# The console_settings row that holds the mailbox for one run at a time.
LEASE_KEY = "deliverability.bounce_fetch"
# A run that dies holding the mailbox keeps it this long at most.
LEASE_SECONDS = 600


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
    gone: int = 0  # messages another reader moved away meanwhile

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class MailboxBusy(MailboxError):
    """Another run (a worker, the command) is reading the mailbox now, or, for
    the worker, the last run across all workers is not an interval old."""


def fetch_bounces(
    limit: int = DEFAULT_LIMIT, interval: float = 0, now: datetime | None = None
) -> FetchCounts:
    """Read, classify, record and move up to ``limit`` messages (module docstring).

    One run at a time across all processes: a run first claims the mailbox
    for LEASE_SECONDS on a console_settings row (committed), and MailboxBusy
    says when another run holds it, or when the last run started less than
    ``interval`` seconds before ``now``. Raises MailboxError when the mailbox
    cannot be used at all."""
    config = current_app.config
    url = str(config.get("BOUNCE_IMAP_URL") or "")
    if not url:
        raise MailboxError("BOUNCE_IMAP_URL is not set.")
    settings = parse_url(url)
    processed = _processed_folder()
    if processed.casefold() == settings.folder.casefold():
        raise MailboxError(
            "BOUNCE_IMAP_PROCESSED_FOLDER is the folder read: set another folder, "
            "or the empty string to delete processed messages."
        )
    token = _claim(now or utcnow(), interval)
    if token is None:
        raise MailboxBusy("another run is reading the bounce mailbox, or one did just now")
    counts = FetchCounts()
    try:
        _read(settings, limit, counts)
    finally:
        _release(token, counts)
    return counts


def _read(settings: MailboxSettings, limit: int, counts: FetchCounts) -> None:
    config = current_app.config
    processed = _processed_folder()
    domain = config.get("BOUNCE_DOMAIN") or None
    timeout = float(config.get("MAIL_TIMEOUT") or 30)
    with Mailbox(settings, timeout) as mailbox:
        try:
            if processed:
                mailbox.ensure_folder(processed)
            for uid in mailbox.uids()[:limit]:
                try:
                    _handle(mailbox, uid, processed, domain, counts)
                except MessageGone:
                    counts.gone += 1
                except MailboxError as exc:  # a command refused for this message only
                    counts.failed += 1
                    log.warning("bounces: message uid %s left for the next run: %s", uid, exc)
            counts.unreadable_waiting = mailbox.unreadable_count()
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(f"the IMAP session failed: {type(exc).__name__}") from None


def _processed_folder() -> str:
    value = current_app.config.get("BOUNCE_IMAP_PROCESSED_FOLDER", DEFAULT_PROCESSED_FOLDER)
    return "" if value is None else str(value)


def _claim(now: datetime, interval: float) -> str | None:
    """Take the mailbox for LEASE_SECONDS unless a run holds it or the last one
    started within ``interval`` seconds; the claim's token, or None. Commits."""
    row = db.session.scalar(
        select(ConsoleSetting).where(ConsoleSetting.key == LEASE_KEY).with_for_update()
    )
    value: dict[str, Any] = (
        dict(row.value) if row is not None and isinstance(row.value, dict) else {}
    )
    held = _when(value.get("until"))
    started = _when(value.get("started_at"))
    if (held is not None and held > now) or (
        interval and started is not None and now - started < timedelta(seconds=interval)
    ):
        db.session.rollback()
        return None
    token = uuid.uuid4().hex
    value.update(
        until=(now + timedelta(seconds=LEASE_SECONDS)).isoformat(),
        token=token,
        started_at=now.isoformat(),
    )
    if row is None:
        try:
            with db.session.begin_nested():
                db.session.add(ConsoleSetting(key=LEASE_KEY, value=value))
        except IntegrityError:
            db.session.rollback()
            return None  # another run created the row, and claimed it, just now
    else:
        row.value = value
    db.session.commit()
    return token


def _release(token: str, counts: FetchCounts) -> None:
    """Give the mailbox back (if this run still holds it), keeping the counts."""
    row = db.session.scalar(
        select(ConsoleSetting).where(ConsoleSetting.key == LEASE_KEY).with_for_update()
    )
    if row is not None and isinstance(row.value, dict) and row.value.get("token") == token:
        row.value = {
            **row.value,
            "until": None,
            "finished_at": utcnow().isoformat(),
            "counts": counts.as_dict(),
        }
    db.session.commit()


def _when(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


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
    except MessageGone:
        counts.gone += 1
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


def fetch_due(app: Flask, now: datetime | None = None) -> FetchCounts | None:
    """Run ``fetch_bounces`` if BOUNCE_IMAP_URL is set and BOUNCE_FETCH_INTERVAL
    has passed since the last run of any worker; None when it did not run or
    failed (logged). This process asks the database at most once an interval.
    Never raises: the worker's round goes on."""
    if not app.config.get("BOUNCE_IMAP_URL"):
        return None
    now = now or utcnow()
    interval = float(app.config.get("BOUNCE_FETCH_INTERVAL", DEFAULT_INTERVAL))
    last = app.extensions.get(_LAST_RUN)
    if last is not None and now - last < timedelta(seconds=interval):
        return None
    app.extensions[_LAST_RUN] = now
    try:
        counts = fetch_bounces(interval=interval, now=now)
    except MailboxBusy:
        return None
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
