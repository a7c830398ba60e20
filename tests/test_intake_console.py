"""The signup intake as staff see it: the dashboard's queue figures, the failed
rows page with Retry and Discard (roles, CSRF, audit), and `newsletter check`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from sqlalchemy import select, update

from newsletter.cli import cli
from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.ledger.seal import seal_waiting
from newsletter.models import (
    AuditEntry,
    Channel,
    MailingList,
    Role,
    SignupIntake,
    StaffUser,
    Subscriber,
    utcnow,
)
from newsletter.subscriptions.intake import SignupRequest, accept_signup
from newsletter.subscriptions.lists import set_archived

from .fixtures.intake import drain_intake
from .fixtures.smtp import SMTPServer
from .fixtures.staff import StaffClient
from .test_check import ledger_files, production  # noqa: F401 - ledger_files is a fixture
from .test_html_validity import report, vnu_errors

POISON = "poison@example.org"


@pytest.fixture
def extra_list(make_list: Callable[..., MailingList], default_list: MailingList) -> MailingList:
    """A second, non-default list (the default one cannot be archived)."""
    return make_list(slug="kurser", name="Kurser")


@pytest.fixture
def owner(make_staff: Callable[..., StaffUser]) -> StaffUser:
    """The staff member who archives and reopens lists in these tests."""
    return make_staff(Role.OWNER)


def sign_up(email: str, *slugs: str, channel: Channel = Channel.FORM) -> None:
    """A public signup as the request stores it (nothing processed yet)."""
    evidence = Evidence(ip="192.0.2.1", user_agent="test")
    accept_signup(
        SignupRequest(email=email, channel=channel, evidence=evidence, list_slugs=[*slugs])
    )


def rows() -> list[SignupIntake]:
    """Every intake row, fresh from the database."""
    db.session.commit()
    db.session.expire_all()
    return list(db.session.scalars(select(SignupIntake).order_by(SignupIntake.id)))


def fail_one(extra_list: MailingList, owner: StaffUser) -> SignupIntake:
    """A row the real worker failed: signed up to a list archived before a worker came."""
    sign_up(POISON, extra_list.slug, channel=Channel.API)
    set_archived(extra_list.id, True, actor=owner)
    drain_intake()
    (row,) = rows()
    assert row.failed_at is not None
    assert "archived" in (row.last_error or "")
    return row


def audits(action: str) -> list[AuditEntry]:
    """Audit entries with this action, oldest first."""
    db.session.commit()
    return list(
        db.session.scalars(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        )
    )


def age_by(seconds: int) -> None:
    """Move every waiting row's request time back."""
    db.session.execute(
        update(SignupIntake).values(received_at=utcnow() - timedelta(seconds=seconds))
    )
    db.session.commit()


def test_the_dashboard_shows_waiting_oldest_and_failed(
    staff_client: Callable[..., StaffClient], extra_list: MailingList, owner: StaffUser
) -> None:
    viewer = staff_client(Role.VIEWER)
    html = viewer.get("/admin/").get_data(as_text=True)
    assert "Signups waiting for a worker" in html
    assert "/admin/intake" not in html  # nothing failed: no link
    assert "is a worker running?" not in html

    fail_one(extra_list, owner)
    sign_up("one@example.org")
    sign_up("two@example.org")
    db.session.execute(
        update(SignupIntake)
        .where(SignupIntake.failed_at.is_(None))
        .values(received_at=utcnow() - timedelta(minutes=5))
    )
    db.session.commit()
    html = viewer.get("/admin/").get_data(as_text=True)
    section = html.split('id="intake-heading"', 1)[1].split("</section>", 1)[0]
    assert "<dt>Waiting</dt><dd>2</dd>" in section
    assert "5 minutes" in section
    assert "<dt>Failed</dt><dd>1</dd>" in section
    assert "is a worker running?" in section
    assert 'href="/admin/intake"' in section
    assert "See the 1 signup a worker could not process" in section


def test_the_failed_page_lists_the_row_the_worker_failed(
    staff_client: Callable[..., StaffClient], extra_list: MailingList, owner: StaffUser
) -> None:
    row = fail_one(extra_list, owner)
    for role in (Role.VIEWER, Role.EDITOR):
        page = staff_client(role).get("/admin/intake")
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert f'<th scope="row" class="num">{row.id}</th>' in html
        assert POISON in html  # every role may see subscribers' addresses
        assert "Kurser" in html
        assert "API" in html  # the channel, as the console names it
        assert f"list {extra_list.id} was archived after the signup" in html
        assert row.received_at.strftime("%Y-%m-%d %H:%M:%S") in html
        has_buttons = f"/admin/intake/{row.id}/retry" in html
        assert has_buttons == (role == Role.EDITOR)
        assert (f"/admin/intake/{row.id}/discard" in html) == has_buttons


def test_a_deleted_list_is_named_by_its_id(
    staff_client: Callable[..., StaffClient], extra_list: MailingList, owner: StaffUser
) -> None:
    row = fail_one(extra_list, owner)
    db.session.execute(
        update(SignupIntake).where(SignupIntake.id == row.id).values(terms=[[987654, 1]])
    )
    db.session.commit()
    html = staff_client(Role.VIEWER).get("/admin/intake").get_data(as_text=True)
    assert "list 987654 (deleted)" in html


def test_retry_lets_the_worker_process_the_row(
    staff_client: Callable[..., StaffClient], extra_list: MailingList, owner: StaffUser
) -> None:
    row = fail_one(extra_list, owner)
    row_id = row.id
    editor = staff_client(Role.EDITOR)
    set_archived(extra_list.id, False, actor=owner)
    response = editor.post(f"/admin/intake/{row.id}/retry")
    assert response.status_code == 302
    assert response.location.endswith("/admin/intake")
    (again,) = rows()
    assert (again.failed_at, again.last_error, again.attempts, again.lease_until) == (
        None,
        None,
        0,
        None,
    )
    (entry,) = audits("intake.retry")
    assert entry.actor_id == editor.user.id
    assert (entry.object_type, entry.object_id) == ("signup_intake", str(row.id))
    assert entry.details["lists"] == [extra_list.id]
    assert POISON not in str(entry.details)

    assert drain_intake() == 1
    assert rows() == []
    subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email == POISON))
    assert subscriber is not None
    assert [s.list_id for s in subscriber.subscriptions] == [extra_list.id]
    # Pressed again (another tab): the row is no longer failed, nothing happens.
    again_response = editor.post(f"/admin/intake/{row_id}/retry", follow_redirects=True)
    assert "no longer among the failed ones" in again_response.get_data(as_text=True)
    assert len(audits("intake.retry")) == 1


def test_discard_deletes_the_row(
    staff_client: Callable[..., StaffClient], extra_list: MailingList, owner: StaffUser
) -> None:
    row = fail_one(extra_list, owner)
    editor = staff_client(Role.EDITOR)
    page = editor.post(f"/admin/intake/{row.id}/discard", follow_redirects=True)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f"Signup #{row.id} is discarded." in html
    assert "No signup has failed." in html
    assert rows() == []
    (entry,) = audits("intake.discard")
    assert entry.object_id == str(row.id)
    assert entry.details["channel"] == "api"
    assert POISON not in str(entry.details)


def test_a_waiting_row_can_be_neither_retried_nor_discarded(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    sign_up("waiting@example.org")
    (row,) = rows()
    editor = staff_client(Role.EDITOR)
    for action in ("retry", "discard"):
        assert editor.post(f"/admin/intake/{row.id}/{action}").status_code == 302
    (still,) = rows()
    assert (still.id, still.failed_at) == (row.id, None)
    assert audits("intake.retry") == audits("intake.discard") == []


def test_posts_without_csrf_token_are_refused(
    staff_client: Callable[..., StaffClient], extra_list: MailingList, owner: StaffUser
) -> None:
    row = fail_one(extra_list, owner)
    editor = staff_client(Role.EDITOR)
    for action in ("retry", "discard"):
        path = f"/admin/intake/{row.id}/{action}"
        assert editor.client.post(path, data={}).status_code == 400, path
        assert editor.client.post(path, data={"csrf_token": "forged"}).status_code == 400, path
    (still,) = rows()
    assert still.failed_at is not None
    assert audits("intake.retry") == audits("intake.discard") == []


def test_a_viewer_and_a_stranger_are_refused(
    app: Flask,
    staff_client: Callable[..., StaffClient],
    extra_list: MailingList,
    owner: StaffUser,
) -> None:
    row = fail_one(extra_list, owner)
    viewer = staff_client(Role.VIEWER)
    for action in ("retry", "discard"):
        assert viewer.post(f"/admin/intake/{row.id}/{action}").status_code == 403
    anonymous = app.test_client()
    assert anonymous.get("/admin/intake").status_code == 302
    assert "/admin/login" in anonymous.get("/admin/intake").location
    (still,) = rows()
    assert still.failed_at is not None
    assert audits("intake.retry") == audits("intake.discard") == []


def run_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: dict[str, object]
) -> Result:
    """`newsletter check` with exactly these NEWSLETTER_* settings."""
    import os

    for name in list(os.environ):
        if name.startswith("NEWSLETTER_") and name != "NEWSLETTER_TEST_BACKEND":
            monkeypatch.delenv(name)
    for name, value in settings.items():
        monkeypatch.setenv(f"NEWSLETTER_{name}", str(value))
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(cli, ["check"])


def test_check_warns_on_an_old_waiting_row_and_on_failed_rows(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    smtp_server: SMTPServer,
    extra_list: MailingList,
    owner: StaffUser,
    ledger_files: dict[str, object],  # noqa: F811 - the fixture imported above
) -> None:
    settings = production(
        database_url, smtp_server, RATELIMIT_STORAGE_URI="memory://", **ledger_files
    )
    result = run_check(monkeypatch, tmp_path, settings)
    assert "ok      signup intake: 0 signup(s) waiting, none failed" in result.output

    sign_up("fresh@example.org", "nyhedsbrev")
    result = run_check(monkeypatch, tmp_path, settings)
    assert "ok      signup intake: 1 signup(s) waiting, none failed" in result.output

    age_by(5 * 60)
    result = run_check(monkeypatch, tmp_path, settings)
    assert (
        "WARNING signup intake: 1 signup(s) waiting, the oldest for 5 min: is a worker running?"
        in result.output
    )

    drain_intake()  # as a worker does, sealing the events it appends
    fail_one(extra_list, owner)
    seal_waiting()
    result = run_check(monkeypatch, tmp_path, settings)
    assert "is a worker running?" not in result.output
    assert (
        "WARNING signup intake: 1 signup(s) failed and wait for staff: "
        "see https://news.example.org/admin/intake" in result.output
    )
    # Warnings, not errors: a sound set-up with failed rows still passes.
    assert "0 error(s)" in result.output
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("lang", ["da", "en"])
def test_the_intake_pages_are_valid_html(
    staff_client: Callable[..., StaffClient],
    extra_list: MailingList,
    owner: StaffUser,
    tmp_path: Path,
    lang: str,
) -> None:
    editor = staff_client(Role.EDITOR)
    files = []
    empty = editor.get(f"/admin/intake?lang={lang}")
    (tmp_path / f"intake-empty.{lang}.html").write_bytes(empty.get_data())
    files.append(tmp_path / f"intake-empty.{lang}.html")
    fail_one(extra_list, owner)
    sign_up("waiting@example.org")
    age_by(600)
    for name, path in (("intake", "/admin/intake"), ("dashboard", "/admin/")):
        response = editor.get(f"{path}?lang={lang}")
        assert response.status_code == 200
        file = tmp_path / f"{name}.{lang}.html"
        file.write_bytes(response.get_data())
        files.append(file)
    errors = vnu_errors(files)
    assert errors == {}, report(errors)
