"""The hosted signup form: GET/POST /subscribe.

Origin checks instead of a cookie CSRF token, safe return URLs, validation tied
to its field, one normalised form per address, the honeypot, no enumeration,
the confirmation-mail window, the rate limit, the ledger event, and no cookies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from newsletter.extensions import db
from newsletter.models import (
    ConsentEvent,
    ConsentText,
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.validation import MAX_EMAIL, MAX_NAME

from .fixtures.intake import drain_intake
from .fixtures.ledger import seal_and_verify
from .fixtures.mailflow import NOTHING, counts, link_path

SITE = "https://inklusio.dk"
OWN = "http://newsletter.test"  # BASE_URL: our own origin


# --- helpers -----------------------------------------------------------------


def subscriber(email_key: str) -> dict[str, Any] | None:
    """The subscriber with this address key once a worker has processed the intake,
    as plain values read in their own transaction."""
    db.session.commit()
    drain_intake()
    row = db.session.execute(
        select(Subscriber.id, Subscriber.email, Subscriber.name).where(
            Subscriber.email_key == email_key
        )
    ).first()
    db.session.commit()  # SQLite: never hold the write lock across a request
    return dict(row._mapping) if row else None


def status_of(email_key: str) -> SubscriptionStatus:
    """The single subscription's status for an address, once the intake is processed."""
    db.session.commit()
    drain_intake()
    status = db.session.scalars(
        select(Subscription.status).join(Subscriber).where(Subscriber.email_key == email_key)
    ).one()
    db.session.commit()
    return status


def post(
    client: FlaskClient, data: Mapping[str, object], headers: dict[str, str] | None = None
) -> TestResponse:
    """POST /subscribe with exactly the headers given (None = from our own origin)."""
    return client.post(
        "/subscribe", data=data, headers={"Origin": OWN} if headers is None else headers
    )


def thanks_page(client: FlaskClient) -> bytes:
    """The thank-you page as a plain, successful signup of a fresh address gets it."""
    response = post(client, {"email": "reference.thanks@example.net"})
    assert response.status_code == 200
    return response.data


def tag_with(html: str, attribute: str, value: str) -> str:
    """The one opening tag carrying ``attribute="value"``."""
    tags = re.findall(rf'<[a-z]+\b[^>]*\b{attribute}="{re.escape(value)}"[^>]*>', html)
    assert len(tags) == 1, f'expected one tag with {attribute}="{value}", found {tags}'
    return tags[0]


def error_text(html: str, field: str) -> str:
    """The text of the error element tied to ``field`` through aria-describedby."""
    error_id = f"{field}-error"
    described = tag_with(html, "aria-describedby", error_id)
    if field != "list":
        assert f'id="{field}"' in described
        assert 'aria-invalid="true"' in described
    match = re.search(rf'<p class="error" id="{error_id}">([^<]+)</p>', html)
    assert match, f"no error element #{error_id}"
    return match.group(1)


def list_checkboxes(html: str) -> dict[str, bool]:
    """slug -> checked, for the list checkboxes on the form."""
    boxes = {}
    for tag in re.findall(r'<input\b[^>]*\bname="list"[^>]*>', html):
        assert 'type="checkbox"' in tag
        value = re.search(r'value="([^"]*)"', tag)
        assert value
        boxes[value.group(1)] = " checked" in tag
    return boxes


def no_cookie(response: TestResponse) -> None:
    """Public pages set no cookie, ever."""
    assert "Set-Cookie" not in response.headers, response.headers.get("Set-Cookie")


@pytest.fixture(autouse=True)
def english(client: FlaskClient) -> None:
    """English pages, so the assertions on text hold whatever translations exist."""
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"


@pytest.fixture
def site_client(app_factory: Callable[..., Flask]) -> FlaskClient:
    """A client of an app that lets the company's static site post to it."""
    site_app = app_factory(ALLOWED_ORIGINS=[SITE])
    site = site_app.test_client()
    site.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return site


# --- GET /subscribe ---------------------------------------------------------------


def test_form_renders_without_a_cookie(client: FlaskClient, default_list: MailingList) -> None:
    response = client.get("/subscribe")
    assert response.status_code == 200
    no_cookie(response)
    html = response.get_data(as_text=True)
    # The form carries the page's language, so the answer and the mails come in it.
    assert '<form method="post" action="/subscribe?lang=en"' in html
    assert re.search(r'<input[^>]*name="email"', html)
    assert re.search(r'<input[^>]*name="website"', html)
    # One list only: it is sent along without a choice to make.
    assert '<input type="hidden" name="list" value="nyhedsbrev">' in html


def test_form_preselects_the_list_named_in_the_query(
    client: FlaskClient,
    default_list: MailingList,
    make_list: Callable[..., MailingList],
) -> None:
    make_list("kurser", "Kurser")
    plain = client.get("/subscribe").get_data(as_text=True)
    assert list_checkboxes(plain) == {"nyhedsbrev": True, "kurser": False}
    chosen = client.get("/subscribe?list=kurser")
    assert chosen.status_code == 200
    no_cookie(chosen)
    assert list_checkboxes(chosen.get_data(as_text=True)) == {
        "nyhedsbrev": False,
        "kurser": True,
    }


# --- origin checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Origin": SITE}, True),
        ({"Origin": "https://INKLUSIO.dk:443"}, True),
        ({"Referer": f"{SITE}/nyhedsbrev?x=1"}, True),
        ({"Origin": OWN}, True),
        ({"Origin": "https://evil.example"}, False),
        ({"Origin": "http://inklusio.dk"}, False),
        ({"Origin": "https://inklusio.dk.evil.example"}, False),
        ({"Origin": "https://inklusio.dk:8443"}, False),
        ({"Origin": "https://evil.example", "Referer": f"{SITE}/"}, False),
        ({"Referer": "https://evil.example/inklusio.dk"}, False),
        ({"Origin": "null"}, False),
        ({}, False),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else str(v),
)
def test_post_is_accepted_only_from_an_allowed_origin(
    site_client: FlaskClient,
    default_list: MailingList,
    headers: dict[str, str],
    allowed: bool,
) -> None:
    response = post(site_client, {"email": "origin@example.org"}, headers=headers)
    no_cookie(response)
    if allowed:
        assert response.status_code == 200
        assert subscriber("origin@example.org") is not None
        assert counts()["outbox"] == 1
    else:
        assert response.status_code == 403
        assert "allowed site" in response.get_data(as_text=True)
        assert counts() == NOTHING


# --- next -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("next_url", "location"),
    [
        (f"{SITE}/tak-for-din-tilmelding", f"{SITE}/tak-for-din-tilmelding"),
        ("/subscribe?done=1", "/subscribe?done=1"),
        ("http://newsletter.test/thanks", "http://newsletter.test/thanks"),
        ("https://evil.example/thanks", None),
        ("//evil.example/thanks", None),
        ("/\\evil.example/thanks", None),
        ("/\t/evil.example/thanks", None),
        ("/\n/evil.example/thanks", None),
        ("https://evil.example\\@inklusio.dk/", None),
        ("https://inklusio.dk@evil.example/", None),
        ("javascript:alert(1)", None),
        ("/" + "x" * 2100, None),
    ],
)
def test_next_redirects_only_to_a_local_path_or_allowed_origin(
    site_client: FlaskClient,
    default_list: MailingList,
    next_url: str,
    location: str | None,
) -> None:
    reference = thanks_page(site_client)
    response = post(
        site_client,
        {"email": "next@example.org", "next": next_url},
        headers={"Origin": SITE},
    )
    no_cookie(response)
    if location is None:
        assert response.status_code == 200
        assert "Location" not in response.headers
        assert response.data == reference  # the plain thank-you page
    else:
        assert response.status_code == 303
        assert response.headers["Location"] == location
    assert subscriber("next@example.org") is not None  # the signup itself went through


# --- validation -------------------------------------------------------------------


LONG_EMAIL = "a" * (MAX_EMAIL - len("@example.org") + 1) + "@example.org"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({}, "email", "e-mail address"),
        ({"email": ""}, "email", "e-mail address"),
        ({"email": "   "}, "email", "e-mail address"),
        ({"email": "not-an-address"}, "email", "not a valid e-mail address"),
        ({"email": "two@@example.org"}, "email", "not a valid e-mail address"),
        ({"email": "Anne <anne@example.org>"}, "email", "not a valid e-mail address"),
        ({"email": LONG_EMAIL}, "email", f"longer than {MAX_EMAIL}"),
        ({"email": "ok@example.org", "name": "n" * (MAX_NAME + 1)}, "name", f"{MAX_NAME}"),
        ({"email": "ok@example.org", "list": "does-not-exist"}, "list", "Unknown list"),
        ({"email": "ok@example.org", "list": "Not A Slug"}, "list", "malformed"),
        ({"email": "ok@example.org", "name": "Anne\x00"}, "name", "control characters"),
        ({"email": "ok@example.org", "name": "Anne\x1b[31m"}, "name", "control characters"),
        ({"email": "ok@example.org", "name": "Anne\x7f"}, "name", "control characters"),
        ({"email": "ok@example.org", "name": "Anne\u2028B"}, "name", "control characters"),
        (
            {"email": "ok@example.org", "name": "Anne\r\nBcc: victim@example.org"},
            "name",
            "control characters",
        ),
    ],
    ids=[
        "no-email",
        "empty-email",
        "blank-email",
        "malformed-email",
        "double-at",
        "display-name",
        "long-email",
        "long-name",
        "unknown-list",
        "malformed-list",
        "nul-in-name",
        "escape-in-name",
        "del-in-name",
        "line-separator-in-name",
        "crlf-in-name",
    ],
)
def test_invalid_input_is_refused_with_the_error_tied_to_its_field(
    client: FlaskClient,
    default_list: MailingList,
    data: dict[str, str],
    field: str,
    message: str,
) -> None:
    assert counts() == NOTHING
    response = post(client, data)
    assert response.status_code == 400
    no_cookie(response)
    html = response.get_data(as_text=True)
    assert message.lower() in error_text(html, field).lower()
    assert 'role="alert"' in html  # the summary at the top names it too
    assert f'href="#{field}"' in html
    assert f'id="{field}"' in html  # ... and points at an element that exists
    assert counts() == NOTHING


def test_unknown_list_error_is_shown_on_the_list_choice_with_several_lists(
    client: FlaskClient,
    default_list: MailingList,
    make_list: Callable[..., MailingList],
) -> None:
    make_list("kurser", "Kurser")
    response = post(client, {"email": "ok@example.org", "list": ["kurser", "nope"]})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Unknown list: nope" in error_text(html, "list")
    assert '<fieldset class="field invalid" aria-describedby="list-error">' in html
    assert counts() == NOTHING


def test_refused_form_keeps_what_was_typed(client: FlaskClient, default_list: MailingList) -> None:
    response = post(client, {"email": "not-an-address", "name": "Anne Andersen"})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'value="not-an-address"' in html
    assert 'value="Anne Andersen"' in html


# --- addresses --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "stored"),
    [
        ("jørgen@eksempel.dk", "jørgen@eksempel.dk"),
        ("anne@bücher.dk", "anne@bücher.dk"),
        ("anne@xn--bcher-kva.dk", "anne@bücher.dk"),
        ("Åse@Ærø.DK", "Åse@ærø.dk"),
    ],
)
def test_internationalised_addresses_are_accepted(
    client: FlaskClient, default_list: MailingList, address: str, stored: str
) -> None:
    response = post(client, {"email": address})
    assert response.status_code == 200
    found = subscriber(stored.casefold())
    assert found is not None
    assert found["email"] == stored
    assert status_of(stored.casefold()) == SubscriptionStatus.PENDING
    assert counts()["outbox"] == 1


def test_idn_domain_gets_a_working_confirmation_mail(
    client: FlaskClient,
    default_list: MailingList,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    assert post(client, {"email": "anne@bücher.dk"}).status_code == 200
    (mail,) = deliver()
    assert str(mail["To"]) == "anne@xn--bcher-kva.dk"
    assert client.post(link_path(mail, "confirm")).status_code == 200
    assert status_of("anne@bücher.dk") == SubscriptionStatus.ACTIVE


def test_internationalised_local_part_gets_its_confirmation_mail(
    client: FlaskClient,
    default_list: MailingList,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    """A non-ASCII local part is accepted and its mail goes out (SMTPUTF8), beside others."""
    assert post(client, {"email": "jørgen@eksempel.dk"}).status_code == 200
    assert post(client, {"email": "plain@example.org"}).status_code == 200
    mails = deliver()
    assert sorted(str(m["To"]) for m in mails) == ["jørgen@eksempel.dk", "plain@example.org"]
    jorgen = next(m for m in mails if "eksempel" in str(m["To"]))
    assert client.post(link_path(jorgen, "confirm")).status_code == 200
    assert status_of("jørgen@eksempel.dk") == SubscriptionStatus.ACTIVE


def test_one_subscriber_per_normalised_address(
    client: FlaskClient,
    default_list: MailingList,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    for address in (
        "Anne@Example.COM",
        "anne@example.com",
        "  ANNE@EXAMPLE.com ",
        "anne@EXAMPLE.COM",
    ):
        assert post(client, {"email": address}).status_code == 200
    db.session.commit()
    drain_intake()
    subscribers = db.session.scalars(select(Subscriber)).all()
    assert [(s.email, s.email_key) for s in subscribers] == [
        ("Anne@example.com", "anne@example.com")
    ]
    assert counts()["subscriptions"] == 1
    assert len(deliver()) == 1  # one confirmation mail, not four


def test_unicode_normalisation_gives_one_subscriber(
    client: FlaskClient, default_list: MailingList
) -> None:
    composed, decomposed = "jos\u00e9@example.com", "jose\u0301@example.com"
    assert post(client, {"email": composed}).status_code == 200
    assert post(client, {"email": decomposed}).status_code == 200
    assert counts()["subscribers"] == 1
    assert subscriber(composed) is not None


# --- honeypot ---------------------------------------------------------------------


def test_filled_honeypot_gets_the_same_answer_and_stores_nothing(
    client: FlaskClient, default_list: MailingList
) -> None:
    bot = post(client, {"email": "bot@example.org", "website": "https://spam.example"})
    assert bot.status_code == 200
    no_cookie(bot)
    assert counts() == NOTHING
    person = post(client, {"email": "person@example.org"})
    assert person.status_code == 200
    assert bot.data == person.data
    assert subscriber("bot@example.org") is None


# --- no enumeration ---------------------------------------------------------------


def test_answer_is_identical_for_new_pending_active_and_unsubscribed(
    client: FlaskClient,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    subscribed: Callable[..., EmailMessage],
) -> None:
    subscribe("pending@example.org")
    subscribed("active@example.org")
    welcome = subscribed("gone@example.org")
    assert client.post(link_path(welcome, "unsubscribe")).status_code == 200
    assert status_of("gone@example.org") == SubscriptionStatus.UNSUBSCRIBED

    answers = {
        state: post(client, {"email": address})
        for state, address in [
            ("new", "new@example.org"),
            ("pending", "pending@example.org"),
            ("active", "active@example.org"),
            ("unsubscribed", "gone@example.org"),
        ]
    }
    reference = answers["new"]
    assert reference.status_code == 200
    for state, response in answers.items():
        assert response.status_code == reference.status_code, state
        assert response.data == reference.data, state
        assert sorted(response.headers.items()) == sorted(reference.headers.items()), state


# --- re-submitting ----------------------------------------------------------------


def test_resubmitting_an_active_subscriber_keeps_them_active_and_sends_nothing(
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    subscribed("active@example.org", name="Anne")
    before = counts()
    assert post(client, {"email": "ACTIVE@example.org", "name": "Mallory"}).status_code == 200
    assert status_of("active@example.org") == SubscriptionStatus.ACTIVE
    assert counts() == before  # no event, no mail
    assert deliver() == []
    found = subscriber("active@example.org")
    assert found is not None
    assert found["name"] == "Anne"  # an unauthenticated form does not rename people


def test_resubmitting_a_pending_subscriber_within_the_window_sends_no_second_mail(
    client: FlaskClient,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    first = subscribe("pending@example.org")
    outbox = counts()["outbox"]
    assert post(client, {"email": "pending@example.org"}).status_code == 200
    assert counts()["outbox"] == outbox
    assert deliver() == []
    assert status_of("pending@example.org") == SubscriptionStatus.PENDING
    assert client.post(link_path(first, "confirm")).status_code == 200  # the first still works
    assert status_of("pending@example.org") == SubscriptionStatus.ACTIVE


def test_resubmitting_a_pending_subscriber_after_the_window_sends_one_more_mail(
    app_factory: Callable[..., Flask],
    default_list: MailingList,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    no_window = app_factory(CONFIRM_RESEND_WINDOW=0).test_client()

    def worker_with_no_window() -> None:
        """The worker decides whether a mail is due, under its own settings."""
        db.session.commit()
        with no_window.application.app_context():
            drain_intake()

    assert post(no_window, {"email": "pending@example.org"}).status_code == 200
    worker_with_no_window()
    assert len(deliver()) == 1
    assert post(no_window, {"email": "pending@example.org"}).status_code == 200
    worker_with_no_window()
    mails = deliver()
    assert len(mails) == 1
    assert "pending@example.org" in str(mails[0]["To"])
    assert no_window.post(link_path(mails[0], "confirm")).status_code == 200
    assert status_of("pending@example.org") == SubscriptionStatus.ACTIVE


# --- rate limit -------------------------------------------------------------------


def test_rate_limit_refuses_the_third_signup_in_a_minute(
    app_factory: Callable[..., Flask], default_list: MailingList
) -> None:
    limited = app_factory(RATELIMIT_ENABLED=True, SIGNUP_RATE_LIMIT="2 per minute").test_client()
    assert post(limited, {"email": "one@example.org"}).status_code == 200
    assert post(limited, {"email": "two@example.org"}).status_code == 200
    before = counts()
    third = post(limited, {"email": "three@example.org"})
    assert third.status_code == 429
    no_cookie(third)
    assert "Retry-After" in third.headers
    assert counts() == before
    assert subscriber("three@example.org") is None
    # The form itself can still be read.
    assert limited.get("/subscribe").status_code == 200


# --- ledger -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "stored_ip"),
    [("203.0.113.77", "203.0.113.0/24"), ("2001:db8:1234:5678::1", "2001:db8:1234::/48")],
)
def test_signup_writes_a_requested_event_with_its_evidence(
    client: FlaskClient, default_list: MailingList, remote: str, stored_ip: str
) -> None:
    page = "http://localhost/artikler/hvorfor-nyhedsbrev?utm=x"
    agent = "Mozilla/5.0 (X11; Linux x86_64) Testbrowser/1.0"
    started = datetime.now(UTC)
    response = client.post(
        "/subscribe",
        data={"email": "Evidence@Example.org", "name": "Eva"},
        headers={"Origin": OWN, "Referer": page, "User-Agent": agent},
        environ_overrides={"REMOTE_ADDR": remote},
    )
    assert response.status_code == 200
    db.session.commit()
    drain_intake()
    (event,) = db.session.scalars(select(ConsentEvent)).all()
    text = db.session.scalars(select(ConsentText).where(ConsentText.list_id == default_list.id))
    (consent_text,) = text.all()
    assert event.event == "requested"
    assert event.channel == "form"
    assert event.occurred_at.tzinfo is not None
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert started - timedelta(seconds=1) <= event.occurred_at <= datetime.now(UTC)
    assert event.ip == stored_ip
    assert event.user_agent == agent
    assert event.source_url == page.split("?")[0]  # the page, never its query (test_evidence_links)
    assert event.list_id == default_list.id
    assert event.consent_text_id == consent_text.id
    assert consent_text.version == 1
    assert event.email == "Evidence@example.org"
    found = subscriber("evidence@example.org")
    assert found is not None
    assert event.subscriber_id == found["id"]
    assert seal_and_verify().ok
    db.session.commit()


@pytest.mark.parametrize(("mode", "stored_ip"), [("full", "203.0.113.77"), ("none", None)])
def test_ip_logging_setting_is_applied(
    app_factory: Callable[..., Flask], default_list: MailingList, mode: str, stored_ip: str | None
) -> None:
    other = app_factory(IP_LOGGING=mode).test_client()
    response = other.post(
        "/subscribe",
        data={"email": "ip@example.org"},
        headers={"Origin": OWN},
        environ_overrides={"REMOTE_ADDR": "203.0.113.77"},
    )
    assert response.status_code == 200
    db.session.commit()
    drain_intake()
    assert db.session.scalars(select(ConsentEvent.ip)).one() == stored_ip
    db.session.commit()


# --- no cookies -------------------------------------------------------------------


def test_no_public_page_or_post_sets_a_cookie(
    client: FlaskClient,
    default_list: MailingList,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    responses: list[tuple[str, Any]] = [
        ("form", client.get("/subscribe?list=nyhedsbrev")),
        ("refused origin", post(client, {"email": "a@example.org"}, headers={})),
        ("invalid", post(client, {"email": "nope"})),
        ("honeypot", post(client, {"email": "a@example.org", "website": "x"})),
        ("redirect", post(client, {"email": "a@example.org", "next": "/subscribe"})),
        ("thanks", post(client, {"email": "cookie@example.org"})),
    ]
    (confirmation,) = [m for m in deliver() if "cookie@" in str(m["To"])]
    confirm = link_path(confirmation, "confirm")
    responses += [("confirm page", client.get(confirm)), ("confirmed", client.post(confirm))]
    (welcome,) = deliver()
    manage, unsubscribe = link_path(welcome, "manage"), link_path(welcome, "unsubscribe")
    responses += [
        ("manage page", client.get(manage)),
        ("manage save", client.post(manage, data={"action": "save", "lists": "1"})),
        ("unsubscribe page", client.get(unsubscribe)),
        ("unsubscribed", client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})),
        ("bad link", client.get("/confirm/garbage")),
        ("not found", client.get("/no-such-page")),
        ("health", client.get("/healthz")),
    ]
    assert [(name, r.status_code) for name, r in responses] == [
        ("form", 200),
        ("refused origin", 403),
        ("invalid", 400),
        ("honeypot", 200),
        ("redirect", 303),
        ("thanks", 200),
        ("confirm page", 200),
        ("confirmed", 200),
        ("manage page", 200),
        ("manage save", 200),
        ("unsubscribe page", 200),
        ("unsubscribed", 200),
        ("bad link", 400),
        ("not found", 404),
        ("health", 200),
    ]
    for name, response in responses:
        assert "Set-Cookie" not in response.headers, name
    assert not client._cookies  # the client's cookie jar stayed empty
