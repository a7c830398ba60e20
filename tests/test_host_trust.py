"""The request's Host is never trusted: origins, redirects and links come from settings.

Any client can send any ``Host`` (and, through a proxy, ``X-Forwarded-Host``).
Our own origin is BASE_URL and the other trusted ones are ALLOWED_ORIGINS, so a
forged Host can neither pass the Origin check, nor turn ``next=`` into an open
redirect, nor put its name into a link. TRUSTED_PROXIES decides only whose
X-Forwarded-For and X-Forwarded-Proto are believed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import EmailMessage
from urllib.parse import urljoin

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from werkzeug.test import TestResponse

from newsletter.extensions import db
from newsletter.models import ConsentEvent, MailingList, StaffUser
from newsletter.web.origin import origin_of

from .conftest import ORIGIN
from .fixtures.intake import drain_intake
from .fixtures.mailflow import LINK, NOTHING, counts, html_of, text_of
from .fixtures.properties import PROPERTIES
from .fixtures.staff import STAFF_PASSWORD, csrf_from

SITE = "https://inklusio.dk"  # the company's static site, in ALLOWED_ORIGINS
EVIL = "evil.example"
HTTPS = "https://newsletter.test"  # BASE_URL of a deployment behind TLS
CONFIGURED = {origin_of(ORIGIN), origin_of(SITE)}

FUZZ = settings(PROPERTIES, max_examples=100)


def forged(header: str, host: str) -> dict[str, str]:
    """Headers that claim the request was made to ``host``."""
    return {"Host": host} if header == "Host" else {"X-Forwarded-Host": host}


def signup_under(app: Flask, header: str, email: str, origin: str) -> TestResponse:
    """POST /subscribe for ``email`` from a page on ``origin``, the request claiming
    (in ``header``) to be made to EVIL."""
    return app.test_client().post(
        "/subscribe", data={"email": email}, headers={**forged(header, EVIL), "Origin": origin}
    )


def browser_target(location: str) -> str | None:
    """The origin a browser goes to for this Location, on a page of BASE_URL.

    Browsers drop tabs and newlines, trim control characters and spaces, and
    read a backslash as a slash before they resolve a URL; None when the
    result is not an http(s) URL at all (javascript:, data: ...).
    """
    cleaned = re.sub(r"[\t\n\r]", "", location).strip("\x00- ").replace("\\", "/")
    return origin_of(urljoin(f"{ORIGIN}/subscribe", cleaned))


@pytest.fixture
def proxied(app_factory: Callable[..., Flask], default_list: MailingList) -> Flask:
    """An app behind one trusted proxy that lets the static site post to it."""
    db.session.commit()  # SQLite: hold no read lock while another app's requests write
    return app_factory(TRUSTED_PROXIES=1, ALLOWED_ORIGINS=[SITE])


@pytest.fixture
def staff_email(make_staff: Callable[..., StaffUser]) -> str:
    """The address of a staff account (its password is STAFF_PASSWORD)."""
    email = make_staff().email
    db.session.commit()  # SQLite: hold no read lock while another app's requests write
    return email


def log_in_with_next(client: FlaskClient, email: str, nxt: str, headers: dict[str, str]) -> str:
    """Log in through the form with ``next``; where the answer redirects to."""
    page = client.get("/admin/login", headers=headers)
    response = client.post(
        "/admin/login",
        data={
            "email": email,
            "password": STAFF_PASSWORD,
            "csrf_token": csrf_from(page),
            "next": nxt,
        },
        headers=headers,
    )
    assert response.status_code == 302, response.status_code
    return response.headers["Location"]


# -- the Origin check ---------------------------------------------------------------------------


@pytest.mark.parametrize(("proxies", "header"), [(0, "Host"), (1, "Host"), (1, "X-Forwarded-Host")])
def test_a_post_whose_origin_is_the_forged_host_is_refused(
    app_factory: Callable[..., Flask], default_list: MailingList, proxies: int, header: str
) -> None:
    app = app_factory(TRUSTED_PROXIES=proxies)
    response = signup_under(app, header, "forged@example.org", f"http://{EVIL}")
    assert response.status_code == 403
    assert counts() == NOTHING


def test_x_forwarded_host_without_a_trusted_proxy_changes_nothing(
    client: FlaskClient, default_list: MailingList
) -> None:
    response = client.post(
        "/subscribe",
        data={"email": "forged@example.org"},
        headers={"X-Forwarded-Host": EVIL, "Origin": f"http://{EVIL}"},
    )
    assert response.status_code == 403
    assert counts() == NOTHING


def test_behind_one_proxy_the_client_address_is_forwarded_but_the_host_is_not_trusted(
    app_factory: Callable[..., Flask], default_list: MailingList
) -> None:
    proxied = app_factory(TRUSTED_PROXIES=1, IP_LOGGING="full").test_client()
    forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": EVIL}
    refused = proxied.post(
        "/subscribe",
        data={"email": "proxied@example.org"},
        headers={**forwarded, "Origin": f"http://{EVIL}"},
    )
    assert refused.status_code == 403
    accepted = proxied.post(
        "/subscribe",
        data={"email": "proxied@example.org", "next": f"http://{EVIL}/thanks"},
        headers={**forwarded, "Origin": ORIGIN},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert accepted.status_code == 200
    assert "Location" not in accepted.headers
    db.session.commit()
    drain_intake()
    assert db.session.scalars(select(ConsentEvent.ip)).one() == "203.0.113.9"
    db.session.commit()


@pytest.mark.parametrize(
    ("referer", "status"), [(f"https://{EVIL}/admin/login", 400), (f"{HTTPS}/admin/login", 302)]
)
def test_x_forwarded_host_cannot_make_another_site_the_staff_referer(
    app_factory: Callable[..., Flask], staff_email: str, referer: str, status: int
) -> None:
    """On https Flask-WTF accepts a staff POST only with a Referer on the request's
    host: X-Forwarded-Host, even behind a trusted proxy, must not move that host."""
    client = app_factory(BASE_URL=HTTPS, TRUSTED_PROXIES=1).test_client()
    page = client.get("/admin/login", base_url=HTTPS)
    response = client.post(
        "/admin/login",
        base_url=HTTPS,
        headers={"X-Forwarded-Host": EVIL, "Referer": referer},
        data={"email": staff_email, "password": STAFF_PASSWORD, "csrf_token": csrf_from(page)},
    )
    assert response.status_code == status


# -- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize(("proxies", "header"), [(0, "Host"), (1, "Host"), (1, "X-Forwarded-Host")])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_signup_next_never_leads_to_the_forged_host(
    app_factory: Callable[..., Flask],
    default_list: MailingList,
    proxies: int,
    header: str,
    scheme: str,
) -> None:
    client = app_factory(TRUSTED_PROXIES=proxies, ALLOWED_ORIGINS=[SITE]).test_client()
    headers = {**forged(header, EVIL), "Origin": SITE}
    if proxies:
        headers["X-Forwarded-Proto"] = scheme
    response = client.post(
        "/subscribe",
        data={"email": "next@example.org", "next": f"{scheme}://{EVIL}/thanks"},
        headers=headers,
    )
    assert response.status_code == 200
    assert "Location" not in response.headers


@pytest.mark.parametrize("header", ["Host", "X-Forwarded-Host"])
def test_login_next_never_leads_to_the_forged_host(
    proxied: Flask, staff_email: str, header: str
) -> None:
    location = log_in_with_next(
        proxied.test_client(), staff_email, f"http://{EVIL}/admin", forged(header, EVIL)
    )
    assert browser_target(location) == ORIGIN


# Pieces browsers treat specially, to be glued together with random text.
TRICKS = [
    "/", "//", "\\", "/\\", "\\/", "\t", "\n", "\r", " ", "\x00", "%2f", "%2F%2F", "%5c",
    "%09", "@", ":", "?", "#", ".", "..", "http:", "https:", "HTTPS://", "javascript:",
    f"{EVIL}", "newsletter.test", "inklusio.dk", ":443", ":8080", "/admin", "\u3002", "\uff0f",
]  # fmt: skip
hosts = st.one_of(
    st.sampled_from(
        [EVIL, f"{EVIL}:8080", "newsletter.test", "newsletter.test.evil.example", "inklusio.dk"]
    ),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}(:[0-9]{1,5})?", fullmatch=True),
)
next_values = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, host, rest: f"{scheme}//{host}{rest}",
        st.sampled_from(["http:", "https:", "HTTP:", "", "/", "\\", "https:\\"]),
        hosts,
        st.text(max_size=20),
    ),
    st.lists(st.one_of(st.sampled_from(TRICKS), st.text(max_size=4)), max_size=8).map("".join),
)


@given(nxt=next_values, host=hosts, header=st.sampled_from(["Host", "X-Forwarded-Host"]))
@FUZZ
def test_signup_next_only_ever_leads_to_a_configured_origin(
    proxied: Flask, nxt: str, host: str, header: str
) -> None:
    response = proxied.test_client().post(
        "/subscribe",
        data={"email": "fuzz@example.org", "next": nxt},
        headers={**forged(header, host), "Origin": SITE},
    )
    assert response.status_code in (200, 303, 400)
    if response.status_code == 303:
        assert browser_target(response.headers["Location"]) in CONFIGURED


@given(nxt=next_values, host=hosts, header=st.sampled_from(["Host", "X-Forwarded-Host"]))
@settings(FUZZ, max_examples=40)
def test_login_next_only_ever_leads_into_the_console(
    proxied: Flask, staff_email: str, nxt: str, host: str, header: str
) -> None:
    location = log_in_with_next(proxied.test_client(), staff_email, nxt, forged(header, host))
    assert browser_target(location) == ORIGIN


# -- links ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("proxies", "header"), [(0, "Host"), (1, "X-Forwarded-Host")])
def test_api_privacy_link_is_on_base_url_whatever_the_host(
    app_factory: Callable[..., Flask], default_list: MailingList, proxies: int, header: str
) -> None:
    client = app_factory(TRUSTED_PROXIES=proxies).test_client()
    response = client.post(
        "/api/v1/subscriptions", json={"email": "api@example.org"}, headers=forged(header, EVIL)
    )
    assert response.status_code == 202
    assert response.headers["Link"] == f'<{ORIGIN}/privacy>; rel="privacy-policy"'


def test_feed_links_are_on_base_url_whatever_the_host(client: FlaskClient) -> None:
    response = client.get("/archive/feed.atom", headers={"Host": EVIL})
    assert response.status_code == 200
    assert EVIL not in response.get_data(as_text=True)
    assert ORIGIN in response.get_data(as_text=True)


@pytest.mark.parametrize(("proxies", "header"), [(0, "Host"), (1, "X-Forwarded-Host")])
def test_mail_links_of_a_signup_under_a_forged_host_are_on_base_url(
    app_factory: Callable[..., Flask],
    default_list: MailingList,
    deliver: Callable[[], list[EmailMessage]],
    proxies: int,
    header: str,
) -> None:
    app = app_factory(TRUSTED_PROXIES=proxies)
    response = signup_under(app, header, "mail@example.org", ORIGIN)
    assert response.status_code == 200
    (mail,) = deliver()
    links = LINK.findall(text_of(mail)) + LINK.findall(html_of(mail))
    assert any(link.startswith(f"{ORIGIN}/confirm/") for link in links)
    assert EVIL not in mail.as_string()


@pytest.mark.parametrize(("proxies", "header"), [(0, "Host"), (1, "X-Forwarded-Host")])
def test_the_ledger_names_the_signup_page_on_base_url_whatever_the_host(
    app_factory: Callable[..., Flask], default_list: MailingList, proxies: int, header: str
) -> None:
    app = app_factory(TRUSTED_PROXIES=proxies)
    response = signup_under(app, header, "ledger@example.org", ORIGIN)  # no Referer: the own page
    assert response.status_code == 200
    db.session.commit()
    drain_intake()
    assert db.session.scalars(select(ConsentEvent.source_url)).one() == f"{ORIGIN}/subscribe"
    db.session.commit()


@pytest.mark.parametrize("host", ["a..b", ".example", "x" * 64 + ".example", "0..0"])
@pytest.mark.parametrize("path", ["/subscribe", "/admin/login", "/healthz"])
def test_a_host_no_url_can_be_built_for_is_a_plain_400(
    client: FlaskClient, host: str, path: str
) -> None:
    """werkzeug refuses such a Host before routing; the error page cannot build its
    links then, and must not turn the 400 into a 500."""
    response = client.get(path, headers={"Host": host})
    assert response.status_code == 400
    assert response.mimetype == "text/plain"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert host not in response.get_data(as_text=True)
