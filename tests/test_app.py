"""The application factory: proxies, and how configuration errors reach an operator."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import ConsentEvent, MailingList

from .fixtures.intake import drain_intake


@pytest.mark.parametrize(
    ("proxies", "expected_ip"),
    [(0, "127.0.0.1"), (1, "203.0.113.9")],
)
def test_client_address_comes_from_trusted_proxies_only(
    app_factory: Callable[..., Flask],
    default_list: MailingList,
    proxies: int,
    expected_ip: str,
) -> None:
    """X-Forwarded-For is believed only with TRUSTED_PROXIES set (it is trivially forged)."""
    proxied = app_factory(TRUSTED_PROXIES=proxies, IP_LOGGING="full")
    response = proxied.test_client().post(
        "/subscribe",
        data={"email": "proxied@example.org"},
        headers={"Origin": "http://newsletter.test", "X-Forwarded-For": "203.0.113.9"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert response.status_code == 200
    db.session.commit()
    with proxied.app_context():
        drain_intake()
    event = db.session.scalars(select(ConsentEvent)).one()
    assert event.ip == expected_ip


def _console(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``newsletter`` script with no NEWSLETTER_/FLASK_ settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NEWSLETTER_", "FLASK_"))
    }
    env["NEWSLETTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.sqlite'}"
    script = Path(sys.executable).with_name("newsletter")
    return subprocess.run(
        [str(script), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_help_lists_every_command_even_without_a_secret(tmp_path: Path) -> None:
    """`newsletter --help` must help a new operator, not print a traceback."""
    result = _console(tmp_path, "--help")
    assert result.returncode == 0
    for command in ("run", "worker", "db", "ledger", "consent", "list"):
        assert f"  {command} " in result.stdout
    assert "Traceback" not in result.stderr
    assert "NEWSLETTER_SECRET_KEY is not set" in result.stderr


def test_console_script_reports_missing_secret_without_traceback(tmp_path: Path) -> None:
    """An operator sees what to fix, not a stack trace, and a non-zero exit."""
    result = _console(tmp_path, "ledger", "verify")
    assert result.returncode == 2
    assert "NEWSLETTER_SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_worker_without_mail_server_refuses_to_start(
    app_factory: Callable[..., Flask],
) -> None:
    """Outside debug/testing, no MAIL_SERVER is a configuration error, said plainly."""
    production = app_factory(TESTING=False, MAIL_SERVER=None)
    result = production.test_cli_runner().invoke(args=["worker", "--once"])
    assert result.exit_code == 2
    assert "NEWSLETTER_MAIL_SERVER is not set" in result.output


def test_production_without_mail_server_keeps_mail_queued(
    app_factory: Callable[..., Flask], default_list: MailingList, tmp_path: Path
) -> None:
    """Mail is never written to the dev mailbox and marked sent outside development."""
    from newsletter.models import OutboxMessage, OutboxStatus
    from newsletter.worker.outbox import process_batch

    production = app_factory(TESTING=False, MAIL_SERVER=None)
    client = production.test_client()
    response = client.post(
        "/subscribe",
        data={"email": "queued@example.org"},
        headers={"Origin": "http://newsletter.test"},
    )
    assert response.status_code == 200
    with production.app_context():
        drain_intake()
        result = process_batch(production)
        assert (result.sent, result.retried) == (0, 1)
        row = db.session.scalars(select(OutboxMessage)).one()
        assert row.status == OutboxStatus.QUEUED
        assert row.attempts == 1
        assert "NEWSLETTER_MAIL_SERVER" in (row.last_error or "")
        db.session.remove()
    assert not (tmp_path / "mailbox").exists()


def test_worker_once_exits_non_zero_when_a_batch_fails(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`worker --once` from cron must report a broken run, not exit 0."""
    from newsletter.worker import round as worker

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database unreachable")

    monkeypatch.setattr(worker, "process_batch", broken)
    result = app.test_cli_runner().invoke(args=["worker", "--once"])
    assert result.exit_code == 1
    assert "1 batch(es) failed" in result.output
