"""Database engine set-up (timeouts, SQLite pragmas and write locking) and dialect-aware SQL."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from flask import Flask
from sqlalchemy import BigInteger, ColumnElement, String, any_, bindparam, event, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine, ExceptionContext, make_url

from .extensions import db
from .transaction import discard_failed_transaction


def init_app(app: Flask) -> None:
    """Bind Flask-SQLAlchemy and tune SQLite for a web app plus a worker."""
    from . import models  # noqa: F401  (register the tables on the metadata)

    url = app.config["SQLALCHEMY_DATABASE_URI"]
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config, url)
    db.init_app(app)
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            busy_ms = _milliseconds(app.config, "DATABASE_LOCK_TIMEOUT") or 2**31 - 1  # 0: no bound
            _configure_sqlite(engine, busy_ms)
        event.listen(engine, "handle_error", _failed_ping_means_reconnect)


def engine_options(config: Mapping[str, Any], url: str) -> dict[str, Any]:
    """The engine options with every PostgreSQL connection's timeouts in its connect
    arguments (SQLite takes its lock timeout as a pragma, see _configure_sqlite).

    SQL errors name no parameter values (``hide_parameters``): their text reaches
    the log and a failed intake row, and the values are addresses and evidence.
    """
    options = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    options.setdefault("hide_parameters", True)
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        given = parsed.query.get("options")
        connect_args = postgresql_timeouts(config, given if isinstance(given, str) else None)
        options["connect_args"] = {**connect_args, **dict(options.get("connect_args") or {})}
    return options


def postgresql_timeouts(config: Mapping[str, Any], options: str | None = None) -> dict[str, Any]:
    """libpq parameters bounding connect, silence and unacknowledged data on the
    client's socket, and server settings bounding each statement, lock wait and
    idle transaction, and the server's own socket to a client that vanished.

    Both ends must give up: the client so the worker logs an error and stops,
    the server so the vanished worker's transaction and row locks go. ``options``
    (from the URL) come first; a 0 setting turns that timeout off.
    """
    idle = _seconds(config, "DATABASE_KEEPALIVE_IDLE")
    interval = _seconds(config, "DATABASE_KEEPALIVE_INTERVAL")
    count = int(config.get("DATABASE_KEEPALIVE_COUNT") or 0)
    user_timeout = _milliseconds(config, "DATABASE_TCP_USER_TIMEOUT")
    server = {
        "statement_timeout": _milliseconds(config, "DATABASE_STATEMENT_TIMEOUT"),
        "lock_timeout": _milliseconds(config, "DATABASE_LOCK_TIMEOUT"),
        "idle_in_transaction_session_timeout": _milliseconds(
            config, "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT"
        ),
        "tcp_keepalives_idle": idle,
        "tcp_keepalives_interval": interval,
        "tcp_keepalives_count": count,
        "tcp_user_timeout": user_timeout,
        # During a long statement, look every interval whether the client is still there.
        "client_connection_check_interval": interval * 1000 if idle else 0,
    }
    flags = " ".join(f"-c {name}={value}" for name, value in server.items())
    args: dict[str, Any] = {
        "options": f"{options} {flags}" if options else flags,
        "keepalives": 1 if idle else 0,
        "tcp_user_timeout": user_timeout,
    }
    if idle:
        args.update(keepalives_idle=idle, keepalives_interval=interval, keepalives_count=count)
    connect = _seconds(config, "DATABASE_CONNECT_TIMEOUT")
    if connect:
        args["connect_timeout"] = max(connect, 2)  # libpq's minimum
    return args


def _seconds(config: Mapping[str, Any], name: str) -> int:
    """A timeout setting as whole seconds, rounded up (libpq takes no fractions)."""
    return max(0, math.ceil(float(config.get(name) or 0)))


def _milliseconds(config: Mapping[str, Any], name: str) -> int:
    """A timeout setting in seconds (fractions allowed) as milliseconds."""
    return max(0, round(float(config.get(name) or 0) * 1000))


def allow_long_statements() -> None:
    """Lift the statement timeout for the rest of the current transaction.

    For bulk work whose single statements grow with the data (enqueueing a
    campaign's deliveries, a CSV import's COPY, retention): the default timeout
    is sized for everything else. Keepalives, the TCP user timeout and the lock
    timeout still apply, so a partition or a lock wait fails as usual.
    """
    if is_postgresql():
        db.session.execute(text("SET LOCAL statement_timeout = 0"))


def _failed_ping_means_reconnect(context: ExceptionContext) -> None:
    """Treat any error in the pool's pre-ping as a dead connection, to be replaced.

    When PostgreSQL goes away during the ping itself, SQLAlchemy's psycopg
    dialect turns autocommit back off on the broken connection, and psycopg
    refuses ("can't change 'autocommit' now: connection in transaction status
    ACTIVE"). That ProgrammingError hides the real socket error, so the pool
    raised it instead of reconnecting: a 500 during a restart, where the app
    must answer 503 and then recover. A connection whose ping failed, for
    whatever reason, is not fit for use.
    """
    if context.is_pre_ping:
        context.is_disconnect = True


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    """WAL, foreign keys, the lock timeout as busy timeout, and ``BEGIN IMMEDIATE``.

    SQLite has one writer. A deferred transaction that reads and then writes
    can fail at once with "database is locked" when another connection wrote
    in between, whatever the busy timeout; taking the write lock at BEGIN makes
    such transactions wait their turn instead. It is the embedded default's
    equivalent of the row locks used on PostgreSQL.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_postgresql() -> bool:
    """Whether the bound database is PostgreSQL (row locks, SKIP LOCKED)."""
    return bool(db.engine.dialect.name == "postgresql")


def among(column: Any, values: Collection[Any]) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``.

    One array parameter instead of one per value: the statement text is the
    same for every batch (psycopg prepares it after a few runs, and the server
    parses it once), the client does not expand 500 parameters, and the
    planner estimates the array's length instead of picking a parallel seq
    scan of deliveries for a 500-element IN list (docs/performance.md).
    """
    if not is_postgresql():
        return column.in_(values)
    element = String() if isinstance(column.type, String) else BigInteger()
    array = bindparam(None, list(values), type_=ARRAY(element))
    return column == any_(array)


def reachable() -> bool:
    """One round trip to the database; False when it fails, for the health check.

    A failed round trip leaves the session's transaction broken: it is
    discarded here (see transaction.discard_failed_transaction), not by the view.
    """
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:  # any driver error means "not reachable"
        discard_failed_transaction()
        return False
    return True
