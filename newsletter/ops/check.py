"""`newsletter check`: is this a sound production configuration? Say plainly what is not.

It reads the same settings as the app (defaults, then NEWSLETTER_* from the
environment) but does not build the app, so one bad setting does not hide
the others: every finding is listed, and the exit status is 1 when any is an
error. Warnings are things that work but are unwise in production.
"""

from __future__ import annotations

import math
import os
import smtplib
import ssl
import stat
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Config

from ..config import DEFAULTS, MIN_SECRET_LENGTH, WEAK_SECRETS, normalise_database_url
from ..ledger.lag import LAG_FACTOR, SEAL_STATE, SealState, seal_interval
from ..ledger.signing import Signer
from ..subscriptions.intake import QUEUE_STATE, QueueState

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
TIMEOUT = 5
TIMEOUT_SETTINGS = (
    "DATABASE_CONNECT_TIMEOUT",
    "DATABASE_TCP_USER_TIMEOUT",
    "DATABASE_KEEPALIVE_IDLE",
    "DATABASE_KEEPALIVE_INTERVAL",
    "DATABASE_STATEMENT_TIMEOUT",
    "DATABASE_LOCK_TIMEOUT",
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT",
)
LEASE_SETTINGS = ("DELIVERY_LEASE_SECONDS", "OUTBOX_LEASE_SECONDS")


@dataclass(frozen=True)
class Finding:
    """One result: level is "ok", "warning" or "error"."""

    level: str
    setting: str
    message: str


def read_settings(instance_path: str) -> Config:
    """The settings the app would use, without its start-up checks."""
    config = Config(instance_path)
    config.from_mapping(DEFAULTS)
    config.from_prefixed_env("NEWSLETTER")
    return config


def run_checks(config: Config, *, connect: bool = True) -> list[Finding]:
    """Every check, in the order an operator fixes things."""
    findings = [*_secret(config), *_base_url(config), *_origins(config), *_mail(config)]
    findings += [*_dkim(config), *_ledger(config), *_rate_limits(config), *_timeouts(config)]
    if connect:
        findings += [*_database(config), *_smtp(config), *_redis(config)]
    return findings


def _secret(config: Config) -> list[Finding]:
    key = str(config.get("SECRET_KEY") or "")
    if not key:
        return [Finding("error", "SECRET_KEY", "not set; generate 48 random characters")]
    if len(key) < MIN_SECRET_LENGTH or key.lower() in WEAK_SECRETS:
        return [
            Finding("error", "SECRET_KEY", f"too weak: use {MIN_SECRET_LENGTH}+ random characters")
        ]
    return [Finding("ok", "SECRET_KEY", f"set, {len(key)} characters")]


def _base_url(config: Config) -> list[Finding]:
    url = str(config.get("BASE_URL") or "")
    parts = urlsplit(url)
    if not url:
        return [
            Finding("error", "BASE_URL", "not set; links in mails need the public https origin")
        ]
    if parts.scheme != "https" or not parts.netloc:
        return [
            Finding("error", "BASE_URL", f"{url!r} is not an https URL; links and cookies need TLS")
        ]
    if parts.path not in ("", "/") or parts.query:
        return [
            Finding("error", "BASE_URL", "must be an origin only, like https://news.example.org")
        ]
    return [Finding("ok", "BASE_URL", url)]


def _origins(config: Config) -> list[Finding]:
    raw = config.get("ALLOWED_ORIGINS") or []
    origins = raw.replace(",", " ").split() if isinstance(raw, str) else list(raw)
    bad = [o for o in origins if not _is_origin(str(o))]
    if bad:
        return [Finding("error", "ALLOWED_ORIGINS", f"not origins (scheme://host[:port]): {bad}")]
    return [Finding("ok", "ALLOWED_ORIGINS", ", ".join(origins) or "none (only the hosted form)")]


def _is_origin(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.path in ("", "/")


def _mail(config: Config) -> list[Finding]:
    findings: list[Finding] = []
    if not config.get("MAIL_SERVER"):
        findings.append(Finding("error", "MAIL_SERVER", "not set: mail would stay queued"))
    if parseaddr(str(config.get("MAIL_DEFAULT_SENDER") or ""))[1].count("@") != 1:
        findings.append(Finding("error", "MAIL_DEFAULT_SENDER", "not a valid sender address"))
    elif config["MAIL_DEFAULT_SENDER"] == DEFAULTS["MAIL_DEFAULT_SENDER"]:
        findings.append(Finding("error", "MAIL_DEFAULT_SENDER", "still the development default"))
    if config.get("MAIL_USE_TLS") and config.get("MAIL_USE_SSL"):
        findings.append(
            Finding("error", "MAIL_USE_TLS", "MAIL_USE_TLS and MAIL_USE_SSL exclude each other")
        )
    secure = config.get("MAIL_USE_TLS") or config.get("MAIL_USE_SSL")
    if config.get("MAIL_USERNAME") and not secure:
        findings.append(
            Finding("warning", "MAIL_USE_TLS", "a password would cross the network in clear")
        )
    return findings or [
        Finding("ok", "MAIL_*", f"{config['MAIL_SERVER']}:{config.get('MAIL_PORT', 25)}")
    ]


def _dkim(config: Config) -> list[Finding]:
    parts = {
        "DKIM_SELECTOR": config.get("DKIM_SELECTOR"),
        "DKIM_DOMAIN": config.get("DKIM_DOMAIN"),
        "DKIM_PRIVATE_KEY": config.get("DKIM_PRIVATE_KEY") or config.get("DKIM_PRIVATE_KEY_FILE"),
    }
    given = [name for name, value in parts.items() if value]
    if not given:
        return [
            Finding("warning", "DKIM_*", "mail is not DKIM-signed; many receivers will distrust it")
        ]
    if len(given) < len(parts):
        missing = sorted(set(parts) - set(given))
        return [Finding("error", "DKIM_*", f"partly configured; missing {', '.join(missing)}")]
    path = config.get("DKIM_PRIVATE_KEY_FILE")
    if path and not Path(str(path)).is_file():
        return [Finding("error", "DKIM_PRIVATE_KEY_FILE", f"{path} cannot be read")]
    return [
        Finding("ok", "DKIM_*", f"{config['DKIM_SELECTOR']}._domainkey.{config['DKIM_DOMAIN']}")
    ]


def _ledger(config: Config) -> list[Finding]:
    if config.get("LEDGER_KEY"):
        findings = [Finding("ok", "LEDGER_KEY", "set")]
    else:
        message = "derived from SECRET_KEY; set it once, before the first signup"
        findings = [Finding("warning", "LEDGER_KEY", message)]
    findings += [_signing_key(config), _checkpoint_log(config), *_seal_interval(config)]
    return findings


def _signing_key(config: Config) -> Finding:
    """The checkpoint signing key: set, a regular file, private, a signer key."""
    name = "LEDGER_SIGNING_KEY_FILE"
    configured = str(config.get(name) or "")
    if not configured:
        return Finding(
            "error",
            name,
            "not set: checkpoints would be signed by a key generated into the instance "
            "folder, which a new host or a restore loses; make one with "
            "`newsletter ledger keygen PATH` and keep a copy offline",
        )
    path = Path(configured)
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            return Finding("error", name, f"{path} is not a file")
        if mode & 0o077:
            return Finding(
                "error",
                name,
                f"{path} is open to group or others (mode {stat.filemode(mode)}): chmod 600 {path}",
            )
        signer = Signer.from_text(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Finding("error", name, f"{path} does not exist")
    except OSError as exc:
        return Finding("error", name, f"{path} cannot be read: {exc.strerror or exc}")
    except ValueError as exc:  # includes UnicodeDecodeError
        reason = str(exc) if str(exc).startswith("signer key") else "not text"
        return Finding("error", name, f"{path} is not a signer key ({reason})")
    return Finding("ok", name, f"{path}: key {signer.name}+{signer.key_hash.hex()}")


def _checkpoint_log(config: Config) -> Finding:
    """The checkpoint log file: set and writable (a witness outside the database)."""
    name = "LEDGER_CHECKPOINT_LOG"
    configured = str(config.get(name) or "")
    if not configured:
        return Finding(
            "warning",
            name,
            "not set: the checkpoints have no witness outside the database; name a file "
            "on another disk",
        )
    path = Path(configured)
    if path.exists():
        writable = path.is_file() and os.access(path, os.W_OK)
    else:
        writable = path.parent.is_dir() and os.access(path.parent, os.W_OK | os.X_OK)
    if not writable:
        return Finding(
            "warning",
            name,
            f"{path} cannot be written by this user: checkpoints wait in the database until it can",
        )
    return Finding("ok", name, f"{path}, every checkpoint is appended")


def _seal_interval(config: Config) -> list[Finding]:
    try:
        seal_interval(config)
    except ValueError as exc:
        return [
            Finding("error", "LEDGER_SEAL_INTERVAL", str(exc).removeprefix("LEDGER_SEAL_INTERVAL "))
        ]
    return []


def _rate_limits(config: Config) -> list[Finding]:
    uri = str(config.get("RATELIMIT_STORAGE_URI") or "memory://")
    if uri.startswith("memory://"):
        return [
            Finding(
                "warning",
                "RATELIMIT_STORAGE_URI",
                "memory:// counts per process; use redis:// with several",
            )
        ]
    return [Finding("ok", "RATELIMIT_STORAGE_URI", uri.split("@")[-1])]


def _timeouts(config: Config) -> list[Finding]:
    """Each database timeout must be on and at most half the shorter lease, so
    a worker cut from the database gives up (and logs it) before another may
    take its rows over; see docs/deploy.md, "Timeouts"."""
    try:
        seconds = {name: float(config.get(name) or 0) for name in TIMEOUT_SETTINGS}
        lease = min(float(config[name]) for name in LEASE_SETTINGS)
    except (TypeError, ValueError):
        return [Finding("error", "DATABASE_*_TIMEOUT", "a timeout or lease is not a number")]
    idle = seconds.pop("DATABASE_KEEPALIVE_IDLE")
    probes = seconds.pop("DATABASE_KEEPALIVE_INTERVAL") * int(
        config.get("DATABASE_KEEPALIVE_COUNT") or 0
    )
    # A silent connection is given up after the probes at most.
    seconds["DATABASE_KEEPALIVE_*"] = idle + probes if idle else 0
    if str(config.get("DATABASE_URL") or "sqlite").startswith("sqlite"):  # the default
        seconds = {"DATABASE_LOCK_TIMEOUT": seconds["DATABASE_LOCK_TIMEOUT"]}
    findings = []
    for name, value in seconds.items():
        if not value or value > lease / 2:
            state = "off" if not value else f"{value:g} s"
            message = f"{state}: keep it on and at most half the lease ({lease:g} s)"
            findings.append(Finding("warning", name, message))
    return findings or [
        Finding("ok", "DATABASE_*_TIMEOUT", f"all within half the lease ({lease:g} s)")
    ]


def _database(config: Config) -> list[Finding]:
    default = f"sqlite:///{Path(config.root_path) / 'newsletter.db'}"
    url = normalise_database_url(str(config.get("DATABASE_URL") or default))
    findings = []
    if url.startswith("sqlite"):
        findings.append(Finding("warning", "DATABASE_URL", "SQLite: one host, one worker only"))
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    engine = sa.create_engine(url, connect_args=_connect_args(url))
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            intake = [*_intake(conn, config), _sealing(conn, config)] if current == head else []
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        return [*findings, Finding("error", "DATABASE_URL", f"cannot connect: {reason}")]
    finally:
        engine.dispose()
    if current != head:
        message = (
            f"schema at {current or 'nothing'}, code needs {head}: run `newsletter db upgrade`"
        )
        return [*findings, Finding("error", "DATABASE_URL", message)]
    return [*findings, Finding("ok", "DATABASE_URL", f"reachable, migrated ({head})"), *intake]


def _intake(conn: sa.Connection, config: Config) -> list[Finding]:
    """Signups waiting for a worker: a warning when the oldest has waited more
    than LATE_SECONDS (no worker is taking them), and one when any
    failed (they wait for staff in the console). One query."""
    state = QueueState.of(conn.execute(QUEUE_STATE).one())
    count, failed = state.waiting, state.failed
    findings = []
    if state.late():
        message = (
            f"{count} signup(s) waiting, the oldest for {_duration(state.waited() or 0)}: "
            "is a worker running? (`newsletter worker`, or `newsletter run` on one host)"
        )
        findings.append(Finding("warning", "signup intake", message))
    if failed:
        where = str(config.get("BASE_URL") or "").rstrip("/") + "/admin/intake"
        message = (
            f"{failed} signup(s) failed and wait for staff: see {where} "
            "(console, dashboard: Failed) to retry or discard them"
        )
        findings.append(Finding("warning", "signup intake", message))
    return findings or [Finding("ok", "signup intake", f"{count} signup(s) waiting, none failed")]


def _sealing(conn: sa.Connection, config: Config) -> Finding:
    """Is the worker sealing? The rule of ledger/lag.py: a warning when the
    oldest waiting event can have waited over LAG_FACTOR x LEDGER_SEAL_INTERVAL,
    its wait bounded by the latest checkpoint's signing time and its own
    occurred_at (no column records when an event was appended)."""
    state = SealState.of(conn.execute(SEAL_STATE).one())
    try:
        interval = seal_interval(config)
    except ValueError:
        interval = float(DEFAULTS["LEDGER_SEAL_INTERVAL"])
    name = "ledger sealing"
    if state.lagging(interval):
        waited = state.waited() or 0.0
        since = (
            "its events are missing: run `newsletter ledger verify`"
            if math.isinf(waited)
            else f"the oldest for up to {_duration(waited)}"
        )
        latest = (
            "no checkpoint signed yet"
            if state.signed_at is None
            else f"the latest checkpoint was signed {_duration(state.age() or 0)} ago"
        )
        message = (
            f"{state.waiting} event(s) wait to be sealed, {since} ({latest}; the limit is "
            f"{LAG_FACTOR} x LEDGER_SEAL_INTERVAL = {LAG_FACTOR * interval:g} s): "
            "is a worker running?"
        )
        return Finding("warning", name, message)
    if state.signed_at is None:
        return Finding("ok", name, f"no checkpoint yet, {state.waiting} event(s) waiting")
    message = (
        f"{state.size} event(s) sealed, the latest checkpoint signed "
        f"{_duration(state.age() or 0)} ago, {state.waiting} waiting"
    )
    return Finding("ok", name, message)


def _duration(seconds: float) -> str:
    """Seconds as the operator reads them: 45 s, 12 min, 3 h, 2 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def _connect_args(url: str) -> dict[str, Any]:
    return {"connect_timeout": TIMEOUT} if url.startswith("postgresql") else {}


def _smtp(config: Config) -> list[Finding]:
    host = config.get("MAIL_SERVER")
    if not host:
        return []
    port = int(config.get("MAIL_PORT") or (465 if config.get("MAIL_USE_SSL") else 25))
    try:
        if config.get("MAIL_USE_SSL"):
            client: smtplib.SMTP = smtplib.SMTP_SSL(str(host), port, timeout=TIMEOUT)
        else:
            client = smtplib.SMTP(str(host), port, timeout=TIMEOUT)
        with client:
            client.ehlo()
            if config.get("MAIL_USE_TLS"):
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if config.get("MAIL_USERNAME"):
                client.login(str(config["MAIL_USERNAME"]), str(config.get("MAIL_PASSWORD") or ""))
    except (OSError, smtplib.SMTPException) as exc:
        return [Finding("error", "MAIL_SERVER", f"{host}:{port} does not work: {exc}")]
    return [Finding("ok", "MAIL_SERVER", f"{host}:{port} answers")]


def _redis(config: Config) -> list[Finding]:
    uri = str(config.get("RATELIMIT_STORAGE_URI") or "")
    if not uri.startswith(("redis://", "rediss://")):
        return []
    import redis

    try:
        redis.Redis.from_url(uri, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT).ping()
    except redis.RedisError as exc:
        return [Finding("error", "RATELIMIT_STORAGE_URI", f"Redis does not answer: {exc}")]
    return [Finding("ok", "RATELIMIT_STORAGE_URI", "Redis answers")]
