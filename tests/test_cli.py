"""The ``newsletter`` commands: ledger verify, consent proof, list create/ensure-default, worker.

Most tests drive the app's CLI in-process (the ``runner`` fixture); the last
ones run the installed console script as an operator would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.models import (
    ConsentEvent,
    MailingList,
    OutboxMessage,
    OutboxStatus,
    SignupIntake,
    SubscriptionStatus,
)
from newsletter.subscriptions.lists import DEFAULT_CONSENT_TEXT

from .conftest import TEST_SECRET
from .fixtures.mailflow import link_path, text_of
from .fixtures.smtp import SMTPServer

CONSOLE_SCRIPT = Path(sys.prefix) / "bin" / "newsletter"


def tamper(sql: str, **params: object) -> None:
    """Edit the database behind the app's back, and commit."""
    db.session.execute(sa.text(sql), params)
    db.session.commit()


# -- newsletter ledger verify -----------------------------------------------------------------


def test_ledger_verify_reports_a_sound_ledger(
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    client: Any,
) -> None:
    subscribed("one@example.org")
    welcome = subscribed("two@example.org")
    assert client.post(link_path(welcome, "unsubscribe")).status_code == 200
    db.session.commit()
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output
    # The worker sealed the four events of the signups; the withdrawal waits.
    assert "ledger: 4 events sealed, 1 waiting; every event (5) and" in result.stdout
    assert "BROKEN" not in result.output
    assert runner.invoke(args=["ledger", "seal"]).exit_code == 0
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output
    assert "ledger: 5 events sealed, 0 waiting" in result.stdout


def test_ledger_verify_on_an_empty_ledger(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output
    assert "ledger: 0 events sealed, 0 waiting; every event (0)" in result.stdout


@pytest.mark.parametrize(
    ("sql", "broken"),
    [
        ("UPDATE consent_events SET channel = 'staff' WHERE seq = 2", "event #2: does not match"),
        ("UPDATE consent_events SET email = 'x@example.org' WHERE seq = 1", "event #1: personal"),
        ("DELETE FROM consent_events WHERE seq = 2", "event #2: missing"),
        ("DELETE FROM consent_events WHERE seq = 4", "event #4: missing"),
        ("UPDATE consent_texts SET text = 'Ja tak til alt.'", "texts: consent text #"),
        ("DELETE FROM ledger_checkpoints", "tree: no valid signed checkpoint of the sealed size 4"),
    ],
)
def test_ledger_verify_fails_and_names_the_broken_event(
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    sql: str,
    broken: str,
) -> None:
    subscribed("one@example.org")
    subscribed("two@example.org")
    assert runner.invoke(args=["ledger", "verify"]).exit_code == 0
    tamper(sql)
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1
    assert f"BROKEN {broken}" in result.stderr
    assert "problem(s)" in result.stderr
    assert "verified" not in result.output


def test_ledger_verify_since_an_unreadable_file_is_a_usage_error(
    runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "not-a-checkpoint.txt"
    path.write_text("hello\n", encoding="utf-8")
    result = runner.invoke(args=["ledger", "verify", "--since", str(path)])
    assert result.exit_code == 2
    assert "Invalid value for --since" in result.output
    assert "Traceback" not in result.output


# -- newsletter consent proof EMAIL ---------------------------------------------------------------


def test_consent_proof_prints_the_evidence_as_json(
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    client: Any,
) -> None:
    welcome = subscribed("Proof@Example.org", name="Pia Proof")
    subscribed("someone-else@example.org")
    assert client.post(link_path(welcome, "unsubscribe")).status_code == 200
    db.session.commit()

    result = runner.invoke(args=["consent", "proof", "PROOF@example.org"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)

    assert document["email"] == "PROOF@example.org"
    assert len(document["email_digest"]) == 64
    subscriber = document["subscriber"]
    assert subscriber["email"] == "Proof@example.org"
    assert subscriber["name"] == "Pia Proof"
    assert subscriber["locale"] == "en"  # signed up from an English page (EnglishClient)
    assert subscriber["created_at"]
    (subscription,) = subscriber["subscriptions"]
    assert subscription["list"] == "nyhedsbrev"
    assert subscription["status"] == SubscriptionStatus.UNSUBSCRIBED
    assert subscription["consent_text_version"] == 1
    assert subscription["requested_at"] <= subscription["confirmed_at"]
    assert subscription["confirmed_at"] <= subscription["unsubscribed_at"]

    events = document["events"]
    assert [(e["event"], e["channel"]) for e in events] == [
        ("requested", "form"),
        ("confirmed", "confirm_link"),
        ("withdrawn", "unsubscribe_page"),
    ]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    stored = db.session.scalars(
        select(ConsentEvent).where(ConsentEvent.email == "Proof@example.org")
    ).all()
    assert {e["seq"] for e in events} == {e.seq for e in stored}
    for event in events:
        assert event["list"] == "nyhedsbrev"
        assert event["consent_text"] == {"version": 1, "text": DEFAULT_CONSENT_TEXT}
        assert event["ip"] == "127.0.0.0/24"  # the default IP_LOGGING, truncated
        assert event["occurred_at"].endswith("+00:00")
        assert event["source_url"]
    # Danish text comes out as text, not \u escapes.
    assert "på e-mail" in result.stdout


def test_consent_proof_for_an_unknown_address_has_no_events(
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
) -> None:
    subscribed("known@example.org")
    result = runner.invoke(args=["consent", "proof", "stranger@example.org"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["email"] == "stranger@example.org"
    assert document["subscriber"] is None
    assert document["events"] == []


@pytest.mark.parametrize("address", ["not-an-address", "two@@example.org", ""])
def test_consent_proof_rejects_a_malformed_address(runner: FlaskCliRunner, address: str) -> None:
    result = runner.invoke(args=["consent", "proof", address])
    assert result.exit_code == 2  # click's usage error
    assert "Invalid value for EMAIL" in result.output
    assert "Traceback" not in result.output


# -- newsletter list create / ensure-default -------------------------------------------------


def lists() -> list[MailingList]:
    """All lists, fresh from the database."""
    db.session.commit()
    return list(db.session.scalars(select(MailingList).order_by(MailingList.id)))


def test_list_create_makes_a_list_with_consent_text_version_1(runner: FlaskCliRunner) -> None:
    result = runner.invoke(
        args=[
            "list",
            "create",
            "tech",
            "--name",
            "Tech notes",
            "--consent-text",
            "Ja tak, send mig tekniske noter.",
            "--description",
            "Once a month.",
        ]
    )
    assert result.exit_code == 0, result.output
    (created,) = lists()
    assert f"created list tech (id {created.id})" in result.stdout
    assert (created.slug, created.name, created.description) == (
        "tech",
        "Tech notes",
        "Once a month.",
    )
    assert created.is_default is False
    assert [(t.version, t.text) for t in created.consent_texts] == [
        (1, "Ja tak, send mig tekniske noter.")
    ]


def test_list_create_default_flag_and_default_consent_text(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["list", "create", "main", "--name", "Main", "--default"])
    assert result.exit_code == 0, result.output
    (created,) = lists()
    assert created.is_default is True
    assert [(t.version, t.text) for t in created.consent_texts] == [(1, DEFAULT_CONSENT_TEXT)]


def test_list_create_refuses_a_duplicate_slug(runner: FlaskCliRunner) -> None:
    assert runner.invoke(args=["list", "create", "tech", "--name", "Tech"]).exit_code == 0
    result = runner.invoke(args=["list", "create", "tech", "--name", "Another"])
    assert result.exit_code == 2
    assert "A list named 'tech' exists already." in result.output
    assert "Traceback" not in result.output
    assert [m.name for m in lists()] == ["Tech"]


@pytest.mark.parametrize("slug", ["Tech", "tech notes", "-tech", "tech-", "tæk", "a" * 65, "x/y"])
def test_list_create_refuses_a_malformed_slug(runner: FlaskCliRunner, slug: str) -> None:
    result = runner.invoke(args=["list", "create", "--name", "Tech", "--", slug])
    assert result.exit_code == 2
    assert "Use lower-case letters, digits and hyphens" in result.output
    assert lists() == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--name", "   "], "Give the list a name"),
        (["--name", "Tech", "--consent-text", "  "], "A list needs a consent text."),
    ],
)
def test_list_create_refuses_an_empty_name_or_consent_text(
    runner: FlaskCliRunner, options: list[str], message: str
) -> None:
    result = runner.invoke(args=["list", "create", "tech", *options])
    assert result.exit_code == 2
    assert message in result.output
    assert lists() == []


def test_list_create_requires_a_name(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["list", "create", "tech"])
    assert result.exit_code == 2
    assert "--name" in result.output
    assert lists() == []


def test_ensure_default_creates_nyhedsbrev_once(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["list", "ensure-default"])
    assert result.exit_code == 0, result.output
    assert "created default list nyhedsbrev" in result.stdout
    (created,) = lists()
    assert (created.slug, created.name, created.is_default) == ("nyhedsbrev", "Nyhedsbrev", True)
    assert [(t.version, t.text) for t in created.consent_texts] == [(1, DEFAULT_CONSENT_TEXT)]

    again = runner.invoke(args=["list", "ensure-default"])
    assert again.exit_code == 0, again.output
    assert "lists exist already" in again.stdout
    assert [m.slug for m in lists()] == ["nyhedsbrev"]


def test_ensure_default_is_a_no_op_when_any_list_exists(
    runner: FlaskCliRunner, make_list: Callable[..., MailingList]
) -> None:
    make_list("tech", "Tech notes")
    result = runner.invoke(args=["list", "ensure-default"])
    assert result.exit_code == 0, result.output
    assert "lists exist already" in result.stdout
    assert [m.slug for m in lists()] == ["tech"]


# -- which export, which import: the help says -------------------------------------------------


def listed(runner: FlaskCliRunner, *group: str) -> dict[str, str]:
    """The commands a group's --help lists, each with its summary (wrapped lines joined)."""
    result = runner.invoke(args=[*group, "--help"])
    assert result.exit_code == 0, result.output
    summaries: dict[str, str] = {}
    name = ""
    for line in result.output.split("Commands:", 1)[1].splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name, _, summary = line.strip().partition(" ")
            summaries[name] = summary.strip()
        elif line.strip():
            summaries[name] += " " + line.strip()
    return summaries


def test_help_tells_a_lists_csv_from_one_persons_data_and_from_a_policy(
    runner: FlaskCliRunner,
) -> None:
    top = listed(runner)
    assert top["export"].startswith("Alias of `list export`: a list's subscribers as CSV")
    assert top["import"].startswith("Alias of `list import`: a list's subscribers from a CSV")
    in_list = listed(runner, "list")
    assert {"create", "ensure-default", "export", "import"} <= set(in_list)
    assert in_list["export"].startswith("A list's subscribers as CSV")
    assert in_list["import"].startswith("A list's subscribers from a CSV file")
    assert listed(runner, "privacy")["export"].startswith("One person's data as JSON")
    assert listed(runner, "policy")["import"].startswith("A privacy-policy version")
    for alias, of in (("export", "list export"), ("import", "list import")):
        result = runner.invoke(args=[alias, "--help"])
        assert result.exit_code == 0, result.output
        assert f"Alias of `newsletter {of}`." in result.output
        assert "--list" in result.output


# -- newsletter worker --once -----------------------------------------------------------------


def test_worker_once_sends_what_is_queued_and_exits(
    runner: FlaskCliRunner,
    default_list: MailingList,
    client: FlaskClient,
    smtp_server: SMTPServer,
) -> None:
    for address in ("w1@example.org", "w2@example.org", "w3@example.org"):
        response = client.post(
            "/subscribe", data={"email": address}, headers={"Origin": "http://newsletter.test"}
        )
        assert response.status_code == 200
    db.session.commit()
    assert smtp_server.messages == []  # nothing is sent from a web request
    # The requests only stored the signups; the worker does the rest.
    assert db.session.scalar(select(func.count()).select_from(SignupIntake)) == 3
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    db.session.commit()

    result = runner.invoke(args=["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert "worker: sending from the outbox (once)" in result.stdout

    sent = smtp_server.messages
    assert sorted(str(m["To"]) for m in sent) == [
        "w1@example.org",
        "w2@example.org",
        "w3@example.org",
    ]
    assert all("/confirm/" in text_of(m) for m in sent)
    db.session.commit()
    statuses = db.session.scalars(select(OutboxMessage.status)).all()
    assert statuses == [OutboxStatus.SENT] * 3
    db.session.commit()  # the worker needs the (SQLite) write lock

    # Nothing left: a second run sends nothing and still exits.
    again = runner.invoke(args=["worker", "--once"])
    assert again.exit_code == 0, again.output
    assert len(smtp_server.messages) == 3


# -- the installed console script ---------------------------------------------------------------


def console(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``newsletter`` console script with a clean NEWSLETTER_ environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "FLASK_"))}
    env["NEWSLETTER_SECRET_KEY"] = TEST_SECRET
    env["NEWSLETTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'console.sqlite'}"
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_console_script_lists_the_commands(tmp_path: Path) -> None:
    assert CONSOLE_SCRIPT.exists(), f"console script not installed at {CONSOLE_SCRIPT}"
    result = console(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    commands = result.stdout.split("Commands:", 1)[1]
    listed = {line.split()[0] for line in commands.splitlines() if line.strip()}
    assert {"run", "worker", "ledger", "consent", "list", "db"} <= listed


def test_console_script_upgrade_ensure_default_and_verify(tmp_path: Path) -> None:
    """The README's first steps, through the real entry point, on a new SQLite file."""
    upgrade = console(tmp_path, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    ensure = console(tmp_path, "list", "ensure-default")
    assert ensure.returncode == 0, ensure.stderr
    assert "created default list nyhedsbrev" in ensure.stdout
    verify = console(tmp_path, "ledger", "verify")
    assert verify.returncode == 0, verify.stderr
    assert "ledger: 0 events sealed, 0 waiting; every event (0)" in verify.stdout
