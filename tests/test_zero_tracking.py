"""Zero tracking, proven: no cookie on any public route, nothing loaded from another origin
by any public page or by a newsletter, no tracking pixel and no rewritten link in a newsletter.

Every public route is found in ``app.url_map`` (everything outside /admin and
/dev), so a route added later is checked too without anyone listing it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.models import MailingList, Subscriber, Subscription
from newsletter.privacy.policy import import_policy
from newsletter.tokens import Purpose, make_token

from .fixtures.mailflow import html_of

POLICY = b"---\ntitle: Privatlivspolitik\ndate: 2024-01-01\n---\nVi sporer ingen.\n"
FOREIGN_IMAGE = "https://tracker.example/pixel.gif"
MARKDOWN_LINKS = [
    "https://inklusio.dk/nyt?utm_source=none&x=1",
    "mailto:ses@inklusio.dk",
    "https://example.org/artikel#afsnit",
]
SKIPPED_PREFIXES = ("/admin", "/dev")


@dataclass
class People:
    """Real tokens for every kind of link, for two subscribers (one is erased last)."""

    tokens: dict[str, str]
    erase_token: str


def token_set(subscriber: Subscriber, list_ids: tuple[int, ...]) -> dict[str, str]:
    """Confirm, unsubscribe, manage and data-export tokens for one subscriber."""
    return {
        "public.confirm": make_token(Purpose.CONFIRM, subscriber.token_key, list_ids),
        "public.unsubscribe": make_token(Purpose.UNSUBSCRIBE, subscriber.token_key, list_ids),
        "public.manage": make_token(Purpose.MANAGE, subscriber.token_key),
        "privacy.erase": make_token(Purpose.MANAGE, subscriber.token_key),
        "privacy.data_export": make_token(Purpose.DATA_EXPORT, subscriber.token_key),
    }


@pytest.fixture
def people(
    app: Flask,
    default_list: MailingList,
    post_form: Callable[..., Any],
) -> People:
    """Two pending subscribers and a privacy policy."""
    import_policy(POLICY)
    for email in ("one@example.org", "two@example.org"):
        assert post_form("/subscribe", {"email": email}).status_code == 200
    db.session.commit()
    one, two = db.session.scalars(select(Subscriber).order_by(Subscriber.id)).all()
    list_ids = tuple(
        db.session.scalars(select(Subscription.list_id).where(Subscription.subscriber_id == one.id))
    )
    tokens = token_set(one, list_ids)
    erase_token = make_token(Purpose.MANAGE, two.token_key)
    db.session.commit()
    return People(tokens, erase_token)


def public_rules(app: Flask) -> list[Any]:
    """Every route outside the staff console and the dev mailbox."""
    return [rule for rule in app.url_map.iter_rules() if not rule.rule.startswith(SKIPPED_PREFIXES)]


def url_for_rule(rule: Any, people: People, erase: bool = False) -> str:
    """A URL for the rule, with a real token or value wherever it has an argument."""
    values: dict[str, Any] = {}
    for argument in rule.arguments:
        converter = type(rule._converters[argument]).__name__
        if argument == "token":
            values[argument] = (
                people.erase_token if erase else people.tokens.get(rule.endpoint, "x")
            )
        elif argument == "filename":
            values[argument] = "style.css"
        elif argument == "version" or converter in {"IntegerConverter", "RowIdConverter"}:
            values[argument] = 1
        else:
            values[argument] = "x"
    return str(rule.build(values, append_unknown=False)[1])


POST_BODIES: dict[str, dict[str, Any]] = {
    "public.subscribe": {"data": {"email": "three@example.org"}},
    "api.create_subscription": {"json": {"email": "four@example.org"}},
    "public.unsubscribe": {"data": {"List-Unsubscribe": "One-Click"}},
    "public.manage": {"data": {"action": "export"}},
    "privacy.erase": {"data": {"erase": "yes"}},
}


def test_no_public_route_sets_a_cookie(app: Flask, client: FlaskClient, people: People) -> None:
    rules = public_rules(app)
    endpoints = {rule.endpoint for rule in rules}
    # The routes a subscriber meets are among them (a renamed one would slip out).
    assert {
        "public.subscribe_form",
        "public.confirm",
        "public.unsubscribe",
        "public.manage",
        "privacy.policy_in_force",
        "privacy.policy_version",
        "privacy.data_export",
        "privacy.erase",
        "api.create_subscription",
        "static",
    } <= endpoints
    checked: list[tuple[str, str, int]] = []
    headers = {"Origin": "http://newsletter.test"}
    erase_rules = [r for r in rules if r.endpoint == "privacy.erase"]
    for rule in [r for r in rules if r.endpoint != "privacy.erase"] + erase_rules:
        for method in sorted(rule.methods - {"HEAD"}):
            erase = rule.endpoint == "privacy.erase" and method == "POST"
            url = url_for_rule(rule, people, erase=erase)
            body = POST_BODIES.get(rule.endpoint, {}) if method == "POST" else {}
            response = client.open(url, method=method, headers=headers, **body)
            response.close()  # a static file is streamed from an open file
            assert "Set-Cookie" not in response.headers, f"{method} {url} sets a cookie"
            checked.append((method, rule.rule, response.status_code))
    # Error pages are public pages too.
    for url in ("/no-such-page", "/privacy/999", "/manage/not-a-token"):
        response = client.get(url)
        assert "Set-Cookie" not in response.headers
        checked.append(("GET", url, response.status_code))
    statuses = {(method, rule): status for method, rule, status in checked}
    # Real tokens: the pages answered as they do for a person, not with errors.
    for key in [
        ("GET", "/confirm/<token>"),
        ("POST", "/confirm/<token>"),
        ("GET", "/manage/<token>"),
        ("POST", "/manage/<token>"),
        ("GET", "/data/<token>"),
        ("POST", "/data/<token>"),
        ("GET", "/manage/<token>/erase"),
        ("POST", "/manage/<token>/erase"),
        ("POST", "/unsubscribe/<token>"),
        ("GET", "/privacy/<id:version>"),
        ("GET", "/privacy"),
        ("POST", "/subscribe"),
    ]:
        assert statuses[key] == 200, (key, statuses[key])
    assert statuses[("POST", "/api/v1/subscriptions")] == 202


class Links(HTMLParser):
    """Every href and src of a document, and every tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []
        self.loads: list[str] = []  # anything a browser would fetch by itself

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Collect links and what the document would load."""
        values = {name: value or "" for name, value in attrs}
        if tag == "a" and "href" in values:
            self.hrefs.append(values["href"])
        if tag == "img":
            self.images.append(values.get("src", ""))
        for name in ("src", "srcset", "background", "poster", "data"):
            if name in values:
                self.loads.append(values[name])
        if tag == "link" and "href" in values:
            self.loads.append(values["href"])


def campaign_body(base_url: str) -> str:
    """Markdown with our own image, a third-party image and three kinds of link."""
    return (
        "# Nyt\n\nHej {{ name }}.\n\n"
        f"![Logo]({base_url}/static/logo.png)\n\n"
        f"![Pixel]({FOREIGN_IMAGE})\n\n"
        f"Læs [artiklen]({MARKDOWN_LINKS[0]}), skriv til [os]({MARKDOWN_LINKS[1]}) "
        f"eller se [afsnittet]({MARKDOWN_LINKS[2]}).\n"
    )


@pytest.fixture
def newsletter_html(
    app: Flask,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> Callable[[], str]:
    """Send a campaign through the real pipeline and return the HTML the reader got."""

    def send() -> str:
        subscribed("reader@example.org")
        campaign = create_campaign(
            "nyhedsbrev", "Nyt", campaign_body(app.config["BASE_URL"].rstrip("/"))
        )
        assert start_campaign(campaign.id) == 1
        (mail,) = deliver()
        return html_of(mail)

    return send


def test_a_newsletter_has_no_pixel_and_no_rewritten_link(
    app: Flask, newsletter_html: Callable[[], str]
) -> None:
    base = app.config["BASE_URL"].rstrip("/")
    html = newsletter_html()
    parsed = Links()
    parsed.feed(html)
    assert FOREIGN_IMAGE not in html
    assert parsed.images == [f"{base}/static/logo.png", ""], parsed.images  # pixel src dropped
    for source in parsed.loads:
        assert not source or source.startswith((f"{base}/", "data:")), source
    own = [h for h in parsed.hrefs if h.startswith(f"{base}/")]
    others = [h for h in parsed.hrefs if not h.startswith(f"{base}/")]
    assert others == MARKDOWN_LINKS  # exactly as written, in order, nothing added
    assert sorted(urlsplit(h).path.split("/")[1] for h in own) == ["manage", "unsubscribe"]


@pytest.mark.browser
def test_public_pages_and_a_newsletter_load_nothing_from_another_origin(
    app: Flask,
    live_server_factory: Callable[[Flask], Any],
    page: Any,
    people: People,
    newsletter_html: Callable[[], str],
) -> None:
    server = live_server_factory(app)
    app.config["BASE_URL"] = server.url
    html = newsletter_html()  # rendered with the live server as BASE_URL
    tokens = people.tokens
    db.session.close()  # SQLite has one writer: the server's requests need it
    paths = [
        "/subscribe",
        "/privacy",
        "/privacy/1",
        f"/confirm/{tokens['public.confirm']}",
        f"/unsubscribe/{tokens['public.unsubscribe']}",
        f"/manage/{tokens['public.manage']}",
        f"/manage/{tokens['public.manage']}/erase",
        f"/data/{tokens['privacy.data_export']}",
        "/no-such-page",
    ]
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    if "archive.index" in endpoints:  # the public archive, where it exists
        paths.append("/archive")
    for path in paths:
        page.goto(server.url + path)
    # Submit the signup form like a person: the answer page is checked too.
    page.goto(server.url + "/subscribe")
    page.get_by_label("E-mail address").fill("browser@example.org")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_load_state()

    # The newsletter as a mail program would show it, served from our origin.
    preview = f"{server.url}/__newsletter_preview__"
    page.route(preview, lambda route: route.fulfill(body=html, content_type="text/html"))
    page.goto(preview)
    page.wait_for_load_state("networkidle")

    origin = urlsplit(server.url).netloc
    foreign = [
        u for u in page.requests if not u.startswith("data:") and urlsplit(u).netloc != origin
    ]
    assert foreign == []
    requested = {urlsplit(u).path for u in page.requests}
    assert "/static/style.css" in requested  # the pages did load their own resources
    assert "/static/logo.png" in requested  # and so did the newsletter

    # Control: the recorder does see a third-party load when a page has one.
    control = f"{server.url}/__control__"
    foreign_img = '<img src="http://tracker.invalid/p.gif" alt="">'
    page.route(control, lambda route: route.fulfill(body=foreign_img, content_type="text/html"))
    page.goto(control)
    page.wait_for_load_state("networkidle")
    assert "http://tracker.invalid/p.gif" in page.requests
