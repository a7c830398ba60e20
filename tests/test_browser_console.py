"""The staff console in headless Chromium: log in with password and code, work, log out."""

from __future__ import annotations

from urllib.parse import urlsplit

import pyotp
import pytest
from playwright.sync_api import expect

from newsletter.extensions import db
from newsletter.models import Role

from .fixtures.staff import STAFF_PASSWORD

pytestmark = pytest.mark.browser


def same_origin(urls: list[str], base: str) -> list[str]:
    """The URLs that went anywhere but ``base``'s origin (data: URLs are local)."""
    origin = urlsplit(base).netloc
    return [u for u in urls if not u.startswith("data:") and urlsplit(u).netloc != origin]


def test_two_factor_login_in_a_real_browser(app, make_staff, live_server_factory, page) -> None:
    user = make_staff(Role.OWNER, totp=True)
    email, secret = user.email, user.totp_secret
    db.session.close()  # SQLite has one writer: the server's requests need it
    server = live_server_factory(app)
    page.goto(f"{server.url}/admin/")
    assert "/admin/login" in page.url
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/login/code")
    page.get_by_label("Six-digit code").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{server.url}/admin/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.get_by_role("link", name="Staff").click()
    expect(page.get_by_role("cell", name=email)).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/admin/login")
    assert same_origin(page.requests, server.url) == []
