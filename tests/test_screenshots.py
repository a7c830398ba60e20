"""Screenshots for the README: signup, confirm, unsubscribe and preferences, in both languages.

The browser tests take them on every run (docs/screenshots/), so they always
show the pages as they are. They are 480 px wide: the pages are one column at
every width, so this is how most visitors, on phones, see them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from newsletter.extensions import db

from .fixtures.pages import seed_site
from .test_accessibility import with_lang

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).parents[1] / "docs" / "screenshots"
PAGES = {
    "signup": "subscribe",
    "confirm": "confirm",
    "unsubscribe": "unsubscribe",
    "preferences": "manage",
}


@pytest.mark.parametrize("lang", ["da", "en"])
def test_screenshots_of_the_main_pages(
    app: Flask, live_server_factory: Any, browser: Any, lang: str
) -> None:
    seeded = seed_site()
    db.session.close()
    base = live_server_factory(app).url
    context = browser.new_context(viewport={"width": 480, "height": 800}, device_scale_factor=1)
    page = context.new_page()
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, key in PAGES.items():
        response = page.goto(base + with_lang(seeded.paths[key], lang))
        assert response is not None
        assert response.status == 200
        path = SHOTS / f"{name}-{lang}.png"
        page.screenshot(path=str(path), full_page=True, animations="disabled")
        assert path.stat().st_size > 1000
    # The signup form's error state, as a visitor sees it after sending it empty.
    page.goto(base + with_lang(seeded.paths["subscribe"], lang))
    with page.expect_navigation():
        page.locator("main form button[type=submit]").click()
    page.screenshot(path=str(SHOTS / f"signup-error-{lang}.png"), full_page=True)
    context.close()
