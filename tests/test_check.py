"""`newsletter check` approves a sound production set-up and names every problem."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from sqlalchemy import update

from newsletter.cli import cli
from newsletter.extensions import db
from newsletter.ledger import Evidence, append_event
from newsletter.ledger.keyring import write_new_key
from newsletter.ledger.lag import SealState
from newsletter.ledger.seal import seal_waiting
from newsletter.models import Channel, LedgerCheckpoint, Subscriber, utcnow

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


@pytest.fixture
def ledger_files(tmp_path: Path) -> dict[str, object]:
    """A signing key file (mode 0600) and a checkpoint log path, as production has them."""
    key = tmp_path / "keys" / "ledger-signing.key"
    key.parent.mkdir()
    write_new_key(key, "news.example.org/consent-ledger")
    return {"LEDGER_SIGNING_KEY_FILE": key, "LEDGER_CHECKPOINT_LOG": tmp_path / "checkpoints.log"}


def test_a_sound_production_configuration_passes(
    check, database_url, smtp_server, ledger_files
) -> None:
    result = check(**production(database_url, smtp_server, **ledger_files))
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output
    assert "DATABASE_URL: reachable, migrated" in result.output
    assert f"MAIL_SERVER: {smtp_server.host}:{smtp_server.port} answers" in result.output
    assert "RATELIMIT_STORAGE_URI: Redis answers" in result.output
    assert GOOD_SECRET not in result.output  # secrets are never printed
    assert "ok      LEDGER_SIGNING_KEY_FILE: " in result.output
    assert "key news.example.org/consent-ledger+" in result.output
    assert "ok      LEDGER_CHECKPOINT_LOG: " in result.output
    assert "ok      ledger sealing: " in result.output
    key = Path(str(ledger_files["LEDGER_SIGNING_KEY_FILE"])).read_text().strip()
    assert key.rsplit("+", 1)[1] not in result.output  # nor the signing key


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


# --- the ledger's signing key, checkpoint log and sealing -------------------------------


def test_the_signing_key_file_is_required_and_must_be_a_private_signer_key(
    check, ledger_files, tmp_path: Path
) -> None:
    key = Path(str(ledger_files["LEDGER_SIGNING_KEY_FILE"]))
    found = "ERROR   LEDGER_SIGNING_KEY_FILE: "
    assert found + "not set: " in check("--offline").output
    missing = tmp_path / "nowhere.key"
    assert (
        f"{found}{missing} does not exist"
        in check("--offline", LEDGER_SIGNING_KEY_FILE=missing).output
    )
    key.chmod(0o640)
    result = check("--offline", LEDGER_SIGNING_KEY_FILE=key)
    assert f"{found}{key} is open to group or others (mode -rw-r-----): chmod 600" in result.output
    key.chmod(0o600)
    assert (
        "ok      LEDGER_SIGNING_KEY_FILE" in check("--offline", LEDGER_SIGNING_KEY_FILE=key).output
    )
    key.write_text(key.read_text().replace("PRIVATE+KEY+", "PUBLIC+KEY+"))
    result = check("--offline", LEDGER_SIGNING_KEY_FILE=key)
    assert f"{found}{key} is not a signer key (signer key: does not start" in result.output
    key.write_bytes(b"\xff\xfe")
    result = check("--offline", LEDGER_SIGNING_KEY_FILE=key)
    assert f"{found}{key} is not a signer key (not text)" in result.output
    result = check("--offline", LEDGER_SIGNING_KEY_FILE=key.parent)
    assert f"{found}{key.parent} is not a file" in result.output
    assert result.exit_code == 1


def test_a_checkpoint_log_that_is_unset_or_cannot_be_written_is_a_warning(
    check, ledger_files, tmp_path: Path
) -> None:
    key = ledger_files["LEDGER_SIGNING_KEY_FILE"]
    result = check("--offline", LEDGER_SIGNING_KEY_FILE=key)
    assert "WARNING LEDGER_CHECKPOINT_LOG: not set: the checkpoints have no witness" in (
        result.output
    )
    nowhere = tmp_path / "no-such-disk" / "checkpoints.log"
    result = check("--offline", LEDGER_SIGNING_KEY_FILE=key, LEDGER_CHECKPOINT_LOG=nowhere)
    assert f"WARNING LEDGER_CHECKPOINT_LOG: {nowhere} cannot be written" in result.output
    result = check("--offline", LEDGER_SIGNING_KEY_FILE=key, LEDGER_CHECKPOINT_LOG=tmp_path)
    assert f"WARNING LEDGER_CHECKPOINT_LOG: {tmp_path} cannot be written" in result.output
    log = tmp_path / "checkpoints.log"
    result = check("--offline", LEDGER_SIGNING_KEY_FILE=key, LEDGER_CHECKPOINT_LOG=log)
    assert f"ok      LEDGER_CHECKPOINT_LOG: {log}, every checkpoint is appended" in result.output
    result = check("--offline", LEDGER_SEAL_INTERVAL="soon")
    assert "ERROR   LEDGER_SEAL_INTERVAL: must be a positive number of seconds" in result.output


def test_the_lag_rule_bounds_the_wait_by_the_checkpoint_and_the_event() -> None:
    now = utcnow()
    ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
    # Nothing waits: no lag, whatever the checkpoint's age.
    assert not SealState(5, 5, ago(86400), None).lagging(10, now)
    # A quiet ledger: an old checkpoint and one fresh event is no lag.
    assert SealState(6, 5, ago(86400), ago(2)).waited(now) == 2
    assert not SealState(6, 5, ago(86400), ago(2)).lagging(10, now)
    # An event that occurred long ago waits since the checkpoint at most.
    assert SealState(6, 5, ago(20), ago(86400)).waited(now) == 20
    assert not SealState(6, 5, ago(30), ago(86400)).lagging(10, now)
    assert SealState(6, 5, ago(31), ago(86400)).lagging(10, now)
    # No checkpoint yet: the oldest event's own time.
    assert SealState(3, None, None, ago(31)).lagging(10, now)
    assert not SealState(0, None, None, None).lagging(10, now)
    # The oldest waiting event is missing: it waits forever.
    assert SealState(6, 5, None, None).lagging(10, now)


def test_sealing_that_lags_is_a_warning(
    app: Flask,
    check,
    database_url,
    smtp_server,
    ledger_files,
) -> None:
    subscriber = Subscriber(email="lag@example.org", email_key="lag@example.org")
    db.session.add(subscriber)
    db.session.commit()

    def event(occurred_seconds_ago: float) -> None:
        row = append_event(
            event="requested", channel=Channel.API, subscriber=subscriber, evidence=Evidence()
        )
        row.occurred_at = utcnow() - timedelta(seconds=occurred_seconds_ago)
        db.session.commit()

    def sealing() -> str:
        db.session.commit()
        settings = production(database_url, smtp_server, **ledger_files)
        lines = check(**settings, LEDGER_SEAL_INTERVAL=10).output.splitlines()
        return "\n".join(line for line in lines if "ledger sealing" in line)

    assert sealing() == "ok      ledger sealing: no checkpoint yet, 0 event(s) waiting"
    event(3600)
    assert sealing().startswith(
        "WARNING ledger sealing: 1 event(s) wait to be sealed, the oldest for up to 60 min "
        "(no checkpoint signed yet; the limit is 3 x LEDGER_SEAL_INTERVAL = 30 s)"
    )
    seal_waiting()
    assert sealing().startswith("ok      ledger sealing: 1 event(s) sealed")
    event(3600)  # occurred long ago, appended just after the seal: the seal bounds its wait
    assert sealing().startswith("ok      ledger sealing: 1 event(s) sealed, ")
    db.session.execute(update(LedgerCheckpoint).values(signed_at=utcnow() - timedelta(seconds=45)))
    db.session.commit()
    assert re.fullmatch(
        r"WARNING ledger sealing: 1 event\(s\) wait to be sealed, the oldest for up to 4[5-9] s "
        r"\(the latest checkpoint was signed 4[5-9] s ago; the limit is 3 x "
        r"LEDGER_SEAL_INTERVAL = 30 s\): is a worker running\?",
        sealing(),
    )
