"""The static site's signup form (docs/embedding.md), end to end in Chromium.

A second server on another port plays the Eleventy site: another origin, as in
production. Its page is the include from docs/embedding.md, rendered with Jinja
(the include uses only the Nunjucks syntax Jinja shares), so the documented form
is the tested form. The visitor signs up with JavaScript (embed.js and the JSON
API, CORS) and without it (a plain cross-origin POST and a redirect to the site's
thank-you page), then confirms through the link in the mail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2
import pytest
from flask import Flask
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import MailingList, Subscriber, Subscription, SubscriptionStatus

from .fixtures.mailflow import link_path

pytestmark = pytest.mark.browser

DOC = Path(__file__).parents[1] / "docs" / "embedding.md"
INCLUDE = re.compile(r"```njk\n(\{#- The newsletter signup form.*?)```", re.DOTALL)


def include_from_docs() -> str:
    """The copy-paste include, exactly as docs/embedding.md gives it."""
    match = INCLUDE.search(DOC.read_text(encoding="utf-8"))
    assert match, "docs/embedding.md has no ```njk block with the signup form"
    return match.group(1)


def static_site(service: str, lang: str) -> Callable[..., Iterable[bytes]]:
    """A tiny WSGI app serving the static site: a page with the form, a thank-you page."""
    pages: dict[str, str] = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = pages.get(environ["PATH_INFO"])
        if body is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body.encode()]

    def render(site: str) -> None:
        newsletter = {
            "service": service,
            "thanks": f"{site}/nyhedsbrev/tak/",
            "lang": lang,
            "list": "nyhedsbrev",
        }
        form = jinja2.Template(include_from_docs()).render(newsletter=newsletter)
        pages["/"] = page(lang, "Inklusio", f"<h1>Inklusio</h1>\n{form}")
        pages["/nyhedsbrev/tak/"] = page(lang, "Tak", '<h1 id="thanks">Tak for din tilmelding</h1>')

    app.render = render  # type: ignore[attr-defined]
    return app


def page(lang: str, title: str, body: str) -> str:
    """A minimal page of the static site."""
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f"<title>{title}</title></head><body><main>{body}</main></body></html>"
    )


@pytest.fixture
def sites(app: Flask, live_server_factory: Any, default_list: MailingList) -> tuple[str, str]:
    """(service URL, static site URL): two origins; the site's is allowed."""
    db.session.close()  # SQLite has one writer: the servers' requests need it
    service = live_server_factory(app).url
    site_app = static_site(service, "da")
    site = live_server_factory(site_app).url
    site_app.render(site)  # type: ignore[attr-defined]
    app.config["ALLOWED_ORIGINS"] = [site]
    return service, site


def confirm_in_browser(tab: Any, service: str, mail: EmailMessage) -> None:
    """Open the confirmation link from the mail and press the button (by keyboard)."""
    tab.goto(service + link_path(mail, "confirm"))
    button = tab.locator("main form button[type=submit]")
    button.focus()
    with tab.expect_navigation():
        tab.keyboard.press("Enter")


def status_of(email: str) -> tuple[str, str, list[str]]:
    """(name, locale, statuses) of the subscriber with this address."""
    db.session.commit()
    subscriber = db.session.scalars(select(Subscriber).where(Subscriber.email == email)).one()
    statuses = db.session.scalars(
        select(Subscription.status).where(Subscription.subscriber_id == subscriber.id)
    ).all()
    result = (subscriber.name or "", subscriber.locale, [str(s) for s in statuses])
    db.session.commit()
    return result


def test_signup_with_javascript_posts_to_the_api_and_answers_in_place(
    browser: Any, sites: tuple[str, str], deliver: Callable[[], list[EmailMessage]]
) -> None:
    service, site = sites
    context = browser.new_context()
    tab = context.new_page()
    api_calls: list[str] = []
    tab.on("request", lambda r: api_calls.append(f"{r.method} {r.url}"))
    tab.goto(f"{site}/")
    tab.get_by_label("E-mailadresse").fill("js@example.org")
    tab.get_by_label("Navn (valgfrit)").fill("Jette Skript")
    tab.get_by_role("button", name="Tilmeld").click()
    status = tab.locator(".newsletter-signup [role=status]")
    status.get_by_text("Tjek din indbakke").wait_for()
    assert tab.url == f"{site}/"  # answered in place: no navigation
    assert f"POST {service}/api/v1/subscriptions" in api_calls
    assert tab.get_by_label("E-mailadresse").input_value() == ""  # form reset
    (mail,) = deliver()
    assert mail["To"].addresses[0].addr_spec == "js@example.org"
    assert status_of("js@example.org") == ("Jette Skript", "da", ["pending"])
    confirm_in_browser(tab, service, mail)
    assert status_of("js@example.org")[2] == [str(SubscriptionStatus.ACTIVE)]
    context.close()


def test_a_refused_address_is_named_beside_the_field_and_focused(
    browser: Any, sites: tuple[str, str]
) -> None:
    _service, site = sites
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(f"{site}/")
    # Valid for the browser's own check, refused by the service (no dot-less domain).
    tab.get_by_label("E-mailadresse").fill("someone@localhost")
    tab.get_by_role("button", name="Tilmeld").click()
    error = tab.locator("#newsletter-email-error")
    error.wait_for()
    field = tab.locator("#newsletter-email")
    assert field.get_attribute("aria-invalid") == "true"
    assert "newsletter-email-error" in (field.get_attribute("aria-describedby") or "")
    assert tab.evaluate("document.activeElement.id") == "newsletter-email"
    assert "gyldig e-mailadresse" in error.inner_text()
    context.close()


def test_signup_without_javascript_lands_on_the_sites_thank_you_page(
    browser: Any, sites: tuple[str, str], deliver: Callable[[], list[EmailMessage]]
) -> None:
    service, site = sites
    context = browser.new_context(java_script_enabled=False)
    tab = context.new_page()
    tab.goto(f"{site}/")
    tab.get_by_label("E-mailadresse").fill("nojs@example.org")
    with tab.expect_navigation():
        tab.get_by_role("button", name="Tilmeld").click()
    assert tab.url == f"{site}/nyhedsbrev/tak/"
    (mail,) = deliver()
    assert mail["To"].addresses[0].addr_spec == "nojs@example.org"
    assert status_of("nojs@example.org") == ("", "da", ["pending"])
    confirm_in_browser(tab, service, mail)
    assert status_of("nojs@example.org")[2] == [str(SubscriptionStatus.ACTIVE)]
    context.close()


def test_a_mistyped_address_without_javascript_is_corrected_on_the_service(
    browser: Any, sites: tuple[str, str], deliver: Callable[[], list[EmailMessage]]
) -> None:
    service, site = sites
    context = browser.new_context(java_script_enabled=False)
    tab = context.new_page()
    tab.goto(f"{site}/")
    tab.get_by_label("E-mailadresse").fill("typo@localhost")
    with tab.expect_navigation():
        tab.get_by_role("button", name="Tilmeld").click()
    assert tab.url.startswith(f"{service}/subscribe")
    assert tab.locator("html").get_attribute("lang") == "da"
    field = tab.locator("#email")
    assert field.get_attribute("aria-invalid") == "true"
    field.fill("typo@example.org")
    with tab.expect_navigation():
        tab.locator("main form button[type=submit]").click()
    assert tab.url == f"{site}/nyhedsbrev/tak/"
    (mail,) = deliver()
    assert mail["To"].addresses[0].addr_spec == "typo@example.org"
    context.close()


def test_the_api_refuses_other_origins_and_the_script_falls_back(
    browser: Any,
    app: Flask,
    sites: tuple[str, str],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    """A site that is not allowed gets no CORS answer; the script then posts the
    plain form, which the service refuses too (403): nobody is signed up."""
    service, site = sites
    app.config["ALLOWED_ORIGINS"] = []
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(f"{site}/")
    tab.get_by_label("E-mailadresse").fill("other@example.org")
    with tab.expect_navigation():
        tab.get_by_role("button", name="Tilmeld").click()
    assert tab.url.startswith(f"{service}/subscribe")
    assert deliver() == []
    context.close()
