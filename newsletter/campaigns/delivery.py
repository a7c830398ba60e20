"""The campaign delivery engine: any number of workers share one database.

One batch: take send-rate tokens, lease queued deliveries of sending
campaigns (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), re-check consent and
suppression, personalise, send over one SMTP connection, mark the batch.
Rows are marked sent chunk by chunk under a fenced lease (newsletter/fence.py),
so a worker killed or cut off mid-batch leaves at most one chunk to be sent
again once its lease expires; nothing is ever lost.

The stages live in their own modules: ``claim`` (leases), ``recipients``
(load and re-check), ``personal`` (render per recipient), ``outcomes``
(record what happened).
"""

from __future__ import annotations

import logging

from flask import Flask

from ..extensions import db
from ..fence import Fence
from ..lease import Lease, release
from ..mail.headers import UnsafeHeader
from ..mail.message import OutgoingMail
from ..mail.transport import PermanentFailure, TemporaryFailure, open_transport
from ..models import utcnow
from ..models.campaigns import DeliveryStatus
from .claim import DELIVERIES, claim_deliveries, finish_campaigns
from .outcomes import DeliveryBatch, Recipient, fail, is_outage, retry
from .personal import LinkTemplates, load_content, render
from .rate import wait_for_send_tokens
from .recipients import load_recipients

__all__ = ["DeliveryBatch", "Recipient", "claim_deliveries", "send_deliveries"]

log = logging.getLogger(__name__)


def send_deliveries(app: Flask, owner: str) -> DeliveryBatch:
    """Run one batch of campaign mail; returns what happened."""
    batch = DeliveryBatch()
    # Waits while SEND_RATE is used up by other workers rather than return an
    # empty batch, which the worker loop would take for "nothing is due".
    wanted = wait_for_send_tokens(app.config["DELIVERY_BATCH_SIZE"])
    lease = Lease.start(owner, app.config["DELIVERY_LEASE_SECONDS"])
    claimed = claim_deliveries(owner, wanted, lease)
    if not claimed:
        finish_campaigns()
        return batch
    recipients = load_recipients(claimed, batch)
    # Each campaign's bodies are encoded once per batch, in each layout
    # language the batch's recipients read; a recipient costs the same as ever.
    languages: dict[int, set[str]] = {}
    for recipient in recipients:
        languages.setdefault(recipient.campaign_id, set()).add(recipient.locale)
    contents = {cid: load_content(cid, locales) for cid, locales in languages.items()}
    links = LinkTemplates.build()
    messages: list[tuple[Recipient, OutgoingMail]] = []
    for recipient in recipients:
        try:
            messages.append((recipient, render(recipient, contents[recipient.campaign_id], links)))
        except UnsafeHeader as exc:
            # An address no header can carry safely (stored before the rules
            # refused it): this delivery fails; the rest of the batch goes on.
            fail(recipient, PermanentFailure(f"cannot write the mail's header: {exc}"), lease)
            batch.failed += 1
    db.session.commit()  # no transaction open during SMTP I/O
    if messages:
        _send(app, messages, batch, lease)
    if len(claimed) < wanted and not batch.lost:
        # Only a short claim can mean a campaign ran out of queued rows. Checking
        # after every batch walked the queued-rows index past every row sent so
        # far (its dead entries wait for vacuum): quadratic in the campaign.
        finish_campaigns()
    return batch


def _send(
    app: Flask,
    messages: list[tuple[Recipient, OutgoingMail]],
    batch: DeliveryBatch,
    lease: Lease,
) -> None:
    """Send a rendered batch over one connection, recording sent rows chunk by chunk.

    Every DELIVERY_FENCE_CHUNK mails (or DELIVERY_FENCE_SECONDS) the sent rows
    are marked in one statement fenced by the lease token (newsletter/fence.py),
    which also renews the lease once half of it has passed, so a batch slower
    than its lease keeps its rows. When the rows are no longer this worker's,
    or the statement fails, the batch stops at once and the connection is
    closed: a lost worker can have sent at most one chunk that another worker
    sends again. Each single message must finish within half the lease
    (DELIVERY_LEASE_SECONDS well above MAIL_TIMEOUT).
    """
    config = app.config
    ids = [recipient.delivery_id for recipient, _ in messages]
    fence = Fence(
        DELIVERIES,
        lease,
        chunk=config["DELIVERY_FENCE_CHUNK"],
        seconds=config["DELIVERY_FENCE_SECONDS"],
        sent_values=lambda: {"status": DeliveryStatus.SENT, "sent_at": utcnow()},
        batch=_describe(messages),
    )
    try:
        with open_transport(app) as transport:
            for position, (recipient, message) in enumerate(messages):
                if not fence.check(ids[position:]):
                    break  # leaving the block closes the connection
                try:
                    transport.send(message)
                except PermanentFailure as exc:
                    fail(recipient, exc, lease)
                    batch.failed += 1
                except Exception as exc:
                    # Temporary (4xx, connection) or unexpected: this row backs off;
                    # the connection's state is unknown, so the rest goes back to
                    # the queue for the next batch on a fresh connection.
                    if not isinstance(exc, TemporaryFailure):
                        log.exception("delivery #%d: unexpected error", recipient.delivery_id)
                    fence.flush()
                    retry([(recipient, str(exc) or repr(exc))], outage=is_outage(exc), lease=lease)
                    release(DELIVERIES, ids[position + 1 :], lease)
                    db.session.commit()
                    batch.retried += 1
                    break
                else:
                    fence.sent(recipient.delivery_id)
    except TemporaryFailure as exc:  # could not connect at all
        retry([(r, str(exc)) for r, _ in messages], outage=is_outage(exc), lease=lease)
        batch.retried += len(messages)
    finally:
        fence.flush()
        batch.sent += fence.recorded + fence.unrecorded
        batch.unrecorded += fence.unrecorded
        batch.lost = batch.lost or fence.lost


def _describe(messages: list[tuple[Recipient, OutgoingMail]]) -> str:
    """The batch as the fence's warning names it: its campaigns and delivery ids."""
    campaigns = sorted({recipient.campaign_id for recipient, _ in messages})
    ids = [recipient.delivery_id for recipient, _ in messages]
    label = "campaign" if len(campaigns) == 1 else "campaigns"
    return f"{label} {', '.join(map(str, campaigns))}, deliveries {min(ids)}-{max(ids)}"
