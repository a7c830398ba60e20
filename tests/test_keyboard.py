"""Accessibility beyond axe, in Chromium: keyboard only, visible focus, errors, targets, reflow.

A Danish visitor signs up, confirms and changes their preferences with the
keyboard alone (Tab, Shift+Tab, Space, Enter), and every element that gets
focus shows it and is not hidden. Every public page, in both languages, has
the language switch, ``lang`` matching the language, click targets of at least
24 x 24 CSS px, no horizontal scrolling at 320 px, and no CAPTCHA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from flask import Flask

from newsletter.extensions import db
from newsletter.models import MailingList

from .fixtures.mailflow import link_path
from .fixtures.pages import public_pages, seed_site
from .test_accessibility import with_lang

pytestmark = pytest.mark.browser

# What the focused element looks like: its outline (or box-shadow), and whether
# it is on screen and not covered by anything else.
FOCUS_STATE = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  const box = el.getBoundingClientRect();
  const x = Math.min(Math.max(box.left + box.width / 2, 0), innerWidth - 1);
  const y = Math.min(Math.max(box.top + box.height / 2, 0), innerHeight - 1);
  const top = document.elementFromPoint(x, y);
  return {
    tag: el.tagName.toLowerCase(), id: el.id, name: el.getAttribute('name'),
    text: (el.innerText || el.value || '').trim().slice(0, 40),
    outline: style.outlineStyle !== 'none' ? parseFloat(style.outlineWidth) : 0,
    shadow: style.boxShadow !== 'none',
    onScreen: box.width > 0 && box.height > 0 && box.bottom > 0 && box.right > 0
      && box.top < innerHeight && box.left < innerWidth,
    uncovered: !!top && (top === el || el.contains(top) || top.contains(el)
      || (el.labels && Array.from(el.labels).some(l => l.contains(top)))),
  };
}"""

# Targets that must be 24 x 24 CSS px at least (WCAG 2.2, 2.5.8). Links inside a
# sentence are exempt by the criterion; the ones people aim at on their own are not.
TARGETS = """() => Array.from(document.querySelectorAll(
    'button, input:not([type=hidden]), select, textarea, nav a, a.skip'))
  .filter(el => (el.offsetParent !== null || el.matches('a.skip'))
    && !el.closest('[aria-hidden=true]'))  // the honeypot: nobody is meant to use it
  .map(el => {
    const box = el.getBoundingClientRect();
    return {what: el.outerHTML.slice(0, 80), width: box.width, height: box.height};
  })
  .filter(t => t.width && (t.width < 24 || t.height < 24))"""


@pytest.fixture
def tab(browser: Any) -> Iterator[Any]:
    """A Danish visitor's tab (Accept-Language: da)."""
    context = browser.new_context(locale="da-DK")
    page = context.new_page()
    yield page
    context.close()


def tab_to(page: Any, wanted: Callable[[dict[str, Any]], bool], limit: int = 40) -> dict:
    """Press Tab until ``wanted`` says yes; check every stop shows focus, unhidden."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        state = page.evaluate(FOCUS_STATE)
        if state is None:
            continue
        assert state["outline"] >= 2 or state["shadow"], f"focus is not visible on {state}"
        assert state["onScreen"], f"the focused element is off screen: {state}"
        assert state["uncovered"], f"the focused element is covered: {state}"
        if wanted(state):
            return state
    raise AssertionError(f"Tab never reached the element on {page.url}")


def test_a_danish_visitor_signs_up_confirms_and_manages_by_keyboard_alone(
    app: Flask,
    live_server_factory: Any,
    tab: Any,
    default_list: MailingList,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    db.session.close()
    base = live_server_factory(app).url
    tab.goto(f"{base}/subscribe")
    assert tab.locator("html").get_attribute("lang") == "da"
    tab_to(tab, lambda s: s["id"] == "email")
    tab.keyboard.type("tastatur@example.org")
    tab_to(tab, lambda s: s["tag"] == "button")
    with tab.expect_navigation():
        tab.keyboard.press("Enter")
    assert tab.locator("[role=status]").count() == 1

    (mail,) = deliver()
    tab.goto(base + link_path(mail, "confirm"))
    assert tab.locator("html").get_attribute("lang") == "da"
    tab_to(tab, lambda s: s["tag"] == "button")
    with tab.expect_navigation():
        tab.keyboard.press("Enter")
    (welcome,) = deliver()  # the receipt: confirmed
    assert welcome["Subject"] == "Velkommen til Nyhedsbrev"
    manage_link = tab.locator("main a[href*='/manage/']")
    href = manage_link.get_attribute("href")
    tab_to(tab, lambda s: s["tag"] == "a" and s["text"] == manage_link.inner_text().strip())
    with tab.expect_navigation():
        tab.keyboard.press("Enter")
    assert href
    assert href in tab.url
    # Untick the list with Space, save with Enter.
    tab_to(tab, lambda s: s["tag"] == "input" and s["name"] == "lists")
    tab.keyboard.press("Space")
    tab_to(tab, lambda s: s["tag"] == "button")
    with tab.expect_navigation():
        tab.keyboard.press("Enter")
    assert tab.locator("input[name=lists]").first.is_checked() is False
    assert tab.locator("[role=status]").count() >= 1
    assert tab.locator("html").get_attribute("lang") == "da"


def test_form_errors_are_named_tied_to_their_field_and_announced(
    app: Flask, live_server_factory: Any, tab: Any, default_list: MailingList
) -> None:
    db.session.close()
    base = live_server_factory(app).url
    tab.goto(f"{base}/subscribe")
    email = tab.locator("#email")
    assert email.get_attribute("autocomplete") == "email"
    assert email.get_attribute("type") == "email"
    email.fill("not an address")
    with tab.expect_navigation():
        tab.locator("main form button[type=submit]").click()
    assert email.get_attribute("aria-invalid") == "true"
    described = (email.get_attribute("aria-describedby") or "").split()
    assert described, "the field is not tied to its error"
    texts = [tab.locator(f"[id='{i}']").inner_text().strip() for i in described]
    assert all(texts), texts
    # Announced: the error summary is an alert, and it links to the field.
    summary = tab.locator("[role=alert]")
    assert summary.count() == 1
    assert summary.locator("a[href='#email']").count() == 1
    tab.keyboard.press("Tab")  # from the top: the summary's link comes early
    tab_to(tab, lambda s: s["tag"] == "a" and s["text"] == texts[0][:40])
    tab.keyboard.press("Enter")
    assert tab.evaluate("document.activeElement.id") == "email"


@pytest.mark.parametrize("lang", ["da", "en"])
def test_every_public_page_switches_language_reflows_and_has_big_targets(
    app: Flask, live_server_factory: Any, browser: Any, lang: str
) -> None:
    seeded = seed_site()
    db.session.close()
    base = live_server_factory(app).url
    context = browser.new_context(viewport={"width": 320, "height": 640})
    page = context.new_page()
    problems: dict[str, list[str]] = {}
    for state in public_pages(seeded):
        if state.form is not None:
            continue
        page.goto(base + with_lang(state.start, lang))
        found = []
        if page.locator("html").get_attribute("lang") != lang:
            found.append(f"lang={page.locator('html').get_attribute('lang')}")
        switch = page.locator("nav.languages a[hreflang]")
        if sorted(switch.evaluate_all("els => els.map(e => e.hreflang)")) != ["da", "en"]:
            found.append("no language switch with both languages")
        width = page.evaluate("document.scrollingElement.scrollWidth")
        if width > 320:
            found.append(f"scrolls sideways at 320 px (scrollWidth {width})")
        found += [
            f"target {t['width']:.0f}x{t['height']:.0f}: {t['what']}"
            for t in page.evaluate(TARGETS)
        ]
        source = page.content().lower()
        if any(word in source for word in ("captcha", "turnstile", "<iframe")):
            found.append("CAPTCHA or iframe")
        if found:
            problems[state.name] = found
    context.close()
    assert problems == {}, "\n".join(f"{k}: {v}" for k, v in problems.items())


def test_the_switch_keeps_the_page_and_its_query(
    app: Flask, live_server_factory: Any, tab: Any, default_list: MailingList
) -> None:
    db.session.close()
    base = live_server_factory(app).url
    tab.goto(f"{base}/subscribe?list=nyhedsbrev")
    assert tab.locator("html").get_attribute("lang") == "da"
    current = tab.locator("nav.languages a[aria-current]")
    assert current.get_attribute("hreflang") == "da"
    with tab.expect_navigation():
        tab.locator("nav.languages a[hreflang=en]").click()
    assert tab.url == f"{base}/subscribe?list=nyhedsbrev&lang=en"
    assert tab.locator("html").get_attribute("lang") == "en"
    assert tab.context.cookies() == []  # the choice lives in the URL, never in a cookie
