"""Staff login: passwords, two-factor codes, sessions, CSRF and rate limits."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pyotp
from flask import Flask
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import AuditEntry, Role, StaffUser
from newsletter.staff import service

from .fixtures.staff import STAFF_PASSWORD, StaffClient, csrf_from, log_in


def audit_actions() -> list[str]:
    """Every audit action so far, oldest first."""
    return list(db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def test_anonymous_is_sent_to_login_with_next(client) -> None:
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response.location.startswith("/admin/login?next=")


def test_login_with_password_opens_the_console(app: Flask, make_staff) -> None:
    user = make_staff(Role.VIEWER)
    client = app.test_client()
    response = log_in(client, user)
    assert response.status_code == 302
    assert response.location == "/admin/"
    page = client.get("/admin/")
    assert page.status_code == 200
    assert user.email in page.get_data(as_text=True)
    assert audit_actions() == ["staff.login"]
    assert db.session.get(StaffUser, user.id).last_login_at is not None


def test_wrong_password_says_so_and_is_audited(app: Flask, make_staff) -> None:
    user = make_staff()
    response = log_in(app.test_client(), user, password="not the password at all")
    assert response.status_code == 200
    assert "Wrong e-mail address or password." in response.get_data(as_text=True)
    assert audit_actions() == ["staff.login_failed"]


def test_unknown_address_gets_the_same_answer(app: Flask, make_staff) -> None:
    ghost = StaffUser(email="nobody@example.org", totp_secret=None)
    response = log_in(app.test_client(), ghost)
    assert "Wrong e-mail address or password." in response.get_data(as_text=True)


def test_inactive_account_cannot_log_in(app: Flask, make_staff) -> None:
    user = make_staff(is_active=False)
    assert log_in(app.test_client(), user).status_code == 200


def test_next_only_leads_inside_the_console(app: Flask, make_staff) -> None:
    user = make_staff()
    client = app.test_client()
    page = client.get("/admin/login?next=https://evil.example/")
    response = client.post(
        "/admin/login",
        data={
            "email": user.email,
            "password": STAFF_PASSWORD,
            "next": "https://evil.example/",
            "csrf_token": csrf_from(page),
        },
    )
    assert response.location == "/admin/"


def test_post_without_csrf_token_is_refused(staff_client: Callable[..., StaffClient]) -> None:
    owner = staff_client(Role.OWNER)
    response = owner.client.post("/admin/settings", data={"require_two_factor": "y"})
    assert response.status_code == 400
    assert service.two_factor_required() is False
    bad = owner.client.post(
        "/admin/settings", data={"require_two_factor": "y", "csrf_token": "forged"}
    )
    assert bad.status_code == 400


def test_login_form_without_csrf_token_is_refused(app: Flask, make_staff) -> None:
    user = make_staff()
    response = app.test_client().post(
        "/admin/login", data={"email": user.email, "password": STAFF_PASSWORD}
    )
    assert response.status_code == 400


def test_session_cookie_flags(app_factory, make_staff) -> None:
    secure_app = app_factory(BASE_URL="https://news.example")
    with secure_app.app_context():  # SQLite has one writer: use this app's connection
        user = make_staff()
        client = secure_app.test_client()
        page = client.get("/admin/login", base_url="https://news.example")
        response = client.post(
            "/admin/login",
            base_url="https://news.example",
            # Flask-WTF checks the Referer on https; the console's Referrer-Policy
            # (same-origin) lets browsers send it.
            headers={"Referer": "https://news.example/admin/login"},
            data={"email": user.email, "password": STAFF_PASSWORD, "csrf_token": csrf_from(page)},
        )
    assert response.status_code == 302
    cookie = response.headers["Set-Cookie"]
    assert "newsletter_staff=" in cookie
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Expires="):
        assert flag in cookie
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_idle_session_expires(staff_client: Callable[..., StaffClient], app: Flask) -> None:
    editor = staff_client()
    assert editor.get("/admin/").status_code == 200
    with editor.client.session_transaction() as session:
        session["seen"] = int(time.time()) - app.config["STAFF_IDLE_TIMEOUT"] - 5
    response = editor.get("/admin/")
    assert response.status_code == 302
    assert response.location.startswith("/admin/login")
    assert editor.get("/admin/").status_code == 302  # logged out for good


def test_login_expires_after_its_lifetime(staff_client: Callable[..., StaffClient]) -> None:
    editor = staff_client()
    with editor.client.session_transaction() as session:
        session["at"] = int(time.time()) - 13 * 3600
    assert editor.get("/admin/").status_code == 302


def test_logout_is_a_post(staff_client: Callable[..., StaffClient]) -> None:
    editor = staff_client()
    assert editor.get("/admin/logout").status_code == 405
    assert editor.post("/admin/logout").status_code == 302
    assert editor.get("/admin/").status_code == 302


def test_password_change_ends_other_sessions(
    app: Flask, staff_client: Callable[..., StaffClient]
) -> None:
    editor = staff_client()
    other = app.test_client()
    log_in(other, editor.user)
    assert other.get("/admin/").status_code == 200
    response = editor.post(
        "/admin/account/password",
        {
            "current_password": STAFF_PASSWORD,
            "new_password": "a much longer new password",
            "repeat": "a much longer new password",
        },
    )
    assert response.status_code == 302
    assert editor.get("/admin/").status_code == 200  # this session goes on
    assert other.get("/admin/").status_code == 302  # the other one ended
    assert service.authenticate(editor.user.email, "a much longer new password") is not None
    assert "staff.password_change" in audit_actions()


def test_password_change_refuses_wrong_current_and_short_new(
    staff_client: Callable[..., StaffClient],
) -> None:
    editor = staff_client()
    wrong = editor.post(
        "/admin/account/password",
        {"current_password": "nope", "new_password": "x" * 20, "repeat": "x" * 20},
    )
    assert "The current password is wrong." in wrong.get_data(as_text=True)
    short = editor.post(
        "/admin/account/password",
        {"current_password": STAFF_PASSWORD, "new_password": "short", "repeat": "short"},
    )
    assert short.status_code == 200
    assert 'aria-invalid="true"' in short.get_data(as_text=True)


def test_two_factor_enrolment_and_login(app: Flask, staff_client) -> None:
    editor: StaffClient = staff_client()
    page = editor.get("/admin/account/two-factor").get_data(as_text=True)
    assert "<svg" in page  # the QR code is drawn here, not fetched from elsewhere
    secret = re.search(r"<code>([A-Z2-7]{32})</code>", page).group(1)
    wrong = editor.post("/admin/account/two-factor", {"code": "000000"})
    assert "does not match" in wrong.get_data(as_text=True)
    enrolled = editor.post(
        "/admin/account/two-factor", {"code": pyotp.TOTP(secret).at(time.time() - 30)}
    )
    assert enrolled.status_code == 302
    user = db.session.get(StaffUser, editor.user.id)
    db.session.refresh(user)
    assert user.totp_secret == secret

    client = app.test_client()
    page = client.get("/admin/login")
    step_one = client.post(
        "/admin/login",
        data={"email": user.email, "password": STAFF_PASSWORD, "csrf_token": csrf_from(page)},
    )
    assert step_one.location == "/admin/login/code"
    assert client.get("/admin/").status_code == 302  # not in yet
    code_page = client.get("/admin/login/code")
    token = csrf_from(code_page)
    bad = client.post("/admin/login/code", data={"code": "123456", "csrf_token": token})
    assert "wrong or was used already" in bad.get_data(as_text=True)
    good = client.post(
        "/admin/login/code", data={"code": pyotp.TOTP(secret).now(), "csrf_token": token}
    )
    assert good.status_code == 302
    assert client.get("/admin/").status_code == 200
    assert "staff.2fa_enable" in audit_actions()


def test_a_code_is_never_accepted_twice(app: Flask, make_staff) -> None:
    user = make_staff(totp=True)
    code = pyotp.TOTP(user.totp_secret).now()  # the same code for both, whatever the clock does
    assert log_in(app.test_client(), user, code=code).status_code == 302
    replay = log_in(app.test_client(), user, code=code)
    assert replay.status_code == 200
    assert "wrong or was used already" in replay.get_data(as_text=True)


def test_owner_can_require_two_factor_for_everyone(
    staff_client: Callable[..., StaffClient],
) -> None:
    owner = staff_client(Role.OWNER, totp=True)
    editor = staff_client(Role.EDITOR)
    assert owner.post("/admin/settings", {"require_two_factor": "y"}).status_code == 302
    assert service.two_factor_required()
    forced = editor.get("/admin/")
    assert forced.status_code == 302
    assert forced.location == "/admin/account/two-factor"
    assert editor.get("/admin/account/two-factor").status_code == 200
    assert owner.get("/admin/").status_code == 200  # already has it
    assert "settings.update" in audit_actions()


def test_login_is_rate_limited_with_a_clear_message(app_factory, make_staff) -> None:
    limited = app_factory(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="3 per minute")
    with limited.app_context():
        user = make_staff()
        client = limited.test_client()
        statuses = [log_in(client, user, password="wrong password!").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        page = log_in(client, user)
        assert page.status_code == 429
        assert "Too many login attempts" in page.get_data(as_text=True)
        # Another address from the same client is limited too (per IP) ...
        other = make_staff()
        assert log_in(client, other).status_code == 429
