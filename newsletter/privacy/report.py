"""The record of processing activities (GDPR Art. 30(1)) for the newsletter.

Built from the live settings and data, so it says what this installation
actually does: which relay receives the addresses, how IP addresses are
kept, how long each kind of data lives. It never prints a secret.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ..extensions import db
from ..models import MailingList
from .policy import policy_in_force
from .retention import last_run

IP_WORDING = {
    "full": "IP address in full",
    "truncated": "IP address truncated before storage (IPv4 to /24, IPv6 to /48)",
    "none": "no IP address (IP_LOGGING=none)",
}


def _days(setting: str) -> str:
    """A retention setting as words."""
    days = int(current_app.config[setting])
    return f"{days} days ({setting})" if days > 0 else f"kept, rule off ({setting}=0)"


def _hours(seconds: int) -> str:
    """A link lifetime in whole hours."""
    return f"{max(1, seconds // 3600)} hours"


def _relay() -> str:
    """The SMTP relay that receives every address and mail: the main processor."""
    config = current_app.config
    server = config.get("MAIL_SERVER")
    if not server:
        return (
            "no SMTP relay configured (MAIL_SERVER unset): mail stays queued, "
            "or in the dev mailbox in development"
        )
    if config.get("MAIL_USE_SSL"):
        transport = "TLS from the first byte (MAIL_USE_SSL)"
    elif config.get("MAIL_USE_TLS"):
        transport = "STARTTLS (MAIL_USE_TLS)"
    else:
        transport = "WITHOUT encryption (set MAIL_USE_TLS or MAIL_USE_SSL)"
    return f"SMTP relay {server}:{config.get('MAIL_PORT', 25)}, {transport}"


def _database() -> str:
    """Where the data is stored, without credentials."""
    try:
        url = make_url(current_app.config["SQLALCHEMY_DATABASE_URI"])
    except ArgumentError:
        return "database: (unparseable DATABASE_URL)"
    if url.get_backend_name() == "sqlite":
        return f"database: SQLite file on this server ({url.database})"
    return f"database: PostgreSQL at {url.host or 'local socket'}, database {url.database}"


def _rate_limit_store() -> str | None:
    """Redis, when used, holds client IP addresses (in full) as rate-limit counters."""
    uri = str(current_app.config.get("RATELIMIT_STORAGE_URI") or "")
    if uri.startswith("memory://") or not uri:
        return None
    return (
        f"rate-limit store {urlsplit(uri).hostname}: client IP addresses in full as counters "
        "that expire within the SIGNUP_RATE_LIMIT window"
    )


def processing_record() -> str:
    """The Art. 30 record as plain text (Markdown-friendly)."""
    config = current_app.config
    current = policy_in_force()
    lists = list(
        db.session.scalars(select(MailingList.name).where(MailingList.archived_at.is_(None)))
    )
    base_url = config.get("BASE_URL") or "(BASE_URL not set)"
    ip = IP_WORDING.get(str(config["IP_LOGGING"]), str(config["IP_LOGGING"]))
    recipients = [_relay(), _database()]
    if (store := _rate_limit_store()) is not None:
        recipients.append(store)
    dkim = "on" if config.get("DKIM_SELECTOR") and config.get("DKIM_DOMAIN") else "off"
    ledger_key = "LEDGER_KEY set" if config.get("LEDGER_KEY") else "derived from SECRET_KEY"
    run = last_run()
    sections: list[tuple[str, list[str]]] = [
        (
            "Controller",
            [
                f"{config['ORGANIZATION_NAME']}, {config['POSTAL_ADDRESS']}",
                f"newsletter site: {base_url}",
                (
                    f"privacy policy in force: version {current.version} of "
                    f"{current.effective_on.isoformat()} ({base_url.rstrip('/')}/privacy)"
                    if current
                    else "privacy policy: none imported (newsletter policy import FILE)"
                ),
            ],
        ),
        (
            "Purposes and legal basis",
            [
                "sending the newsletters each person subscribed to: consent, Art. 6(1)(a); "
                f"lists: {', '.join(lists) or '(none yet)'}",
                "confirming a signup (double opt-in) and sending the consent receipt",
                "demonstrating consent and its withdrawal, Art. 7(1): the consent ledger",
                "never mailing an address again after erasure or a hard bounce: "
                "the suppression list",
                "answering requests for access, portability and erasure, Art. 15, 17, 20",
            ],
        ),
        (
            "Categories of data subjects",
            [
                "subscribers, and people who signed up but did not (yet) confirm",
                "staff who use the console",
            ],
        ),
        (
            "Categories of personal data",
            [
                "e-mail address, name (optional), preferred language",
                "per list: status, consent text shown, times of request, confirmation, withdrawal",
                f"consent evidence per event: time, channel, {ip}, browser user agent, "
                "page of the form, consent text and privacy-policy version",
                "mails sent: which campaign or message, when, the SMTP result",
                "staff: e-mail, name, password hash (argon2), two-factor secret, "
                f"audit trail with {ip.split(' (')[0].lower()}",
                "no special categories (Art. 9); no profiling; no tracking of opens or clicks",
            ],
        ),
        (
            "Recipients and processors",
            [
                *recipients,
                "the hosting provider of this server (fill in with your data processing agreement)",
                "no disclosure to third parties; pages and mails load nothing from another origin",
            ],
        ),
        (
            "Transfers to third countries",
            [
                "none by this software; check where the SMTP relay and the hosting are located",
            ],
        ),
        (
            "Retention",
            [
                f"unconfirmed signups: erased after {_days('RETENTION_UNCONFIRMED_DAYS')}",
                f"people with no list left: erased after {_days('RETENTION_UNSUBSCRIBED_DAYS')} "
                "from their last change",
                f"delivery and transactional mail logs: {_days('RETENTION_DELIVERY_DAYS')}",
                f"confirmation links work {_hours(int(config['CONFIRM_MAX_AGE']))}; "
                f"data-copy links {_hours(int(config['DATA_EXPORT_MAX_AGE']))}",
                "consent ledger: events are kept to demonstrate consent; on erasure their "
                "personal fields are removed and only keyed pseudonyms remain",
                "suppression list: keyed pseudonyms of addresses, kept while the list is used",
                "applied daily by the worker; last run: "
                + (f"{run.get('date')} (started {run.get('started_at')})" if run else "never"),
            ],
        ),
        (
            "Technical and organisational security measures",
            [
                f"IP minimisation: IP_LOGGING={config['IP_LOGGING']}",
                "links carry signed tokens that never contain the address; data-copy and "
                "confirmation links expire",
                "consent ledger: a Merkle tree of the events under Ed25519-signed "
                f"checkpoints, address pseudonyms keyed ({ledger_key}); "
                "`newsletter ledger verify`",
                f"mail transport: {_relay()}; DKIM signing {dkim}",
                "public pages set no cookies; Content-Security-Policy allows only this origin",
                "staff console: argon2 passwords, optional or required TOTP two-factor login, "
                f"session ends after {int(config['STAFF_IDLE_TIMEOUT']) // 60} idle minutes, "
                "CSRF tokens, an audit trail of every staff action",
                "HTTPS: "
                + (
                    "yes (BASE_URL is https, HSTS sent)"
                    if base_url.startswith("https://")
                    else "BASE_URL is not https: put TLS in front before going live"
                ),
            ],
        ),
    ]
    lines = ["# Record of processing activities (GDPR Art. 30): newsletter", ""]
    for title, items in sections:
        lines.append(f"## {title}")
        lines.extend(f"- {item}" for item in items)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
