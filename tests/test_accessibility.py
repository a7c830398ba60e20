"""axe-core in headless Chromium: every public and staff page, in Danish and English.

axe-core comes from npm (tests/js, pinned by package-lock.json; `make test`
runs `npm ci`). It is injected as a local file, so nothing is fetched from
another origin. Pages are checked against WCAG 2.0, 2.1 and 2.2 A and AA
(axe's tags wcag2a, wcag2aa, wcag21a, wcag21aa, wcag22aa) and must have no
violation at all. The public pages include the signup form's error state and
the pages reached by pressing each button (confirmed, unsubscribed, saved ...).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from newsletter.extensions import db
from newsletter.models import Role

from .fixtures.pages import PageState, Seeded, public_pages, seed_site
from .fixtures.staff import STAFF_PASSWORD

pytestmark = pytest.mark.browser

TOOLS = Path(__file__).parent / "js" / "node_modules"
AXE = TOOLS / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
LANGUAGES = ["da", "en"]
# Chromium sends Accept-Language from the context's locale; staff pages have no
# switch of their own, so this is how a Danish or an English member of staff sees them.
BROWSER_LOCALE = {"da": "da-DK", "en": "en-GB"}


def need_tool(path: Path) -> None:
    """Skip without the npm tools locally; fail in CI, where `make test` installs them."""
    if path.exists():
        return
    message = f"{path} is missing: run `make test-tools` (npm ci in tests/js)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def with_lang(path: str, lang: str) -> str:
    """The path with ``lang=`` added to its query, as the language switch does."""
    return f"{path}{'&' if '?' in path else '?'}lang={lang}"


@pytest.fixture
def axe_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page whose context may inject axe: the CSP forbids inline scripts, and
    injecting axe is the only script this context adds (``bypass_csp``)."""
    need_tool(AXE)
    lang = getattr(request, "param", "en")
    context = browser.new_context(bypass_csp=True, locale=BROWSER_LOCALE[lang])
    page = context.new_page()
    yield page
    context.close()


def axe_violations(page: Any) -> list[str]:
    """Run axe on the loaded page; one line per violation with the elements it found."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", TAGS
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} -> "
        + "; ".join(" ".join(map(str, n["target"])) for n in v["nodes"][:5])
        for v in result["violations"]
    ]


def reach(page: Any, base: str, state: PageState, lang: str) -> None:
    """Open the page state in the browser: load it, then fill in and submit when asked."""
    page.goto(base + with_lang(state.start, lang))
    if state.form is None:
        return
    for field_id, value in state.fill.items():
        page.locator(f"#{field_id}").fill(value)
    with page.expect_navigation():
        page.locator(state.button).first.click()


def serve_seeded(app: Flask, live_server_factory: Any) -> tuple[str, Seeded]:
    """Seed every page's data and serve the app; returns (base URL, seeded)."""
    seeded = seed_site()
    db.session.close()  # SQLite has one writer: the server's requests need it
    return live_server_factory(app).url, seeded


@pytest.mark.parametrize("axe_page", LANGUAGES, indirect=True, ids=LANGUAGES)
def test_every_public_page_has_no_axe_violation(
    app: Flask, live_server_factory: Any, axe_page: Any, request: pytest.FixtureRequest
) -> None:
    lang = request.node.callspec.params["axe_page"]
    base, seeded = serve_seeded(app, live_server_factory)
    found: dict[str, list[str]] = {}
    for state in public_pages(seeded):
        reach(axe_page, base, state, lang)
        violations = axe_violations(axe_page)
        if violations:
            found[f"{state.name} ({lang})"] = violations
    assert found == {}, "\n".join(f"{k}:\n  " + "\n  ".join(v) for k, v in found.items())


def staff_paths(seeded: Seeded, staff_id: int) -> list[str]:
    """Every console page a logged-in owner can open, with seeded ids."""
    subscriber = seeded.subscriber_ids["active"]
    list_id = seeded.list_ids[0]
    campaign = seeded.campaign_id
    return [
        "/admin/",
        "/admin/intake",
        "/admin/subscribers",
        "/admin/subscribers?q=example",
        f"/admin/subscribers/{subscriber}",
        f"/admin/subscribers/{subscriber}/proof",
        f"/admin/subscribers/{subscriber}/erase",
        "/admin/lists",
        "/admin/lists/new",
        f"/admin/lists/{list_id}",
        f"/admin/lists/{list_id}/edit",
        "/admin/campaigns",
        "/admin/campaigns/new",
        f"/admin/campaigns/{campaign}",
        f"/admin/campaigns/{campaign}/preview",
        "/admin/deliverability",
        "/admin/imports",
        "/admin/staff",
        "/admin/staff/new",
        f"/admin/staff/{staff_id}",
        "/admin/audit",
        "/admin/account/password",
        "/admin/account/two-factor",
    ]


@pytest.mark.parametrize("axe_page", LANGUAGES, indirect=True, ids=LANGUAGES)
def test_every_staff_page_has_no_axe_violation(
    app: Flask,
    live_server_factory: Any,
    make_staff: Any,
    axe_page: Any,
    request: pytest.FixtureRequest,
) -> None:
    lang = request.node.callspec.params["axe_page"]
    owner = make_staff(Role.OWNER)
    email, owner_id = owner.email, owner.id
    base, seeded = serve_seeded(app, live_server_factory)
    found: dict[str, list[str]] = {}

    def check(name: str) -> None:
        violations = axe_violations(axe_page)
        if violations:
            found[f"{name} ({lang})"] = violations

    axe_page.goto(f"{base}/admin/login")
    check("login")
    axe_page.locator("#email").fill(email)
    axe_page.locator("#password").fill("wrong password")
    axe_page.locator("main form button[type=submit]").click()
    axe_page.wait_for_load_state()
    check("login with an error")
    axe_page.locator("#email").fill(email)
    axe_page.locator("#password").fill(STAFF_PASSWORD)
    with axe_page.expect_navigation():
        axe_page.locator("main form button[type=submit]").click()
    for path in staff_paths(seeded, owner_id):
        response = axe_page.goto(base + path)
        assert response is not None
        assert response.status == 200, f"{path}: {response.status}"
        check(path)
    # A form sent with errors: an empty new list.
    axe_page.goto(f"{base}/admin/lists/new")
    with axe_page.expect_navigation():
        axe_page.locator("main form button[type=submit]").first.click()
    check("/admin/lists/new with errors")
    assert found == {}, "\n".join(f"{k}:\n  " + "\n  ".join(v) for k, v in found.items())


@pytest.mark.parametrize("axe_page", LANGUAGES, indirect=True, ids=LANGUAGES)
def test_the_two_factor_code_page_has_no_axe_violation(
    app: Flask,
    live_server_factory: Any,
    make_staff: Any,
    axe_page: Any,
    request: pytest.FixtureRequest,
) -> None:
    lang = request.node.callspec.params["axe_page"]
    user = make_staff(Role.VIEWER, totp=True)
    email = user.email
    db.session.close()
    base = live_server_factory(app).url
    axe_page.goto(f"{base}/admin/login")
    axe_page.locator("#email").fill(email)
    axe_page.locator("#password").fill(STAFF_PASSWORD)
    with axe_page.expect_navigation():
        axe_page.locator("main form button[type=submit]").click()
    assert "/admin/login/code" in axe_page.url
    assert axe_violations(axe_page) == [], lang
