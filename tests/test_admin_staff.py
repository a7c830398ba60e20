"""Owners manage staff accounts and settings; `newsletter staff create`; the audit log."""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import AuditEntry, Role, StaffUser
from newsletter.staff import service

from .fixtures.staff import StaffClient


def entries(action: str) -> list[AuditEntry]:
    """Audit entries with this action, oldest first."""
    query = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
    return list(db.session.scalars(query))


def test_owner_creates_an_account_with_a_generated_password(
    staff_client: Callable[..., StaffClient], app
) -> None:
    owner = staff_client(Role.OWNER)
    response = owner.post(
        "/admin/staff/new", {"email": "New.Person@Example.org", "name": "Ny", "role": "viewer"}
    )
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    password = re.search(r'<code class="secret">([^<]+)</code>', page).group(1)
    assert "shown only this once" in page
    user = db.session.scalar(select(StaffUser).where(StaffUser.email == "new.person@example.org"))
    assert user.role == Role.VIEWER
    assert service.authenticate("new.person@example.org", password) is not None
    assert password not in str(entries("staff.create")[0].details)  # never in the audit
    assert entries("staff.create")[0].actor_email == owner.user.email


def test_duplicate_and_bad_addresses_are_named(staff_client: Callable[..., StaffClient]) -> None:
    owner = staff_client(Role.OWNER)
    taken = owner.post("/admin/staff/new", {"email": owner.user.email, "role": "editor"})
    assert "already exists" in taken.get_data(as_text=True)
    bad = owner.post("/admin/staff/new", {"email": "not-an-address", "role": "editor"})
    assert bad.status_code == 200
    assert 'aria-invalid="true"' in bad.get_data(as_text=True)
    short = owner.post(
        "/admin/staff/new", {"email": "x@example.org", "role": "editor", "password": "short"}
    )
    assert "must be 12 to 256 characters" in short.get_data(as_text=True)
    assert db.session.scalar(select(StaffUser).where(StaffUser.email == "x@example.org")) is None


def test_role_change_is_audited_with_before_and_after(
    staff_client: Callable[..., StaffClient], make_staff
) -> None:
    owner = staff_client(Role.OWNER)
    editor = make_staff(Role.EDITOR)
    response = owner.post(
        f"/admin/staff/{editor.id}", {"name": "Renamed", "role": "viewer", "is_active": "y"}
    )
    assert response.status_code == 302
    [entry] = entries("staff.update")
    assert entry.object_id == str(editor.id)
    assert entry.details["role"] == {"before": "editor", "after": "viewer"}
    assert entry.details["name"]["after"] == "Renamed"


def test_deactivation_ends_the_sessions_of_that_account(
    staff_client: Callable[..., StaffClient],
) -> None:
    owner = staff_client(Role.OWNER)
    editor = staff_client(Role.EDITOR)
    assert editor.get("/admin/").status_code == 200
    owner.post(f"/admin/staff/{editor.user.id}", {"name": "", "role": "editor"})
    assert editor.get("/admin/").status_code == 302


def test_the_last_owner_cannot_be_demoted(staff_client: Callable[..., StaffClient]) -> None:
    owner = staff_client(Role.OWNER)
    response = owner.post(
        f"/admin/staff/{owner.user.id}", {"name": "", "role": "editor", "is_active": "y"}
    )
    assert "at least one active owner" in response.get_data(as_text=True)
    db.session.refresh(owner.user)
    assert owner.user.role == Role.OWNER


def test_owner_resets_a_lost_second_factor(
    staff_client: Callable[..., StaffClient], make_staff
) -> None:
    owner = staff_client(Role.OWNER)
    phone_lost = make_staff(Role.EDITOR, totp=True)
    owner.post(f"/admin/staff/{phone_lost.id}/reset-two-factor")
    db.session.refresh(phone_lost)
    assert phone_lost.totp_secret is None
    assert entries("staff.2fa_disable")[0].object_id == str(phone_lost.id)


def test_editors_and_viewers_cannot_manage_staff(
    staff_client: Callable[..., StaffClient],
) -> None:
    for role in (Role.EDITOR, Role.VIEWER):
        member = staff_client(role)
        assert member.get("/admin/staff").status_code == 403
        assert member.get("/admin/audit").status_code == 403
        assert member.post("/admin/settings", {"require_two_factor": "y"}).status_code == 403
    assert service.two_factor_required() is False


def test_audit_log_filters(staff_client: Callable[..., StaffClient], make_staff) -> None:
    owner = staff_client(Role.OWNER)
    target = make_staff(Role.EDITOR)
    owner.post(f"/admin/staff/{target.id}", {"name": "A", "role": "viewer", "is_active": "y"})
    everything = owner.get("/admin/audit").get_data(as_text=True)
    assert "staff.login" in everything
    assert "staff.update" in everything
    only_updates = owner.get("/admin/audit?action=staff.update").get_data(as_text=True)
    assert "staff.update" in only_updates
    assert "staff.login<" not in only_updates
    by_object = owner.get(f"/admin/audit?object_type=staff&object_id={target.id}")
    assert "staff.update" in by_object.get_data(as_text=True)
    nobody = owner.get("/admin/audit?actor=nobody-at-all").get_data(as_text=True)
    assert "No entries match." in nobody
    future = owner.get("/admin/audit?since=2999-01-01").get_data(as_text=True)
    assert "No entries match." in future
    assert owner.get("/admin/audit?since=garbage").status_code == 400


def test_cli_creates_an_owner_and_prints_the_password_once(runner) -> None:
    result = runner.invoke(args=["staff", "create", "Boss@Example.org", "--role", "owner"])
    assert result.exit_code == 0, result.output
    password = re.search(r"password \(shown once, store it now\): (\S+)", result.output).group(1)
    user = service.authenticate("boss@example.org", password)
    assert user is not None
    assert user.role == Role.OWNER
    assert entries("staff.create")[0].actor_email == "(command line)"
    listed = runner.invoke(args=["staff", "list"])
    assert "owner\tactive\tno-2fa\tboss@example.org" in listed.output
    again = runner.invoke(args=["staff", "create", "boss@example.org"])
    assert again.exit_code == 2
    assert "already exists" in again.output


def test_cli_reset_two_factor(runner, make_staff) -> None:
    user = make_staff(Role.EDITOR, totp=True)
    result = runner.invoke(args=["staff", "reset-2fa", user.email])
    assert result.exit_code == 0
    db.session.refresh(user)
    assert user.totp_secret is None
    assert runner.invoke(args=["staff", "reset-2fa", "ghost@example.org"]).exit_code == 2
