"""`newsletter privacy report`: the GDPR Art. 30 record, from the live settings."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskCliRunner

from newsletter.models import MailingList, utcnow
from newsletter.privacy.policy import import_policy
from newsletter.privacy.retention import run_due_retention


def report(runner: FlaskCliRunner) -> str:
    """The command's output (it must succeed)."""
    result = runner.invoke(args=["privacy", "report"])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_record_follows_the_settings(
    app: Flask, runner: FlaskCliRunner, default_list: MailingList
) -> None:
    app.config.update(
        MAIL_SERVER="smtp.relay.example",
        MAIL_PORT=587,
        MAIL_USE_TLS=True,
        MAIL_PASSWORD="relay-password-never-printed",
        IP_LOGGING="none",
        RETENTION_UNCONFIRMED_DAYS=14,
        RETENTION_UNSUBSCRIBED_DAYS=0,
        RATELIMIT_STORAGE_URI="redis://:redis-secret@cache.internal:6379/0",
    )
    output = report(runner)
    for heading in (
        "## Controller",
        "## Purposes and legal basis",
        "## Categories of data subjects",
        "## Categories of personal data",
        "## Recipients and processors",
        "## Transfers to third countries",
        "## Retention",
        "## Technical and organisational security measures",
    ):
        assert heading in output
    assert "Inklusio ApS, C.A. Olesens Gade 4, 9000 Aalborg" in output
    assert "SMTP relay smtp.relay.example:587, STARTTLS (MAIL_USE_TLS)" in output
    assert "rate-limit store cache.internal" in output
    assert "no IP address (IP_LOGGING=none)" in output
    assert "unconfirmed signups: erased after 14 days (RETENTION_UNCONFIRMED_DAYS)" in output
    assert "kept, rule off (RETENTION_UNSUBSCRIBED_DAYS=0)" in output
    assert "delivery and transactional mail logs: 180 days" in output
    assert "lists: Nyhedsbrev" in output
    assert "privacy policy: none imported" in output
    assert "last run: never" in output
    assert "relay-password" not in output
    assert "redis-secret" not in output
    assert "test-secret-key" not in output


def test_the_record_names_the_policy_and_the_last_retention_run(
    app: Flask, runner: FlaskCliRunner
) -> None:
    app.config["MAIL_USE_TLS"] = False
    import_policy(b"---\ndate: 2023-10-30\n---\nText.\n")
    now = utcnow()
    run_due_retention(app, now)
    output = report(runner)
    assert (
        "privacy policy in force: version 1 of 2023-10-30 (http://newsletter.test/privacy)"
        in output
    )
    assert f"last run: {now.date().isoformat()}" in output
    assert "WITHOUT encryption" in output
