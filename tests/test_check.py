"""`newsletter check` approves a sound production set-up and names every problem."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import cli

from .fixtures.smtp import SMTPServer

GOOD_SECRET = "k" * 48


@pytest.fixture
def check(monkeypatch: pytest.MonkeyPatch, tmp_path) -> object:
    """Run `newsletter check` with exactly these NEWSLETTER_* settings."""

    def run(*args: str, **settings: object) -> Result:
        for name in list(__import__("os").environ):
            if name.startswith("NEWSLETTER_") and name != "NEWSLETTER_TEST_BACKEND":
                monkeypatch.delenv(name)
        for name, value in settings.items():
            monkeypatch.setenv(f"NEWSLETTER_{name}", str(value))
        monkeypatch.chdir(tmp_path)
        return CliRunner().invoke(cli, ["check", *args])

    return run


def production(database_url: str, smtp_server: SMTPServer, **extra: object) -> dict[str, object]:
    """A sound production configuration against this machine's services."""
    settings: dict[str, object] = {
        "SECRET_KEY": GOOD_SECRET,
        "LEDGER_KEY": "l" * 48,
        "BASE_URL": "https://news.example.org",
        "ALLOWED_ORIGINS": "https://www.example.org",
        "DATABASE_URL": database_url,
        "MAIL_SERVER": smtp_server.host,
        "MAIL_PORT": smtp_server.port,
        "MAIL_DEFAULT_SENDER": "Inklusio <nyhedsbrev@example.org>",
        "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0",
    }
    settings.update(extra)
    return settings


def test_a_sound_production_configuration_passes(check, database_url, smtp_server) -> None:
    result = check(**production(database_url, smtp_server))
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output
    assert "DATABASE_URL: reachable, migrated" in result.output
    assert f"MAIL_SERVER: {smtp_server.host}:{smtp_server.port} answers" in result.output
    assert "RATELIMIT_STORAGE_URI: Redis answers" in result.output
    assert GOOD_SECRET not in result.output  # secrets are never printed


def test_every_setting_problem_is_named_at_once(check) -> None:
    result = check(
        "--offline",
        SECRET_KEY="short",
        BASE_URL="http://news.example.org/path",
        ALLOWED_ORIGINS="www.example.org",
        MAIL_USE_TLS="true",
        MAIL_USE_SSL="true",
        DKIM_SELECTOR="mail",
    )
    assert result.exit_code == 1
    for expected in (
        "ERROR   SECRET_KEY: too weak",
        "ERROR   BASE_URL: 'http://news.example.org/path' is not an https URL",
        "ERROR   ALLOWED_ORIGINS: not origins",
        "ERROR   MAIL_SERVER: not set",
        "ERROR   MAIL_DEFAULT_SENDER: still the development default",
        "ERROR   MAIL_USE_TLS: MAIL_USE_TLS and MAIL_USE_SSL exclude each other",
        "ERROR   DKIM_*: partly configured; missing DKIM_DOMAIN, DKIM_PRIVATE_KEY",
        "WARNING LEDGER_KEY",
        "WARNING RATELIMIT_STORAGE_URI: memory://",
    ):
        assert expected in result.output


def test_missing_secret_is_reported_not_a_traceback(check) -> None:
    result = check("--offline")
    assert result.exit_code == 1
    assert "ERROR   SECRET_KEY: not set" in result.output
    assert "Traceback" not in result.output


def test_unreachable_services_are_named(check, database_url, smtp_server) -> None:
    settings = production(
        database_url,
        smtp_server,
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/nothing",
        MAIL_PORT=1,
        RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0",
    )
    result = check(**settings)
    assert result.exit_code == 1
    assert "ERROR   DATABASE_URL: cannot connect" in result.output
    assert "ERROR   MAIL_SERVER: " in result.output
    assert "ERROR   RATELIMIT_STORAGE_URI: Redis does not answer" in result.output


def test_an_unmigrated_database_is_an_error(check, smtp_server, tmp_path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    result = check(**production(empty, smtp_server))
    assert result.exit_code == 1
    assert "schema at nothing" in result.output
    assert "run `newsletter db upgrade`" in result.output
    assert "WARNING DATABASE_URL: SQLite" in result.output
