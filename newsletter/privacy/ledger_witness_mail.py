"""The ledger's witness mail: the latest signed checkpoint, to LEDGER_WITNESS_MAILTO.

Queued once a day by the worker (ledger/witness_mail.py). The text part holds
the signed note exactly as stored, after one sentence saying what it is and
how to use it; the HTML part shows the same note in a ``<pre>``. The mail is
written in the site's default language: its reader is the operator, not a
subscriber.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, render_template
from flask_babel import force_locale, gettext
from sqlalchemy import select

from ..extensions import db
from ..mail.message import OutgoingMail, compose_mail
from ..mail.render import NothingToSend, transactional_sender
from ..models import LedgerCheckpoint
from ..urls import mail_domain


def ledger_checkpoint_mail(address: str, payload: dict[str, Any]) -> OutgoingMail:
    """Render the witness mail of the checkpoint of ``payload["size"]`` events
    to ``address``. Transactional (no list headers)."""
    size = int(payload.get("size", -1))
    checkpoint = db.session.scalar(select(LedgerCheckpoint).where(LedgerCheckpoint.size == size))
    if checkpoint is None:
        raise NothingToSend(f"no checkpoint of size {size}")
    config = current_app.config
    origin = checkpoint.note.split("\n", 1)[0]
    context = {
        "note": checkpoint.note,
        "origin": origin,
        "size": checkpoint.size,
        "signed_at": checkpoint.signed_at.strftime("%Y-%m-%d %H:%M:%S"),
        "organization": config["ORGANIZATION_NAME"],
    }
    with force_locale(config["BABEL_DEFAULT_LOCALE"]):
        subject = gettext(
            "Consent ledger checkpoint: %(size)s events, %(day)s",
            size=checkpoint.size,
            day=checkpoint.signed_at.date().isoformat(),
        )
        text = render_template("mail/ledger_checkpoint.txt", **context)
        html = render_template("mail/ledger_checkpoint.html", **context)
    return compose_mail(
        sender=transactional_sender(),
        to_address=address,
        to_name="",
        subject=subject,
        text=text,
        html=html,
        domain=mail_domain(),
    )
