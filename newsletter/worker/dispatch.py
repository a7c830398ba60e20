"""Rendering an outbox row by its kind, with the renderer of the feature that owns it.

The outbox stores what to send (kind, recipient, a small payload), never the
mail: it is rendered here, from the data as it is at send time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask_babel import force_locale

from ..campaigns.sample import campaign_test_mail
from ..extensions import db
from ..mail.message import OutgoingMail
from ..mail.render import NothingToSend
from ..models import OutboxKind, OutboxMessage, StaffUser, Subscriber
from ..privacy.data_export_mail import data_export_mail
from ..privacy.ledger_witness_mail import ledger_checkpoint_mail
from ..subscriptions.mails import confirmation_mail, welcome_mail

# Kinds sent to a subscriber, rendered in the subscriber's language.
SUBSCRIBER_MAILS: dict[OutboxKind, Callable[[Subscriber, dict[str, Any]], OutgoingMail]] = {
    OutboxKind.CONFIRM: confirmation_mail,
    OutboxKind.WELCOME: welcome_mail,
    OutboxKind.DATA_EXPORT: data_export_mail,
}
# Kinds sent to an active staff member; the renderer picks the language.
STAFF_MAILS: dict[OutboxKind, Callable[[StaffUser, dict[str, Any]], OutgoingMail]] = {
    OutboxKind.CAMPAIGN_TEST: campaign_test_mail,
}
# Kinds sent to the row's address (one from the settings); the renderer picks the language.
ADDRESS_MAILS: dict[OutboxKind, Callable[[str, dict[str, Any]], OutgoingMail]] = {
    OutboxKind.LEDGER_CHECKPOINT: ledger_checkpoint_mail,
}


def render_outbox_message(row: OutboxMessage) -> OutgoingMail:
    """Render an outbox row for its recipient as the data is now: a subscriber's
    mail in the subscriber's language, a staff member's only while their account
    is active, an address's as its renderer says. Raises NothingToSend when the
    recipient or the reason is gone."""
    if row.kind in ADDRESS_MAILS:
        if not row.address:
            raise NothingToSend("no address")
        return ADDRESS_MAILS[row.kind](row.address, row.payload)
    if row.kind in STAFF_MAILS:
        staff = db.session.get(StaffUser, row.staff_user_id)
        if staff is None or not staff.is_active:
            raise NothingToSend("staff account gone or inactive")
        return STAFF_MAILS[row.kind](staff, row.payload)
    subscriber = db.session.get(Subscriber, row.subscriber_id)
    if subscriber is None:
        raise NothingToSend("subscriber erased")
    render = SUBSCRIBER_MAILS.get(row.kind)
    if render is None:  # pragma: no cover - test_worker checks every kind has one
        raise NothingToSend(f"unknown kind {row.kind}")
    with force_locale(subscriber.locale):
        return render(subscriber, row.payload)
