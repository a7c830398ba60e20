"""The data-export mail: a fresh, expiring download link to the person's own address."""

from __future__ import annotations

from typing import Any

from flask import current_app, render_template
from flask_babel import gettext

from ..mail.message import OutgoingMail
from ..mail.render import to_subscriber
from ..models import Subscriber
from ..tokens import Purpose, make_token
from ..urls import external_url


def data_export_mail(subscriber: Subscriber, payload: dict[str, Any]) -> OutgoingMail:
    """Render the link mail. Transactional (asked for by the person): no
    List-Unsubscribe. ``payload["proof"]``: the person asked for the proof of
    their consent; the mail says so and where the public key is. The link is
    the same either way: its page offers both downloads.

    The token is minted here, when the mail is sent, so the link's lifetime
    (DATA_EXPORT_MAX_AGE) counts from the moment it leaves, not from the click.
    """
    config = current_app.config
    token = make_token(Purpose.DATA_EXPORT, subscriber.token_key)
    context = {
        "subscriber": subscriber,
        "download_url": external_url("privacy.data_export", token=token),
        "max_age_hours": max(1, int(config["DATA_EXPORT_MAX_AGE"]) // 3600),
        "organization": config["ORGANIZATION_NAME"],
        "postal_address": config["POSTAL_ADDRESS"],
        "proof": bool(payload.get("proof")),
        "key_url": external_url("ledger.key"),
    }
    subject = (
        gettext("The proof of your consent") if context["proof"] else gettext("A copy of your data")
    )
    return to_subscriber(
        subscriber,
        subject=subject,
        text=render_template("mail/data_export.txt", **context),
        html=render_template("mail/data_export.html", **context),
    )
