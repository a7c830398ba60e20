"""Database timeouts: a slow statement, a lock wait, a silent server and a network
partition each end in an error within seconds, and the worker logs it.

Without them a worker cut from PostgreSQL waited on TCP retransmission for minutes,
logging nothing, while its lease ran out. Every wait below runs in a thread with a
bound of its own, so a missing timeout fails the test instead of hanging it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Config, Flask
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from newsletter import create_app
from newsletter.config import DEFAULTS
from newsletter.database import allow_long_statements
from newsletter.extensions import db
from newsletter.ops.check import run_checks
from newsletter.worker.round import run_worker

from .conftest import BACKEND, base_config
from .fixtures.partition import PartitionProxy, partition_proxies

postgres_only = pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL timeouts")
sqlite_only = pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's busy timeout")

LOCK_ROW = text("SELECT id FROM lists WHERE id = :id FOR UPDATE")

# Short timeouts for the tests; the defaults are in config.py and docs/deploy.md.
FAST = {
    "DATABASE_CONNECT_TIMEOUT": 2,
    "DATABASE_TCP_USER_TIMEOUT": 2,
    "DATABASE_KEEPALIVE_IDLE": 1,
    "DATABASE_KEEPALIVE_INTERVAL": 1,
    "DATABASE_KEEPALIVE_COUNT": 2,
    "DATABASE_STATEMENT_TIMEOUT": 1,
    "DATABASE_LOCK_TIMEOUT": 0.5,
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT": 0,  # off: the keepalives must do it alone
}


def bounded(seconds: float, work: Callable[[], Any], unblock: Callable[[], Any] = lambda: None):
    """Run ``work`` in a thread: (its value or exception, seconds taken). A wait past
    ``seconds`` fails the test (``unblock`` first lets the thread finish)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as exc:  # the outcome under test
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        unblock()
        pytest.fail(f"still waiting after {seconds} s: no timeout ended it")
    return outcome[0], elapsed


@pytest.fixture
def own_apps(tmp_path) -> Iterator[Callable[..., Flask]]:
    """Apps on any database URL (a proxy, a silent port), disposed afterwards."""
    apps: list[Flask] = []

    def make(url: str, **settings: Any) -> Flask:
        config = {**base_config(url, tmp_path), **FAST, **settings}
        apps.append(create_app(config))
        return apps[-1]

    yield make
    for made in apps:
        with made.app_context():
            db.engine.dispose()


@pytest.fixture
def partition_proxy() -> Iterator[type[PartitionProxy]]:
    """Make proxies to cut (fixtures/partition.py); their iptables rules go afterwards."""
    with partition_proxies() as proxy_type:
        yield proxy_type


def worker_round(app: Flask) -> int:
    """One ``worker --once`` round; the number of failed rounds."""
    return run_worker(app, threading.Event(), poll_interval=0.1, once=True)


def round_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The worker's "round failed" log records."""
    return [r for r in caplog.records if "round failed" in r.getMessage()]


@postgres_only
def test_every_connection_carries_the_timeouts_to_the_server(app_factory) -> None:
    app = app_factory(**{**FAST, "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT": 30})
    with app.app_context(), db.engine.connect() as conn:
        shown = {
            name: conn.exec_driver_sql(f"SHOW {name}").scalar()
            for name in (
                "statement_timeout",
                "lock_timeout",
                "idle_in_transaction_session_timeout",
                "tcp_keepalives_idle",
                "tcp_user_timeout",
            )
        }
    assert shown == {
        "statement_timeout": "1s",
        "lock_timeout": "500ms",
        "idle_in_transaction_session_timeout": "30s",
        "tcp_keepalives_idle": "1",
        "tcp_user_timeout": "2000",  # milliseconds, shown without a unit
    }


@postgres_only
def test_a_statement_past_the_statement_timeout_fails_within_it(app_factory) -> None:
    app = app_factory(**FAST)
    with app.app_context():
        engine = db.engine

    def sleep() -> Any:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT pg_sleep(20)").scalar()

    error, elapsed = bounded(10, sleep)
    assert isinstance(error, OperationalError)
    assert "statement timeout" in str(error)
    assert elapsed < 3


@postgres_only
def test_bulk_work_lifts_the_statement_timeout_for_its_own_transaction(app_factory) -> None:
    app = app_factory(**FAST)
    with app.app_context():
        allow_long_statements()
        assert db.session.execute(text("SELECT pg_sleep(1.5)")).all()
        db.session.commit()
        assert db.session.execute(text("SHOW statement_timeout")).scalar() == "1s"


@postgres_only
def test_a_lock_wait_past_the_lock_timeout_fails_within_it(app_factory, make_list) -> None:
    app = app_factory(**FAST)
    with app.app_context():
        list_id = make_list().id
        engine = db.engine
    holder = engine.connect()
    holder.execute(LOCK_ROW, {"id": list_id})

    def wait_for_the_row() -> Any:
        with engine.begin() as conn:
            return conn.execute(text("UPDATE lists SET name = 'x' WHERE id = :id"), {"id": list_id})

    try:
        error, elapsed = bounded(10, wait_for_the_row, unblock=holder.rollback)
    finally:
        holder.close()
    assert isinstance(error, OperationalError)
    assert "lock timeout" in str(error)
    assert elapsed < 3


@postgres_only
def test_a_server_that_never_answers_fails_the_connect_and_the_round_is_logged(
    own_apps, caplog
) -> None:
    # A listening socket that never accepts: the kernel completes the handshake,
    # and the startup message then waits for an answer that never comes.
    silent = socket.create_server(("127.0.0.1", 0), backlog=8)
    port = silent.getsockname()[1]
    app = own_apps(f"postgresql://postgres@127.0.0.1:{port}/newsletter")
    caplog.set_level(logging.ERROR, logger="newsletter.worker.round")
    try:
        failures, elapsed = bounded(20, lambda: worker_round(app), unblock=silent.close)
    finally:
        silent.close()
    assert failures == 1
    assert round_failures(caplog)
    assert elapsed < 6  # connect timeout 2 s


def _through_proxy(database_url: str, proxy_type: type[PartitionProxy]) -> tuple[str, Any]:
    """A proxy to the test database and the database URL through it."""
    url = sa.make_url(database_url)
    proxy = proxy_type((url.host or "127.0.0.1", url.port or 5432))
    return url.set(host="127.0.0.1", port=proxy.port).render_as_string(False), proxy


@postgres_only
def test_a_partition_between_rounds_is_a_logged_error_within_seconds(
    own_apps, database_url, partition_proxy, caplog
) -> None:
    proxied, proxy = _through_proxy(database_url, partition_proxy)
    app = own_apps(proxied)
    caplog.set_level(logging.ERROR, logger="newsletter.worker.round")
    assert worker_round(app) == 0  # connected; the connection waits in the pool
    proxy.cut()
    # The pool's ping goes unacknowledged (TCP user timeout), then the new
    # connection's handshake gets no answer (connect timeout).
    failures, elapsed = bounded(30, lambda: worker_round(app), unblock=proxy.close)
    assert failures == 1
    assert round_failures(caplog)
    assert elapsed < 8


@postgres_only
def test_a_partition_mid_statement_fails_the_statement_within_seconds(
    own_apps, database_url, partition_proxy
) -> None:
    proxied, proxy = _through_proxy(database_url, partition_proxy)
    app = own_apps(proxied, DATABASE_STATEMENT_TIMEOUT=0)  # only the network bounds it
    with app.app_context():
        engine = db.engine

    def long_statement() -> Any:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT pg_sleep(30)").scalar()

    threading.Timer(1, proxy.cut).start()  # the statement is on its way by then
    error, elapsed = bounded(20, long_statement, unblock=proxy.close)
    assert isinstance(error, OperationalError)
    assert elapsed < 8  # keepalive after 1 s idle, given up 2 s unacknowledged


@postgres_only
def test_the_server_ends_a_partitioned_session_and_frees_its_row_locks(
    app_factory, make_list, own_apps, database_url, partition_proxy
) -> None:
    direct = app_factory(**FAST)
    with direct.app_context():
        list_id = make_list().id
        observer = db.engine
    proxied, proxy = _through_proxy(database_url, partition_proxy)
    with own_apps(proxied).app_context():
        lost = db.engine.connect()  # a worker that holds a row lock, then vanishes
    lost.execute(LOCK_ROW, {"id": list_id})
    proxy.cut()

    def take_the_row() -> Any:
        with observer.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '20s'")
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            return conn.execute(LOCK_ROW, {"id": list_id}).scalar()

    taken, elapsed = bounded(30, take_the_row, unblock=proxy.close)
    proxy.close()
    lost.invalidate()
    assert taken == list_id  # the server gave up on the lost session by itself
    assert elapsed < 10


@sqlite_only
def test_sqlite_waits_for_the_write_lock_for_the_lock_timeout(app_factory) -> None:
    app = app_factory(DATABASE_LOCK_TIMEOUT=0.5)
    with app.app_context():
        engine = db.engine
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 500
    holder = engine.connect()
    holder.begin()  # BEGIN IMMEDIATE: the write lock

    def write() -> Any:
        with engine.begin() as conn:
            return conn.exec_driver_sql("SELECT 1").scalar()

    try:
        error, elapsed = bounded(10, write, unblock=holder.rollback)
    finally:
        holder.close()
    assert isinstance(error, OperationalError)
    assert "locked" in str(error)
    assert elapsed < 3


def timeout_findings(tmp_path, **settings: Any) -> dict[str, str]:
    """`newsletter check`'s findings on the database timeouts: setting -> level."""
    config = Config(str(tmp_path))
    config.from_mapping({**DEFAULTS, "DATABASE_URL": "postgresql://db/newsletter", **settings})
    return {
        f.setting: f.level
        for f in run_checks(config, connect=False)
        if f.setting.startswith("DATABASE_")
    }


def test_check_warns_of_a_timeout_that_is_off_or_not_well_below_the_lease(tmp_path) -> None:
    assert timeout_findings(tmp_path) == {"DATABASE_*_TIMEOUT": "ok"}
    assert timeout_findings(
        tmp_path, DATABASE_STATEMENT_TIMEOUT=0, DATABASE_LOCK_TIMEOUT=200, DATABASE_KEEPALIVE_IDLE=0
    ) == {
        "DATABASE_STATEMENT_TIMEOUT": "warning",
        "DATABASE_LOCK_TIMEOUT": "warning",
        "DATABASE_KEEPALIVE_*": "warning",
    }
    # With a 30 s lease the defaults' 60 s statement timeout is too long.
    short = timeout_findings(tmp_path, DELIVERY_LEASE_SECONDS=30)
    assert short["DATABASE_STATEMENT_TIMEOUT"] == "warning"
    # On SQLite only the lock (busy) timeout applies.
    assert timeout_findings(
        tmp_path, DATABASE_URL="sqlite:///x.db", DATABASE_CONNECT_TIMEOUT=0
    ) == {"DATABASE_*_TIMEOUT": "ok"}
