"""A failing service leaves nothing half-written: its change and its audit entry
commit together or not at all, whoever called it (console, command line)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, NoReturn

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.models import (
    AuditEntry,
    Campaign,
    CampaignStatus,
    Delivery,
    MailingList,
    PolicyVersion,
    Role,
    StaffUser,
    utcnow,
)
from newsletter.staff import audit

from .fixtures.staff import StaffClient


def committed(app: Flask, query: Any) -> Any:
    """A scalar as another connection sees it, after this session's next commit.

    Committing here also ends the session's read (on SQLite every transaction
    holds the write lock), and would write anything a failed service left behind.
    """
    db.session.commit()
    with db.engine.connect() as conn:
        return conn.scalar(query)


def count(app: Flask, model: type) -> int:
    """Committed rows of ``model``."""
    return int(committed(app, select(func.count()).select_from(model)))


def failing_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make writing an audit entry fail (a full disk, a lost connection ...)."""

    def refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise RuntimeError("the audit trail cannot be written")

    monkeypatch.setattr(audit, "record", refuse)


def test_staff_create_from_the_command_line_commits_the_account_with_its_audit_entry(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["staff", "create", "atomic@example.org", "--generate-password"]
    with monkeypatch.context() as patch:
        failing_audit(patch)
        result = runner.invoke(args=args)
    assert result.exit_code != 0
    assert isinstance(result.exception, RuntimeError)
    # The account was flushed before the audit entry failed: it is gone with it,
    # for other connections and for this session alike.
    assert db.session.scalar(select(func.count()).select_from(StaffUser)) == 0
    assert count(app, StaffUser) == 0

    assert runner.invoke(args=args).exit_code == 0
    assert count(app, StaffUser) == 1
    action = committed(app, select(AuditEntry.action))
    assert action == "staff.create"


def test_reset_two_factor_from_the_command_line_changes_nothing_when_the_audit_fails(
    app: Flask,
    runner: FlaskCliRunner,
    make_staff: Callable[..., StaffUser],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = make_staff(Role.EDITOR, totp=True)
    with monkeypatch.context() as patch:
        failing_audit(patch)
        result = runner.invoke(args=["staff", "reset-2fa", user.email])
    assert result.exit_code != 0
    secret = select(StaffUser.totp_secret).where(StaffUser.id == user.id)
    assert db.session.scalar(secret) is not None
    assert committed(app, secret) is not None
    assert count(app, AuditEntry) == 0


def test_a_console_list_create_with_a_taken_slug_writes_nothing(
    app: Flask, staff_client: Callable[..., StaffClient], make_list: Callable[..., MailingList]
) -> None:
    make_list("taken")
    editor = staff_client(Role.EDITOR)
    before = count(app, AuditEntry)
    page = editor.post(
        "/admin/lists/new",
        data={"slug": "taken", "name": "Second", "consent_text": "Ja tak."},
    )
    assert page.status_code == 200
    assert "exists already" in page.get_data(as_text=True)
    assert count(app, MailingList) == 1
    assert count(app, AuditEntry) == before


def test_a_start_whose_audit_entry_fails_queues_nothing(
    app: Flask,
    make_staff: Callable[..., StaffUser],
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subscribed("reader@example.org")
    editor = make_staff(Role.EDITOR)
    campaign_id = create_campaign("nyhedsbrev", "Nyt", "Hej.").id
    with monkeypatch.context() as patch:
        failing_audit(patch)
        with pytest.raises(RuntimeError):
            # The deliveries are inserted before the audit entry is written.
            start_campaign(campaign_id, actor=editor)
    status = select(Campaign.status).where(Campaign.id == campaign_id)
    assert db.session.scalar(status) == CampaignStatus.DRAFT
    assert committed(app, status) == CampaignStatus.DRAFT
    assert count(app, Delivery) == 0

    result = start_campaign(campaign_id, actor=editor)
    assert (result.queued, result.status, result.scheduled) == (1, CampaignStatus.SENDING, False)
    assert count(app, Delivery) == 1


def test_start_says_whether_it_started_or_scheduled(
    app: Flask, default_list: MailingList, subscribed: Callable[..., EmailMessage]
) -> None:
    subscribed("reader@example.org")
    now = create_campaign("nyhedsbrev", "Now", "Hej.")
    started = start_campaign(now.id)
    assert (started.queued, started.status, started.scheduled_at) == (
        1,
        CampaignStatus.SENDING,
        None,
    )
    assert started == 1  # the count itself
    assert not started.scheduled

    later = create_campaign("nyhedsbrev", "Later", "Hej.")
    at = utcnow() + timedelta(days=1)
    scheduled = start_campaign(later.id, at)
    assert (scheduled.queued, scheduled.status, scheduled.scheduled_at) == (
        0,
        CampaignStatus.SCHEDULED,
        at,
    )
    assert scheduled.scheduled


POLICY = b"---\ntitle: Policy\neffective: 2024-01-01\n---\nWe keep little.\n"


def test_policy_import_from_the_command_line_commits_the_version_with_its_audit_entry(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "policy.md"
    policy.write_bytes(POLICY)
    with monkeypatch.context() as patch:
        failing_audit(patch)
        assert runner.invoke(args=["policy", "import", str(policy)]).exit_code != 0
    assert db.session.scalar(select(func.count()).select_from(PolicyVersion)) == 0
    assert count(app, PolicyVersion) == 0

    result = runner.invoke(args=["policy", "import", str(policy)])
    assert result.exit_code == 0, result.output
    entry = select(AuditEntry.action, AuditEntry.object_id, AuditEntry.actor_email)
    assert committed(app, entry) == "policy.import"
    with db.engine.connect() as conn:
        assert conn.execute(entry).one() == ("policy.import", "1", "(command line)")
    # The same file again changes nothing and audits nothing.
    assert runner.invoke(args=["policy", "import", str(policy)]).exit_code == 0
    assert (count(app, PolicyVersion), count(app, AuditEntry)) == (1, 1)
