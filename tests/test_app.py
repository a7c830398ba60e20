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
        headers={"Origin": "http://localhost", "X-Forwarded-For": "203.0.113.9"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert response.status_code == 200
    db.session.commit()
    event = db.session.scalars(select(ConsentEvent)).one()
    assert event.ip == expected_ip


def test_console_script_reports_missing_secret_without_traceback(tmp_path: Path) -> None:
    """An operator sees what to fix, not a stack trace, and a non-zero exit."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NEWSLETTER_", "FLASK_"))
    }
    env["NEWSLETTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.sqlite'}"
    script = Path(sys.executable).with_name("newsletter")
    result = subprocess.run(
        [str(script), "ledger", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "NEWSLETTER_SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr
