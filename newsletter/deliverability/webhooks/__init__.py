"""Provider webhooks for bounces and complaints: Postmark, Mailgun, SendGrid, Amazon SES (SNS).

Each provider module authenticates a call its provider's way and parses its
payload into ``IncomingReport``s (see ``base``); ``web.webhooks`` is the thin
view that calls them and ``record_report`` for each report.
"""

from __future__ import annotations

from types import ModuleType

from . import mailgun, postmark, sendgrid, ses
from .base import Rejected, ReplayMemory, Verified, WebhookCall

PROVIDERS: dict[str, ModuleType] = {
    "postmark": postmark,
    "mailgun": mailgun,
    "sendgrid": sendgrid,
    "ses": ses,
}

__all__ = ["PROVIDERS", "Rejected", "ReplayMemory", "Verified", "WebhookCall"]
