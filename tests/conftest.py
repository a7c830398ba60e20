"""Fixtures: the app on SQLite or PostgreSQL, a real SMTP server, data factories.

The backend is chosen by NEWSLETTER_TEST_BACKEND (``sqlite``, the default, or
``postgresql``); ``make test`` runs the suite once for each. On PostgreSQL the
suite creates its own database from NEWSLETTER_TEST_POSTGRES_URL (default:
the local server) and drops it at the end. The schema is made by the real
migrations, not create_all, so every run also tests them.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, g, request_started
from flask.testing import FlaskClient, FlaskCliRunner

from newsletter import create_app
from newsletter.extensions import db
from newsletter.ledger.signing import Signer
from newsletter.models import MailingList
from newsletter.subscriptions.lists import DEFAULT_CONSENT_TEXT, create_list

pytest_plugins = [
    "tests.fixtures.smtp",
    "tests.fixtures.mailflow",
    "tests.fixtures.staff",
    "tests.fixtures.browser",
    "tests.fixtures.private_postgres",
    "tests.fixtures.preferences",
    "tests.fixtures.ledger_history",
]

BACKEND = os.environ.get("NEWSLETTER_TEST_BACKEND", "sqlite")
POSTGRES_ADMIN_URL = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
ORIGIN = "http://newsletter.test"


def pytest_report_header() -> str:
    """Say which database this run uses."""
    return f"newsletter database backend: {BACKEND}"


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    """`newsletter worker` installs SIGTERM/SIGINT handlers for its process; a test
    that runs it in-process must not leave them to pytest."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database for this test session, migrated to the newest revision."""
    if BACKEND == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite'}"
        _migrate(url)
        yield url
        return
    if BACKEND != "postgresql":
        raise pytest.UsageError(f"unknown NEWSLETTER_TEST_BACKEND {BACKEND!r}")
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"newsletter_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        _migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _migrate(url: str) -> None:
    from flask_migrate import upgrade

    app = create_app({"TESTING": True, "DATABASE_URL": url, "SECRET_KEY": TEST_SECRET})
    with app.app_context():
        upgrade()
        db.engine.dispose()


def base_config(database_url: str, tmp_path: Path) -> dict[str, Any]:
    """Settings every test app starts from (a signing key of the test's own:
    nothing is written into the project's instance folder)."""
    key_file = tmp_path / "ledger-signing.key"
    if not key_file.exists():
        key_file.write_text(Signer.generate("newsletter.test/consent-ledger").to_text() + "\n")
        key_file.chmod(0o600)
    return {
        "LEDGER_SIGNING_KEY_FILE": str(key_file),
        "TESTING": True,
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET,
        "BASE_URL": ORIGIN,
        "MAILBOX_DIR": str(tmp_path / "mailbox"),
        "RATELIMIT_ENABLED": False,
        "MAIL_SUPPRESS_SEND": False,
        "MAIL_DEFAULT_SENDER": "Inklusio <nyhedsbrev@newsletter.test>",
        "OUTBOX_RETRY_BASE_SECONDS": 1,
        "MAIL_TIMEOUT": 5,
    }


@pytest.fixture
def app_factory(
    database_url: str, tmp_path: Path, smtp_server: Any
) -> Iterator[Callable[..., Flask]]:
    """Make apps with extra settings; every table is emptied after the test."""
    apps: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        config = base_config(database_url, tmp_path)
        config.update(MAIL_SERVER=smtp_server.host, MAIL_PORT=smtp_server.port)
        config.update(overrides)
        app = create_app(config)
        app.test_client_class = EnglishClient
        request_started.connect(_forget_request_state, app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    if apps:
        _empty_tables(apps[0])


class EnglishClient(FlaskClient):
    """A test client whose requests say ``Accept-Language: en``.

    Danish is the product's default language, and most tests check English
    text, as an English-speaking visitor's browser gets it (and signups made
    through it store English, so their mails are English too). Tests of the
    language rules send their own header or ``?lang=``, or use a plain
    ``FlaskClient``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.environ_base.setdefault("HTTP_ACCEPT_LANGUAGE", "en")


def _forget_request_state(sender: Flask, **extra: Any) -> None:
    """Start every test request with a clean ``g``.

    Tests push one app context for their whole length, and Flask reuses it for
    each test request, so ``g`` would carry one request's logged-in user and
    CSRF token into the next (and into other clients). In production every
    request has its own app context.
    """
    # "_flask_babel" is Flask-Babel's per-request locale cache and "locale" the
    # subscriber's language a token page sets: both belong to one request only.
    for key in ("_login_user", "csrf_token", "_flask_babel", "locale"):
        g.pop(key, None)


def _empty_tables(app: Flask) -> None:
    """Delete all rows (children first) and reset the ledger head."""
    with app.app_context():
        with db.engine.begin() as conn:
            for table in reversed(db.metadata.sorted_tables):
                conn.execute(table.delete())
            conn.exec_driver_sql("INSERT INTO ledger_head (id, seq) VALUES (1, 0)")
        db.engine.dispose()


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Iterator[Flask]:
    """The application, with an app context pushed for direct service calls."""
    application = app_factory()
    with application.app_context():
        yield application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client; public POSTs need an Origin header (see ``post_form``)."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A runner for the ``newsletter`` commands."""
    return app.test_cli_runner()


@pytest.fixture
def make_list(app: Flask) -> Callable[..., MailingList]:
    """Factory: create a list with a consent text."""

    def make(
        slug: str = "nyhedsbrev",
        name: str = "Nyhedsbrev",
        consent_text: str = DEFAULT_CONSENT_TEXT,
        default: bool = False,
    ) -> MailingList:
        return create_list(slug, name, consent_text, default=default)

    return make


@pytest.fixture
def default_list(make_list: Callable[..., MailingList]) -> MailingList:
    """The default list, "Nyhedsbrev"."""
    return make_list(default=True)
