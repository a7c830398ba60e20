"""Malformed requests are answered 4xx with the app's own error page, never 500.

Route ids outside the database's integer range or written in other scripts'
digits, query arguments that are not ASCII numbers or representable dates, NUL
in filters, lone surrogates in JSON text, TOTP codes in other digits. And the
staff lists' second pages (the pager once overwrote the translation function).
(The same classes are fuzzed in test_hostile_input.py.)
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.models import AuditEntry, Campaign, ImportJob, MailingList, Role, StaffUser

from .fixtures.staff import STAFF_PASSWORD, StaffClient, csrf_from

BIG_IDS = ["2147483648", "9223372036854775808", str(2**70)]
ARABIC_ONE = "\u0661"  # ARABIC-INDIC DIGIT ONE: int() reads it as 1
SUPERSCRIPT_TWO = "\u00b2"  # isdigit() is True, int() raises
FULLWIDTH_WRONG = "".join(chr(0xFF10 + n) for n in range(1, 7))  # "123456", fullwidth
DANISH = {"Accept-Language": "da"}


def staff_id_paths(app: Flask) -> list[tuple[str, str]]:
    """(method, path template with {id}) of every staff route that takes a row id."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/admin/") and rule.arguments:
            method = "GET" if "GET" in (rule.methods or ()) else "POST"
            found.append((method, re.sub(r"<[^>]+>", "{id}", rule.rule)))
    return found


def assert_error_page(response, status: int, message: str) -> None:
    """The app's plain error page with ``message``; no traceback."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text[:400]
    assert f"<h1>{status} " in text
    assert message in text
    assert "Traceback" not in text


def arabic(code: str) -> str:
    """ASCII digits written in Arabic-Indic digits."""
    return "".join(chr(0x0660 + int(digit)) for digit in code)


def public_campaign(subject: str = "Offentlig") -> Campaign:
    """A started, public campaign of the default list."""
    made = create_campaign("nyhedsbrev", subject, "Hej")
    start_campaign(made.id)
    db.session.execute(update(Campaign).where(Campaign.id == made.id).values(is_public=True))
    db.session.commit()
    return made


@pytest.mark.parametrize("field", ["email", "name", "locale", "lists"])
def test_api_refuses_a_lone_surrogate_naming_the_field(
    client: FlaskClient, default_list: MailingList, field: str
) -> None:
    body: dict[str, object] = {"email": "someone@example.org"}
    body[field] = ["\udcff"] if field == "lists" else "ok \udcff"
    response = client.post(
        "/api/v1/subscriptions", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert "Unicode" in response.get_json()["error"]


@pytest.mark.parametrize("raw", [*BIG_IDS, "0", "-1", "0{id}", "{arabic}", SUPERSCRIPT_TWO])
def test_public_ids_outside_the_integer_range_or_ascii_are_not_found(
    client: FlaskClient, default_list: MailingList, raw: str
) -> None:
    made = public_campaign()
    assert client.get(f"/archive/{made.id}").status_code == 200
    path = raw.format(id=made.id, arabic=arabic(str(made.id)))
    assert_error_page(client.get(f"/archive/{path}"), 404, "Not Found")
    assert client.get(f"/privacy/{path}").status_code == 404


def test_staff_routes_refuse_ids_outside_the_integer_range(
    app: Flask, staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    owner = staff_client(Role.OWNER)
    paths = staff_id_paths(app)
    assert len(paths) >= 20
    for method, template in paths:
        for raw in [*BIG_IDS, ARABIC_ONE]:
            path = template.format(id=raw)
            response = owner.get(path) if method == "GET" else owner.post(path)
            assert response.status_code == 404, (path, response.status_code)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/campaigns?page=" + SUPERSCRIPT_TWO,
        "/admin/imports?page=" + ARABIC_ONE,
        "/admin/audit?page=0",
        "/admin/audit?page=x",
        "/admin/subscribers?before=" + SUPERSCRIPT_TWO,
        "/admin/subscribers?before=" + ARABIC_ONE,
        "/admin/subscribers?before=2147483648",
    ],
)
def test_staff_page_and_cursor_arguments_must_be_ascii_numbers(
    staff_client: Callable[..., StaffClient], path: str
) -> None:
    owner = staff_client(Role.OWNER)
    assert_error_page(owner.get(path), 400, "must be a whole number from 1 to")


def test_archive_page_must_be_an_ascii_number(client: FlaskClient) -> None:
    for raw in (SUPERSCRIPT_TWO, ARABIC_ONE, "0", "-1", "1" * 5000):
        response = client.get(f"/archive?page={raw}")
        assert_error_page(response, 400, "must be a whole number from 1 to 1000")
    assert client.get("/archive?page=1").status_code == 200
    assert client.get("/archive?page=").status_code == 200


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("actor=a%00b", "contains control characters"),
        ("action=staff.%00", "contains control characters"),
        ("object_type=%00", "contains control characters"),
        ("object_id=1%0A2", "contains control characters"),
        ("actor=" + "a" * 321, "longer than 320 characters"),
        ("until=9999-12-31", "between 0001-01-01 and 9999-12-30"),
        ("since=9999-12-31", "between 0001-01-01 and 9999-12-30"),
        ("since=garbage", "YYYY-MM-DD"),
        ("since=%D9%A2%D9%A0%D9%A2%D9%A4-01-01", "YYYY-MM-DD"),  # Arabic-Indic year
        ("until=2024-02-30", "YYYY-MM-DD"),
    ],
)
def test_audit_filters_refuse_control_characters_and_unrepresentable_dates(
    staff_client: Callable[..., StaffClient], query: str, message: str
) -> None:
    owner = staff_client(Role.OWNER)
    assert_error_page(owner.get(f"/admin/audit?{query}"), 400, message)


def test_audit_dates_at_the_edges_of_the_range_work(
    staff_client: Callable[..., StaffClient],
) -> None:
    owner = staff_client(Role.OWNER)
    everything = owner.get("/admin/audit?since=0001-01-01&until=9999-12-30")
    assert everything.status_code == 200
    assert "staff.login" in everything.get_data(as_text=True)


def test_bad_request_pages_are_translated(
    client: FlaskClient, staff_client: Callable[..., StaffClient]
) -> None:
    owner = staff_client(Role.OWNER)
    audit = owner.get("/admin/audit?until=9999-12-31", headers=DANISH)
    assert_error_page(audit, 400, "Datoen i until skal")
    archive = client.get(f"/archive?page={SUPERSCRIPT_TWO}", headers=DANISH)
    assert_error_page(archive, 400, "page skal være et helt tal fra 1 til 1000")
    assert "Forkert forespørgsel" in archive.get_data(as_text=True)  # Bad Request


def test_two_factor_codes_in_other_scripts_digits_are_read_as_digits(
    app: Flask, staff_client: Callable[..., StaffClient]
) -> None:
    editor = staff_client(Role.EDITOR)
    page = editor.get("/admin/account/two-factor").get_data(as_text=True)
    secret = re.search(r"<code>([A-Z2-7]{32})</code>", page).group(1)
    for wrong in (arabic("000000"), SUPERSCRIPT_TWO * 6, FULLWIDTH_WRONG):
        response = editor.post("/admin/account/two-factor", {"code": wrong})
        assert response.status_code == 200
        assert "does not match" in response.get_data(as_text=True)
    code = pyotp.TOTP(secret).at(time.time() - 30)
    assert editor.post("/admin/account/two-factor", {"code": arabic(code)}).status_code == 302

    client = app.test_client()
    page = client.get("/admin/login")
    login = {"email": editor.user.email, "password": STAFF_PASSWORD, "csrf_token": csrf_from(page)}
    client.post("/admin/login", data=login)
    token = csrf_from(client.get("/admin/login/code"))
    bad = client.post("/admin/login/code", data={"code": SUPERSCRIPT_TWO * 6, "csrf_token": token})
    assert bad.status_code == 200
    assert "wrong or was used already" in bad.get_data(as_text=True)
    good = client.post(
        "/admin/login/code", data={"code": arabic(pyotp.TOTP(secret).now()), "csrf_token": token}
    )
    assert good.status_code == 302
    assert client.get("/admin/").status_code == 200


def _second_page(owner: StaffClient, path: str, count: int, row: Callable[[int], object]) -> str:
    """Page 2 of a staff list once ``count`` rows made by ``row`` are stored: 200,
    with links back to page 1 and on to page 3."""
    db.session.add_all(row(n) for n in range(count))
    db.session.commit()
    response = owner.get(f"{path}?page=2&lang=da")
    text = response.get_data(as_text=True)
    assert response.status_code == 200, text[:400]
    assert 'rel="prev"' in text
    assert "page=1" in text
    assert "Side 2" in text  # the pager's own text, translated
    return text


def test_second_page_of_the_audit_log(
    staff_client: Callable[..., StaffClient],
) -> None:
    owner = staff_client(Role.OWNER)
    start = datetime.now(UTC) - timedelta(days=1)

    def entry(n: int) -> AuditEntry:
        return AuditEntry(
            actor_email="bulk@example.org",
            action="test.bulk",
            object_type="test",
            object_id=str(n),
            details={},
            occurred_at=start + timedelta(seconds=n),
        )

    text = _second_page(owner, "/admin/audit", 120, entry)
    assert 'rel="next"' in text


def test_second_page_of_the_campaign_list(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    owner = staff_client(Role.OWNER)
    text = _second_page(
        owner,
        "/admin/campaigns",
        55,
        lambda n: Campaign(
            list_id=default_list.id, subject=f"Nr. {n}", body_markdown="Hej", sender=""
        ),
    )
    assert "Nr. 0" in text


def test_second_page_of_the_import_list(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    owner = staff_client(Role.OWNER)
    user = db.session.get(StaffUser, owner.user.id)
    text = _second_page(
        owner,
        "/admin/imports",
        25,
        lambda n: ImportJob(
            list_id=default_list.id, created_by_id=user.id, filename=f"fil-{n}.csv"
        ),
    )
    assert "fil-0.csv" in text
