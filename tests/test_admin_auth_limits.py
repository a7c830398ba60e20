"""Login limits: one key per account, a bounded number of codes per pending login,
and no typed address in the logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from newsletter.extensions import db
from newsletter.models import Role, StaffUser
from newsletter.staff import login_guard, service

from .fixtures.properties import PROPERTIES
from .fixtures.staff import STAFF_PASSWORD, StaffClient, csrf_from, log_in

FUZZ = settings(PROPERTIES, max_examples=120)
COOKIE = "newsletter_staff"


def client_at(app: Flask, address: str) -> FlaskClient:
    """A test client whose requests come from ``address``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def try_password(client: FlaskClient, email: str, password: str) -> TestResponse:
    """Post the login form with this address (as typed) and password."""
    page = client.get("/admin/login")
    return client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": csrf_from(page)},
    )


def wrong_code(secret: str) -> str:
    """A six-digit code that no step of the verification window accepts now."""
    totp = pyotp.TOTP(secret)
    valid = {totp.at(time.time() + drift) for drift in (-60, -30, 0, 30, 60)}
    return next(code for code in ("000000", "111111", "222222") if code not in valid)


def post_code(client: FlaskClient, code: str, token: str | None = None) -> TestResponse:
    """Post the code step's form, with the CSRF token of the code page unless given."""
    token = token or csrf_from(client.get("/admin/login/code"))
    return client.post("/admin/login/code", data={"code": code, "csrf_token": token})


# --- One rate-limit key per account ---------------------------------------------------


def test_a_casefold_variant_does_not_bypass_a_locked_address(app_factory, make_staff) -> None:
    limited = app_factory(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="3 per minute")
    with limited.app_context():
        make_staff(Role.OWNER, email="boss@example.org")
        first = client_at(limited, "198.51.100.1")
        statuses = [try_password(first, "boss@example.org", "guess!").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        for n, variant in enumerate(
            ["bo\u017fs@example.org", "BOSS@Example.org", "boß@example.org", " boss@EXAMPLE.ORG "]
        ):
            elsewhere = client_at(limited, f"203.0.113.{n + 1}")
            assert try_password(elsewhere, variant, STAFF_PASSWORD).status_code == 429, variant


LOCAL = st.text(alphabet="abcdeksz0123456789", min_size=1, max_size=20)
LABEL = st.text(alphabet="abcüøks", min_size=1, max_size=12)


@st.composite
def same_account(draw: st.DrawFn) -> tuple[str, str]:
    """An address and a variant of it that logs in to the same account: another case,
    the long s (U+017F) for s, ß for ss, the Kelvin sign for k, the domain as Unicode
    or as IDNA."""
    local, label = draw(LOCAL), draw(LABEL)
    canonical = f"{local}@{label}.example"
    variant = ""
    index = 0
    while index < len(local):
        char = local[index]
        if local.startswith("ss", index) and draw(st.booleans()):
            variant += draw(st.sampled_from(["ß", "ẞ", "SS", "\u017fs"]))
            index += 2
            continue
        choices = {"s": ["s", "S", "\u017f"], "k": ["k", "K", "\u212a"]}.get(char, [char])
        variant += draw(st.sampled_from([*choices, char.upper()]))
        index += 1
    domain = f"{label}.example"
    if draw(st.booleans()):
        domain = domain.upper()
    elif draw(st.booleans()):
        domain = domain.encode("idna").decode("ascii")
    return canonical, f"{variant}@{domain}"


@FUZZ
@given(pair=same_account())
def test_every_form_of_an_address_has_one_limit_key(app: Flask, pair: tuple[str, str]) -> None:
    canonical, variant = pair
    assert service.login_address(canonical) == canonical.casefold()
    assert service.login_address(variant) == service.login_address(canonical), pair
    assert login_guard.address_key(variant) == login_guard.address_key(canonical)
    assert canonical not in login_guard.address_key(canonical)


def test_different_accounts_have_different_keys(app: Flask) -> None:
    assert login_guard.address_key("boss@example.org") != login_guard.address_key("bos@example.org")
    assert login_guard.address_key("not an address") != login_guard.address_key("other junk")


# --- The code step: five wrong codes end the pending login ----------------------------


def start_pending(app: Flask, user: StaffUser) -> FlaskClient:
    """A client that has passed the password step of ``user`` (who has 2FA)."""
    client = app.test_client()
    response = try_password(client, user.email, STAFF_PASSWORD)
    assert response.location == "/admin/login/code"
    return client


def test_five_wrong_codes_end_the_pending_login(app: Flask, make_staff) -> None:
    user = make_staff(totp=True)
    client = start_pending(app, user)
    bad = wrong_code(user.totp_secret)
    for _ in range(4):
        response = post_code(client, bad)
        assert response.status_code == 200
        assert "wrong or was used already" in response.get_data(as_text=True)
    fifth = post_code(client, bad)
    assert fifth.status_code == 302
    assert fifth.location == "/admin/login"
    login_page = client.get("/admin/login").get_data(as_text=True)
    assert "Too many wrong codes. Log in again with your password." in login_page
    assert client.get("/admin/login/code").location == "/admin/login"
    assert client.get("/admin/").status_code == 302  # not logged in


@pytest.mark.parametrize("storage", ["memory://", "redis://127.0.0.1:6379/0"])
def test_replaying_the_pending_cookie_gives_no_more_tries(
    app_factory: Callable[..., Flask], make_staff, storage: str
) -> None:
    served = app_factory(RATELIMIT_STORAGE_URI=storage)
    with served.app_context():
        user = make_staff(totp=True)
        client = start_pending(served, user)
        token = csrf_from(client.get("/admin/login/code"))
        saved = client.get_cookie(COOKIE).value  # the pending login, before any try
        bad = wrong_code(user.totp_secret)
        responses = [post_code(client, bad, token) for _ in range(5)]
        assert [r.status_code for r in responses] == [200, 200, 200, 200, 302]
        client.set_cookie(COOKIE, saved)  # the attacker's copy, replayed
        assert post_code(client, bad, token).location == "/admin/login"
        client.set_cookie(COOKIE, saved)
        assert client.get("/admin/login/code").location == "/admin/login"
        client.set_cookie(COOKIE, saved)
        right = post_code(client, pyotp.TOTP(user.totp_secret).now(), token)
        assert right.location == "/admin/login"
        assert client.get("/admin/").status_code == 302


def test_a_new_password_login_gets_new_tries(app: Flask, make_staff) -> None:
    user = make_staff(totp=True)
    client = start_pending(app, user)
    for _ in range(5):
        post_code(client, wrong_code(user.totp_secret))
    client = start_pending(app, user)
    response = post_code(client, pyotp.TOTP(user.totp_secret).now())
    assert response.location == "/admin/"


# --- The password-change form: the current password is guessed no faster ------------


def change_password(client: StaffClient, current: str) -> TestResponse:
    """Post the password-change form with ``current`` and a valid new password."""
    new = "an entirely new passphrase"
    data = {"current_password": current, "new_password": new, "repeat": new}
    return client.post("/admin/account/password", data)


def test_the_sixth_wrong_current_password_in_a_row_is_refused(
    app_factory: Callable[..., Flask], make_staff
) -> None:
    limited = app_factory(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="5 per minute")
    with limited.app_context():
        user, colleague = make_staff(), make_staff()
        here = StaffClient(client_at(limited, "198.51.100.7"), user)
        assert log_in(here.client, user).status_code == 302
        for _ in range(5):
            wrong = change_password(here, "a wrong guess")
            assert "The current password is wrong." in wrong.get_data(as_text=True)

        refused = change_password(here, STAFF_PASSWORD)  # even the right one
        assert refused.status_code == 429
        assert "Too many login attempts" in refused.get_data(as_text=True)

        # Per account: the same account from another address ...
        elsewhere = StaffClient(client_at(limited, "203.0.113.7"), user)
        assert log_in(elsewhere.client, user).status_code == 302
        assert change_password(elsewhere, STAFF_PASSWORD).status_code == 429
        # ... and per address: another account from the same one.
        beside = StaffClient(client_at(limited, "198.51.100.7"), colleague)
        assert log_in(beside.client, colleague).status_code == 302
        assert change_password(beside, STAFF_PASSWORD).status_code == 429
        assert service.authenticate(user.email, STAFF_PASSWORD) is not None  # unchanged


def test_turning_two_factor_off_is_limited_per_account_too(
    app_factory: Callable[..., Flask], make_staff
) -> None:
    limited = app_factory(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="5 per minute")
    with limited.app_context():
        user = make_staff(totp=True)
        sessions = []
        for address in ("198.51.100.8", "203.0.113.8"):
            user.totp_last_step = None  # as if the next code had come
            db.session.commit()
            session = StaffClient(client_at(limited, address), user)
            assert log_in(session.client, user).status_code == 302
            sessions.append(session)
        here, elsewhere = sessions
        for _ in range(5):
            wrong = here.post("/admin/account/two-factor/disable", {"password": "a wrong guess"})
            assert "The current password is wrong." in wrong.get_data(as_text=True)
        done = elsewhere.post("/admin/account/two-factor/disable", {"password": STAFF_PASSWORD})
        assert done.status_code == 429
        db.session.refresh(user)
        assert user.totp_secret is not None


# --- Logs name no typed address --------------------------------------------------------


def test_rate_limited_logins_log_no_typed_address(
    app_factory: Callable[..., Flask], make_staff, caplog: pytest.LogCaptureFixture
) -> None:
    limited = app_factory(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="2 per minute")
    typed = ["Boss@Example.org", "bo\u017fs@example.org", "ghost.person@example.net"]
    with limited.app_context(), caplog.at_level(logging.DEBUG):
        make_staff(Role.OWNER, email="boss@example.org")
        for n, email in enumerate(typed * 3):  # a new client address each time
            try_password(client_at(limited, f"192.0.2.{n}"), email, "guess!")
    assert any("exceeded" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        message = record.getMessage().casefold()
        for email in [*typed, "boss@example.org"]:
            assert email.casefold() not in message, record.getMessage()
            assert email.split("@")[0].casefold() not in message, record.getMessage()
