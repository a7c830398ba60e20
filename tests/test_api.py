"""The JSON signup API: POST /api/v1/subscriptions.

202 whatever the address's state, JSON errors that name the field, limits on
the body, and CORS only for ALLOWED_ORIGINS.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.validation import MAX_EMAIL, MAX_LISTS

from .fixtures.intake import drain_intake
from .fixtures.mailflow import NOTHING, counts, link_path, text_of

URL = "/api/v1/subscriptions"
SITE = "https://inklusio.dk"
EVIL = "https://evil.example"


# --- helpers -----------------------------------------------------------------


def api(
    client: FlaskClient,
    body: Any,
    *,
    origin: str | None = None,
    raw: str | bytes | None = None,
    content_type: str = "application/json",
) -> TestResponse:
    """POST to the API: ``body`` as JSON, or ``raw`` bytes as they are."""
    headers = {"Origin": origin} if origin else {}
    data = raw if raw is not None else json.dumps(body)
    return client.post(URL, data=data, content_type=content_type, headers=headers)


def json_error(response: TestResponse, status: int, field: str | None = None) -> dict[str, Any]:
    """Check a JSON error answer: status, a message, and the field when one is at fault."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict)
    assert isinstance(body.get("error"), str)
    assert body["error"]
    if field is None:
        assert "field" not in body
    else:
        assert body.get("field") == field, body
    assert "Set-Cookie" not in response.headers
    return body


@pytest.fixture
def site_client(app_factory: Callable[..., Flask]) -> FlaskClient:
    """A client of an app that lets the company's static site call the API."""
    return app_factory(ALLOWED_ORIGINS=[SITE]).test_client()


# --- success ----------------------------------------------------------------------


def test_json_signup_is_accepted_and_a_confirmation_mail_is_delivered(
    client: FlaskClient,
    default_list: MailingList,
    make_list: Callable[..., MailingList],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    courses = make_list("kurser", "Kurser")
    response = api(
        client,
        {"email": "Api.User@Example.org", "name": "Ada", "lists": ["kurser"], "locale": "en"},
    )
    assert response.status_code == 202
    assert response.get_json() == {"status": "accepted", "message": "Check your inbox to confirm."}
    assert "Set-Cookie" not in response.headers

    (mail,) = deliver()
    assert "Api.User@example.org" in str(mail["To"])
    assert mail["Subject"] == "Please confirm your subscription"  # locale "en" honoured
    assert "Kurser" in text_of(mail)
    db.session.commit()
    (event,) = db.session.scalars(select(ConsentEvent)).all()
    assert (event.event, event.channel, event.list_id) == ("requested", "api", courses.id)
    found = db.session.scalars(select(Subscriber)).one()
    assert (found.email_key, found.name, found.locale) == ("api.user@example.org", "Ada", "en")
    db.session.commit()
    assert client.post(link_path(mail, "confirm")).status_code == 200
    db.session.commit()
    assert db.session.scalars(select(Subscription.status)).one() == SubscriptionStatus.ACTIVE
    db.session.commit()


def test_no_lists_means_the_default_list(
    client: FlaskClient, default_list: MailingList, make_list: Callable[..., MailingList]
) -> None:
    make_list("kurser", "Kurser")
    for body in ({"email": "a@example.org"}, {"email": "b@example.org", "lists": []}):
        assert api(client, body).status_code == 202
    db.session.commit()
    drain_intake()
    assert set(db.session.scalars(select(Subscription.list_id))) == {default_list.id}
    db.session.commit()


def test_charset_in_content_type_is_fine(client: FlaskClient, default_list: MailingList) -> None:
    response = api(
        client,
        {"email": "jørgen@eksempel.dk"},
        content_type="application/json; charset=utf-8",
    )
    assert response.status_code == 202
    assert counts()["subscribers"] == 1


# --- bad requests -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        ("email=a%40example.org", "application/x-www-form-urlencoded"),
        ('{"email": "a@example.org"}', "text/plain"),
        ('{"email": "a@example.org"}', "multipart/form-data; boundary=x"),
        ("", ""),
    ],
)
def test_non_json_content_type_gets_415(
    client: FlaskClient, default_list: MailingList, raw: str, content_type: str
) -> None:
    json_error(api(client, None, raw=raw, content_type=content_type), 415)
    assert counts() == NOTHING


@pytest.mark.parametrize(
    "raw",
    [
        "{",
        "",
        "not json",
        '{"email": "a@example.org",}',
        b'{"email": "\xff@example.org"}',
        "[]",
        '["a@example.org"]',
        '"a@example.org"',
        "42",
        "null",
        "[" * 20000 + "]" * 20000,
        '{"a":' * 9000 + "1" + "}" * 9000,
    ],
    ids=[
        "truncated",
        "empty",
        "text",
        "trailing-comma",
        "bad-utf8",
        "array",
        "array-of-address",
        "string",
        "number",
        "null",
        "deeply-nested-array",
        "deeply-nested-object",
    ],
)
def test_body_that_is_not_a_json_object_gets_400(
    client: FlaskClient, default_list: MailingList, raw: str | bytes
) -> None:
    json_error(api(client, None, raw=raw), 400)
    assert counts() == NOTHING


OK = "ok@example.org"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "email"),
        ({"email": None}, "email"),
        ({"email": ""}, "email"),
        ({"email": "   "}, "email"),
        ({"name": "Ada"}, "email"),
        ({"email": 5}, "email"),
        ({"email": True}, "email"),
        ({"email": ["a@example.org"]}, "email"),
        ({"email": {"address": "a@example.org"}}, "email"),
        ({"email": "not-an-address"}, "email"),
        ({"email": "a@b@example.org"}, "email"),
        ({"email": "x" * MAX_EMAIL + "@example.org"}, "email"),
        ({"email": OK, "name": 5}, "name"),
        ({"email": OK, "name": "Ada\r\nBcc: x@example.org"}, "name"),
        ({"email": OK, "name": "n" * 201}, "name"),
        ({"email": OK, "lists": "nyhedsbrev"}, "lists"),
        ({"email": OK, "lists": {"nyhedsbrev": True}}, "lists"),
        ({"email": OK, "lists": ["no-such-list"]}, "lists"),
        ({"email": OK, "lists": ["nyhedsbrev", "no-such-list"]}, "lists"),
        ({"email": OK, "lists": [5]}, "lists"),
        ({"email": OK, "lists": ["Not A Slug"]}, "lists"),
        ({"email": OK, "lists": [f"l{i}" for i in range(MAX_LISTS + 1)]}, "lists"),
        ({"email": OK, "locale": "xx"}, "locale"),
        ({"email": OK, "locale": "DA"}, "locale"),
        ({"email": OK, "locale": 5}, "locale"),
        ({"email": OK, "locale": ["da"]}, "locale"),
    ],
)
def test_bad_field_gets_422_naming_it(
    client: FlaskClient, default_list: MailingList, body: dict[str, Any], field: str
) -> None:
    json_error(api(client, body), 422, field)
    assert counts() == NOTHING


def test_unknown_list_error_names_the_slug(client: FlaskClient, default_list: MailingList) -> None:
    body = json_error(api(client, {"email": OK, "lists": ["nope"]}), 422, "lists")
    assert "nope" in body["error"]


def test_errors_are_english_whatever_the_accept_language(
    client: FlaskClient, default_list: MailingList
) -> None:
    """Service messages are translated for pages; the API keeps one language."""
    response = client.post(
        "/api/v1/subscriptions",
        json={"email": OK, "lists": ["nope"]},
        headers={"Accept-Language": "da"},
    )
    assert json_error(response, 422, "lists")["error"] == "Unknown list: nope."


def test_body_over_max_content_length_gets_413_as_json(
    app: Flask, client: FlaskClient, default_list: MailingList
) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    raw = json.dumps({"email": OK, "name": "x" * limit})
    assert len(raw.encode()) > limit
    json_error(api(client, None, raw=raw), 413)
    assert counts() == NOTHING
    # Just under the limit is read (and refused for the over-long name, not the size).
    small = json.dumps({"email": OK, "name": "x" * 300})
    json_error(api(client, None, raw=small), 422, "name")


def test_wrong_method_and_unknown_api_path_answer_json(client: FlaskClient) -> None:
    json_error(client.get(URL), 405)
    json_error(client.post("/api/v1/nothing-here", json={}), 404)


def test_rate_limited_api_answers_429_as_json(
    app_factory: Callable[..., Flask], default_list: MailingList
) -> None:
    limited = app_factory(RATELIMIT_ENABLED=True, SIGNUP_RATE_LIMIT="2 per minute").test_client()
    assert api(limited, {"email": "one@example.org"}).status_code == 202
    assert api(limited, {"email": "two@example.org"}).status_code == 202
    before = counts()
    json_error(api(limited, {"email": "three@example.org"}), 429)
    assert counts() == before


# --- CORS -------------------------------------------------------------------------


def preflight(client: FlaskClient, origin: str | None) -> TestResponse:
    """What a browser sends before a cross-origin JSON POST."""
    headers = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    if origin:
        headers["Origin"] = origin
    return client.options(URL, headers=headers)


def test_preflight_from_an_allowed_origin_is_answered(site_client: FlaskClient) -> None:
    response = preflight(site_client, SITE)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "content-type" in response.headers["Access-Control-Allow-Headers"].lower()
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    "origin",
    [EVIL, "http://inklusio.dk", "https://inklusio.dk.evil.example", "null", None],
)
def test_preflight_from_another_origin_is_refused(
    site_client: FlaskClient, origin: str | None
) -> None:
    response = preflight(site_client, origin)
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Methods" not in response.headers


def test_post_from_an_allowed_origin_gets_cors_headers(
    site_client: FlaskClient, default_list: MailingList
) -> None:
    response = api(site_client, {"email": "site@example.org"}, origin=SITE)
    assert response.status_code == 202
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    # Errors too, so the site's script can show which field is wrong.
    error = api(site_client, {"email": "nope"}, origin=SITE)
    json_error(error, 422, "email")
    assert error.headers["Access-Control-Allow-Origin"] == SITE


@pytest.mark.parametrize("headers", [{"Origin": EVIL}, {"Referer": f"{EVIL}/page"}])
def test_post_from_a_disallowed_origin_is_refused(
    site_client: FlaskClient, default_list: MailingList, headers: dict[str, str]
) -> None:
    response = site_client.post(URL, json={"email": "victim@example.org"}, headers=headers)
    json_error(response, 403)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert counts() == NOTHING


def test_post_without_origin_is_a_server_to_server_call_and_accepted(
    site_client: FlaskClient, default_list: MailingList
) -> None:
    response = api(site_client, {"email": "server@example.org"})
    assert response.status_code == 202
    assert "Access-Control-Allow-Origin" not in response.headers
    assert counts()["subscribers"] == 1


def test_same_origin_post_needs_no_cors(client: FlaskClient, default_list: MailingList) -> None:
    response = api(client, {"email": "same@example.org"}, origin="http://newsletter.test")
    assert response.status_code == 202
    assert "Access-Control-Allow-Origin" not in response.headers


# --- no enumeration ---------------------------------------------------------------


def test_identical_202_for_new_pending_and_active_addresses(
    client: FlaskClient,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    subscribed: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    subscribed("active@example.org")
    subscribe("pending@example.org")
    before = counts()
    new = api(client, {"email": "new@example.org"})
    pending = api(client, {"email": "pending@example.org"})
    active = api(client, {"email": "Active@Example.org"})
    for response in (pending, active):
        assert response.status_code == new.status_code == 202
        assert response.data == new.data
        assert sorted(response.headers.items()) == sorted(new.headers.items())
    # Only the new address gets a mail; the active one stays active.
    assert [str(m["To"]) for m in deliver()] == ["new@example.org"]
    assert counts()["subscribers"] == before["subscribers"] + 1
    db.session.commit()
    status = db.session.scalars(
        select(Subscription.status)
        .join(Subscriber)
        .where(Subscriber.email_key == "active@example.org")
    ).one()
    assert status == SubscriptionStatus.ACTIVE
    db.session.commit()
