"""Settings: defaults, the ``NEWSLETTER_`` environment, and start-up checks.

Every setting can be given in the environment with the prefix ``NEWSLETTER_``
(``NEWSLETTER_DATABASE_URL``, ``NEWSLETTER_MAIL_SERVER`` ...). Values are parsed
as JSON where they parse (numbers, booleans, lists) and kept as strings otherwise,
which is what :meth:`flask.Config.from_prefixed_env` does.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from flask import Flask

# Secrets shorter than this are refused outside debug/testing: 32 characters of
# token_urlsafe() carry about 190 bits, well past any brute force.
MIN_SECRET_LENGTH = 32
WEAK_SECRETS = frozenset({"dev", "secret", "changeme", "change-me", "development"})

DEFAULTS: dict[str, Any] = {
    "BASE_URL": "",
    "SECRET_KEY_FALLBACKS": [],
    # Key for the consent ledger's keyed digests and the suppression list. It must
    # stay the same for the life of the data (unlike SECRET_KEY, which rotates);
    # when unset it is derived from SECRET_KEY, see ledger.keys.
    "LEDGER_KEY": None,
    # The Ed25519 key that signs the ledger's checkpoints (a signed-note signer
    # key file, see docs/ledger.md). `newsletter check` requires it in
    # production; when unset, one is generated into the instance folder.
    "LEDGER_SIGNING_KEY_FILE": None,
    # The worker seals new events into the Merkle tree and signs a checkpoint
    # at most this many seconds after they are written.
    "LEDGER_SEAL_INTERVAL": 10,
    # Every checkpoint is also appended to this file (e.g. on another disk).
    "LEDGER_CHECKPOINT_LOG": None,
    # The latest checkpoint is mailed here once a day (a witness outside the database).
    "LEDGER_WITNESS_MAILTO": None,
    # Deliverability (docs/deliverability.md). With BOUNCE_DOMAIN set, every mail
    # goes out with its own envelope sender bounces+<id>@BOUNCE_DOMAIN (VERP).
    "BOUNCE_DOMAIN": None,
    # Soft bounces (mailbox full, greylisting ...): this many within this many
    # days make a hard bounce.
    # The bounce mailbox (imaps://user:password@host/INBOX; imap:// with STARTTLS),
    # read every BOUNCE_FETCH_INTERVAL seconds across all workers; what was
    # processed goes to BOUNCE_IMAP_PROCESSED_FOLDER ("" deletes it).
    "BOUNCE_IMAP_URL": None,
    "BOUNCE_FETCH_INTERVAL": 300,
    "BOUNCE_IMAP_PROCESSED_FOLDER": "Processed",
    "BOUNCE_SOFT_LIMIT": 3,
    "BOUNCE_SOFT_DAYS": 7,
    # Confirmation, welcome, data and witness mails come from this address when
    # set (else MAIL_DEFAULT_SENDER): a separate stream from the newsletters.
    "MAIL_TRANSACTIONAL_SENDER": None,
    # The SenderId field of the Feedback-ID header on campaign mail (5-15
    # characters); by default the organisation name or the mail domain.
    "FEEDBACK_ID_SENDER": None,
    # The DNS server `newsletter check --dns` asks ("127.0.0.1:5353"); empty:
    # the system's resolver.
    "DNS_RESOLVER": "",
    # A sending campaign pauses itself, and says why, when its complaint rate
    # passes 0.3 % (the Gmail/Yahoo line) or its hard-bounce rate passes this
    # share, once at least CAMPAIGN_PAUSE_MIN_SENDS of its mails have gone out
    # (deliverability/autopause.py).
    "CAMPAIGN_PAUSE_HARD_BOUNCE_RATE": 0.05,
    "CAMPAIGN_PAUSE_MIN_SENDS": 1000,
    "ALLOWED_ORIGINS": [],
    "CONFIRM_MAX_AGE": 7 * 24 * 3600,
    # A confirmation mail for lists that one sent within this many seconds already
    # named is not sent again; a list no such mail named gets one at once.
    "CONFIRM_RESEND_WINDOW": 15 * 60,
    "IP_LOGGING": "truncated",
    # Data protection (docs/privacy.md explains each default). A download link
    # for a copy of one's data works this many seconds after it is mailed.
    "DATA_EXPORT_MAX_AGE": 48 * 3600,
    # Retention, in days; 0 turns a rule off. Applied daily by the worker and by
    # `newsletter purge`. Signups never confirmed are erased after 30 days: a
    # confirmation link lives 7, so this is several chances later, no more.
    "RETENTION_UNCONFIRMED_DAYS": 30,
    # People with no active or pending list left are erased this long after
    # their last change: time to handle a dispute or a complaint, no longer.
    "RETENTION_UNSUBSCRIBED_DAYS": 90,
    # Delivery and outbox logs: after this, a campaign's delivery rows lose the
    # recipient (counts stay) and finished transactional mail rows are deleted.
    "RETENTION_DELIVERY_DAYS": 180,
    "TRUSTED_PROXIES": 0,
    "SEND_RATE": 0,
    "ORGANIZATION_NAME": "Inklusio ApS",
    "POSTAL_ADDRESS": "C.A. Olesens Gade 4, 9000 Aalborg",
    "DEFAULT_LIST_SLUG": "nyhedsbrev",
    # A reserved .test domain: valid for the dev mailbox, and `newsletter check`
    # refuses it, so production must set its own.
    "MAIL_DEFAULT_SENDER": "Inklusio <nyhedsbrev@newsletter.test>",
    "MAIL_UNSUBSCRIBE_MAILTO": "",
    "MAIL_TIMEOUT": 30,
    "OUTBOX_BATCH_SIZE": 50,
    "OUTBOX_MAX_ATTEMPTS": 8,
    "OUTBOX_LEASE_SECONDS": 300,
    "OUTBOX_RETRY_BASE_SECONDS": 30,
    # Fencing (newsletter/fence.py): a sender records what it sent, in one
    # statement fenced by its lease token, every CHUNK mails or SECONDS,
    # whichever comes first, and stops when that fails. A worker that is lost
    # mid-batch can have sent at most one chunk that another worker sends
    # again. The outbox records each mail at once, as it always did.
    "OUTBOX_FENCE_CHUNK": 1,
    "OUTBOX_FENCE_SECONDS": 1,
    # Campaign sending: batches leased by any number of workers. SEND_RATE
    # (messages/s, all workers together; 0 = unlimited) is above.
    "DELIVERY_BATCH_SIZE": 500,
    "DELIVERY_LEASE_SECONDS": 300,
    "DELIVERY_MAX_ATTEMPTS": 8,
    "DELIVERY_RETRY_BASE_SECONDS": 60,
    "DELIVERY_FENCE_CHUNK": 50,
    "DELIVERY_FENCE_SECONDS": 1,
    # DKIM: all of selector, domain and a key (PEM for RSA, base64 for Ed25519).
    "DKIM_SELECTOR": "",
    "DKIM_DOMAIN": "",
    "DKIM_PRIVATE_KEY": "",
    "DKIM_PRIVATE_KEY_FILE": "",
    "DKIM_ALGORITHM": "rsa",
    # Logs: "text" or "json" (one object a line, for log collectors).
    "LOG_FORMAT": "text",
    "LOG_LEVEL": "INFO",
    "RATELIMIT_STORAGE_URI": "memory://",
    "RATELIMIT_HEADERS_ENABLED": True,
    "SIGNUP_RATE_LIMIT": "10 per minute;60 per hour",
    "MAX_CONTENT_LENGTH": 64 * 1024,
    # Bounce webhooks at /webhooks/bounces/<provider> (web/webhooks.py). A
    # provider whose credentials are unset answers 404. A signed timestamp
    # older (or newer) than WEBHOOK_MAX_AGE seconds is refused; a body may be
    # WEBHOOK_MAX_BYTES (providers send events in batches).
    "WEBHOOK_MAX_AGE": 300,
    "WEBHOOK_MAX_BYTES": 1024 * 1024,
    # Postmark signs nothing: put these Basic credentials in its webhook URL.
    "POSTMARK_WEBHOOK_USERNAME": "",
    "POSTMARK_WEBHOOK_PASSWORD": "",
    # Mailgun: the HTTP webhook signing key (HMAC-SHA256 of timestamp + token).
    "MAILGUN_WEBHOOK_SIGNING_KEY": "",
    # SendGrid Signed Event Webhook: its verification key (base64 DER or PEM).
    "SENDGRID_WEBHOOK_PUBLIC_KEY": "",
    # Amazon SES via SNS: the topics whose messages are accepted, and the SNS
    # signing certificates, pinned (nothing is fetched): SigningCertURL -> PEM,
    # and/or a directory of <name>.pem files named as in the URL.
    "SES_SNS_TOPIC_ARNS": [],
    "SES_SNS_CERTIFICATES": {},
    "SES_SNS_CERTIFICATE_DIR": "",
    # Signup intake (subscriptions/intake.py): a public signup stores one row
    # and answers; a worker takes up to BATCH rows at a time for LEASE seconds
    # and gives a row up as failed after MAX_ATTEMPTS claims. The open lists,
    # their consent texts and the policy in force are read at most every
    # TERMS_CACHE seconds by each web process (at once after a change in it).
    "INTAKE_BATCH_SIZE": 200,
    "INTAKE_LEASE_SECONDS": 60,
    "INTAKE_MAX_ATTEMPTS": 5,
    # A worker waiting for work looks for new intake rows this often.
    "INTAKE_POLL_SECONDS": 0.1,
    "SIGNUP_TERMS_CACHE_SECONDS": 5,
    "BABEL_DEFAULT_LOCALE": "da",
    "LANGUAGES": ["da", "en"],
    "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
    # Database timeouts, in seconds (0 turns one off); docs/deploy.md, "Timeouts".
    # Each is well below the leases above, so a worker cut from the database
    # fails with a logged error long before another worker may take its rows.
    "DATABASE_CONNECT_TIMEOUT": 2,
    # Unacknowledged data (a statement sent into a partition) fails after this.
    "DATABASE_TCP_USER_TIMEOUT": 3,
    # A silent connection is probed after IDLE, then every INTERVAL, COUNT times.
    "DATABASE_KEEPALIVE_IDLE": 5,
    "DATABASE_KEEPALIVE_INTERVAL": 2,
    "DATABASE_KEEPALIVE_COUNT": 3,
    # Bulk work (campaign start, CSV import, retention, migrations) lifts the
    # statement timeout for its own transaction: see database.allow_long_statements.
    "DATABASE_STATEMENT_TIMEOUT": 60,
    # Waiting for a row or table lock; on SQLite the busy timeout.
    "DATABASE_LOCK_TIMEOUT": 30,
    # The server ends a session left idle inside a transaction this long.
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT": 120,
    # Staff console (/admin). The session cookie is HttpOnly and SameSite=Lax,
    # and Secure whenever BASE_URL is https (set in load_config).
    "SESSION_COOKIE_NAME": "newsletter_staff",
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "PERMANENT_SESSION_LIFETIME": 12 * 3600,  # a login lasts a working day at most
    "STAFF_IDLE_TIMEOUT": 30 * 60,  # ... and ends after 30 idle minutes
    "LOGIN_RATE_LIMIT": "5 per minute;30 per hour",
    # Staff forms carry a CSRF token (Flask-WTF); it lives as long as the session.
    "WTF_CSRF_TIME_LIMIT": None,
    # CSRF is checked for every /admin POST by the admin blueprint; public POSTs
    # are authorised by Origin or by their signed token instead and set no cookie.
    "WTF_CSRF_CHECK_DEFAULT": False,
}


class ConfigError(RuntimeError):
    """A setting is missing or unsafe; the message says which and what to do."""


def load_config(app: Flask, test_config: dict[str, Any] | None) -> None:
    """Fill ``app.config`` from defaults, the environment and ``test_config``."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("NEWSLETTER")
    if test_config:
        app.config.from_mapping(test_config)

    instance = Path(app.instance_path)
    url = app.config.get("DATABASE_URL") or f"sqlite:///{instance / 'newsletter.db'}"
    app.config["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(url)
    app.config["MAILBOX_DIR"] = app.config.get("MAILBOX_DIR") or str(instance / "mailbox")
    app.config["ALLOWED_ORIGINS"] = _as_list(app.config["ALLOWED_ORIGINS"])
    app.config["SECRET_KEY_FALLBACKS"] = _as_list(app.config["SECRET_KEY_FALLBACKS"])
    if app.config["IP_LOGGING"] not in {"full", "truncated", "none"}:
        raise ConfigError("NEWSLETTER_IP_LOGGING must be one of: full, truncated, none.")
    if str(app.config["BASE_URL"]).startswith("https://"):
        app.config["SESSION_COOKIE_SECURE"] = True
    _check_secret_key(app)


def normalise_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs written the usual way (postgres://, postgresql://)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _as_list(value: Any) -> list[str]:
    """Accept a JSON list or a comma/space separated string from the environment."""
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return [str(item) for item in value or []]


def _check_secret_key(app: Flask) -> None:
    """Refuse to start in production with a missing or weak SECRET_KEY.

    In debug (``newsletter run``) a random key is made once and kept in the
    instance folder, so links in the dev mailbox keep working across restarts.
    """
    key = app.config.get("SECRET_KEY")
    if app.debug or app.testing:
        if not key:
            app.config["SECRET_KEY"] = _dev_secret_key(Path(app.instance_path))
        return
    if not key:
        raise ConfigError(
            "NEWSLETTER_SECRET_KEY is not set. Generate one with\n"
            "  python -c 'import secrets; print(secrets.token_urlsafe(48))'\n"
            "and put it in the environment (keep it secret, keep it stable)."
        )
    if len(key) < MIN_SECRET_LENGTH or key.lower() in WEAK_SECRETS:
        raise ConfigError(
            f"NEWSLETTER_SECRET_KEY is too weak: use at least {MIN_SECRET_LENGTH} random "
            "characters, e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'."
        )


def _dev_secret_key(instance: Path) -> str:
    """Read or create the development secret key in the instance folder."""
    path = instance / "dev-secret-key"
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key
