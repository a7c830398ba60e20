"""Database engine set-up (SQLite pragmas and write locking) and dialect-aware SQL."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from flask import Flask
from sqlalchemy import BigInteger, ColumnElement, String, any_, bindparam, event, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine, ExceptionContext

from .extensions import db
from .transaction import discard_failed_transaction


def init_app(app: Flask) -> None:
    """Bind Flask-SQLAlchemy and tune SQLite for a web app plus a worker."""
    from . import models  # noqa: F401  (register the tables on the metadata)

    db.init_app(app)
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)
        event.listen(engine, "handle_error", _failed_ping_means_reconnect)


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


def _configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE``.

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
        cursor.execute("PRAGMA busy_timeout = 30000")
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
