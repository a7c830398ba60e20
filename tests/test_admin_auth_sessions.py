"""Ending sessions on the server: logout, a reset second factor, and turning
two-factor off only with the password."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from newsletter.extensions import db
from newsletter.models import Role

from .fixtures.staff import STAFF_PASSWORD, StaffClient, log_in

COOKIE = "newsletter_staff"


def copy_of(app: Flask, client: FlaskClient) -> FlaskClient:
    """Another client holding a copy of ``client``'s session cookie (a stolen cookie)."""
    thief = app.test_client()
    thief.set_cookie(COOKIE, client.get_cookie(COOKIE).value)
    return thief


def test_logout_ends_a_copied_session_cookie(
    app: Flask, staff_client: Callable[..., StaffClient]
) -> None:
    editor = staff_client()
    thief = copy_of(app, editor.client)
    assert thief.get("/admin/").status_code == 200
    assert editor.post("/admin/logout").status_code == 302
    response = thief.get("/admin/")
    assert response.status_code == 302
    assert response.location.startswith("/admin/login")
    assert thief.get(response.location).status_code == 200  # the login page


def test_logging_in_again_after_logout_works(
    app: Flask, staff_client: Callable[..., StaffClient]
) -> None:
    editor = staff_client()
    editor.post("/admin/logout")
    assert log_in(editor.client, editor.user).status_code == 302
    assert editor.get("/admin/").status_code == 200


def test_cli_reset_2fa_ends_the_sessions(
    app: Flask, staff_client: Callable[..., StaffClient], runner: FlaskCliRunner
) -> None:
    editor = staff_client(totp=True)
    thief = copy_of(app, editor.client)
    assert thief.get("/admin/").status_code == 200
    result = runner.invoke(args=["staff", "reset-2fa", editor.user.email.upper()])
    assert result.exit_code == 0, result.output
    assert thief.get("/admin/").status_code == 302
    assert editor.get("/admin/").status_code == 302


def test_owner_reset_of_two_factor_ends_the_sessions(
    staff_client: Callable[..., StaffClient],
) -> None:
    owner = staff_client(Role.OWNER)
    phone_lost = staff_client(Role.EDITOR, totp=True)
    owner.post(f"/admin/staff/{phone_lost.user.id}/reset-two-factor")
    assert phone_lost.get("/admin/").status_code == 302
    assert owner.get("/admin/").status_code == 200


def test_two_factor_off_needs_the_password(staff_client: Callable[..., StaffClient]) -> None:
    editor = staff_client(totp=True)
    page = editor.get("/admin/account/two-factor").get_data(as_text=True)
    assert 'name="password"' in page
    missing = editor.post("/admin/account/two-factor/disable")
    assert missing.status_code == 200
    text = missing.get_data(as_text=True)
    assert "Enter your password to turn two-factor login off." in text
    assert 'aria-invalid="true"' in text
    wrong = editor.post("/admin/account/two-factor/disable", {"password": "not my password"})
    assert wrong.status_code == 200
    assert "The current password is wrong." in wrong.get_data(as_text=True)
    db.session.refresh(editor.user)
    assert editor.user.totp_secret is not None
    done = editor.post("/admin/account/two-factor/disable", {"password": STAFF_PASSWORD})
    assert done.status_code == 302
    db.session.refresh(editor.user)
    assert editor.user.totp_secret is None
    assert editor.get("/admin/").status_code == 200  # this session goes on
