"""Messages raised by services reach staff pages in the page's language.

The console has no language switch of its own: Accept-Language decides, so a
Danish member of staff is a client that asks for ``da``. Each case triggers a
refusal that only the service (not the form) makes and checks that the Danish
page says it in Danish and not in English, and the English page in English.
Outside a request (commands, the worker, direct calls) the messages stay
English, and an import's errors are stored in English and shown in the
language of whoever reads them.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select
from werkzeug.test import TestResponse

from newsletter.campaigns.service import create_campaign
from newsletter.extensions import db
from newsletter.imports.run import run_next_import
from newsletter.imports.validate import MORE_ERRORS
from newsletter.models import ImportJob, ImportStatus, MailingList, Role
from newsletter.service_messages import in_page_language
from newsletter.validation import InvalidInput

from .fixtures.staff import StaffClient

LANGUAGES = ["da", "en"]
SENDER = "Inklusio <nyhedsbrev@newsletter.test>"


@pytest.fixture
def console(staff_client: Callable[..., StaffClient]) -> Callable[..., StaffClient]:
    """Factory: a logged-in member of staff whose browser asks for ``lang``."""

    def make(lang: str, role: Role = Role.EDITOR) -> StaffClient:
        member = staff_client(role)
        member.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = lang
        return member

    return make


def page(response: TestResponse) -> str:
    """The page's text with entities decoded (apostrophes, quotes)."""
    return html.unescape(response.get_data(as_text=True))


def says(text: str, lang: str, danish: str, english: str) -> None:
    """``text`` has the message in ``lang`` and not in the other language."""
    expected, other = (danish, english) if lang == "da" else (english, danish)
    assert expected in text
    assert other not in text


def compose(**changes: str) -> dict[str, str]:
    """The compose form as a browser sends it."""
    data = {"list_slug": "nyhedsbrev", "subject": "Nyt i november", "sender": SENDER}
    return {**data, "body": "# Nyt\n\nHej!\n", **changes}


# -- campaigns ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_campaign_refusals(
    console: Callable[..., StaffClient], default_list: MailingList, lang: str
) -> None:
    editor = console(lang)
    refused = editor.post("/admin/campaigns/new", compose(subject="Nyt\x0bi november"))
    assert refused.status_code == 200
    says(
        page(refused),
        lang,
        "Emnet indeholder kontroltegn.",
        "The subject contains control characters.",
    )
    refused = editor.post("/admin/campaigns/new", compose(sender="Inklusio <nyhedsbrev@>"))
    says(
        page(refused),
        lang,
        "Afsenderens adresse er ikke gyldig.",
        "The sender's address is not valid.",
    )


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_refused_campaign_action_names_the_state_in_the_page_language(
    console: Callable[..., StaffClient], default_list: MailingList, lang: str
) -> None:
    editor = console(lang)
    draft = create_campaign("nyhedsbrev", "Nyt i november", "Hej", SENDER)
    refused = editor.post(f"/admin/campaigns/{draft.id}/pause", follow_redirects=True)
    says(
        page(refused),
        lang,
        "Udsendelsen kan ikke sættes på pause: den er kladde.",
        "This campaign cannot be paused: it is draft.",
    )


# -- subscriber search --------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_search_refusals(
    console: Callable[..., StaffClient], default_list: MailingList, lang: str
) -> None:
    viewer = console(lang, Role.VIEWER)
    for query, danish, english in [
        ("q=a", "Skriv mindst 3 tegn for at søge.", "Type at least 3 characters to search."),
        ("status=deleted", "Ukendt status.", "Unknown status."),
        ("q=ab%0Dc", "Søgningen indeholder kontroltegn.", "The search contains control"),
    ]:
        says(page(viewer.get(f"/admin/subscribers?{query}")), lang, danish, english)


# -- staff accounts -----------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_staff_account_refusals(console: Callable[..., StaffClient], lang: str) -> None:
    owner = console(lang, Role.OWNER)
    taken = owner.post("/admin/staff/new", {"email": owner.user.email, "role": "editor"})
    says(
        page(taken),
        lang,
        "Der findes allerede en medarbejderkonto med denne adresse.",
        "A staff account with this address already exists.",
    )
    address = "ny.medarbejder@example.org"
    weak = owner.post("/admin/staff/new", {"email": address, "role": "editor", "password": address})
    says(
        page(weak),
        lang,
        "Adgangskoden må ikke være e-mailadressen.",
        "The password must not be the e-mail address.",
    )
    # The shared input rules' message (validation.py) too.
    bad = owner.post("/admin/staff/new", {"email": "not-an-address", "role": "editor"})
    says(
        page(bad),
        lang,
        "Det er ikke en gyldig e-mailadresse.",
        "This is not a valid e-mail address.",
    )
    last = owner.post(
        f"/admin/staff/{owner.user.id}", {"name": "", "role": "editor", "is_active": "y"}
    )
    says(
        page(last),
        lang,
        "Der skal altid være mindst én aktiv ejer.",
        "There must always be at least one active owner.",
    )
    wrong = owner.post(
        "/admin/account/password",
        {"current_password": "nope", "new_password": "x" * 20, "repeat": "x" * 20},
    )
    says(
        page(wrong),
        lang,
        "Den nuværende adgangskode er forkert.",
        "The current password is wrong.",
    )


# -- lists --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_list_refusals(
    console: Callable[..., StaffClient], default_list: MailingList, lang: str
) -> None:
    editor = console(lang)
    base = {"name": "Kurser", "consent_text": "Ja tak."}
    duplicate = editor.post("/admin/lists/new", {**base, "slug": "nyhedsbrev"})
    says(
        page(duplicate),
        lang,
        "Der findes allerede en liste med det korte navn 'nyhedsbrev'.",
        "A list named 'nyhedsbrev' exists already.",
    )
    control = editor.post("/admin/lists/new", {**base, "slug": "kurser", "description": "a\x00b"})
    says(
        page(control),
        lang,
        "Teksten indeholder kontroltegn.",
        "The text contains control characters.",
    )
    refused = editor.post(f"/admin/lists/{default_list.id}/archive", follow_redirects=True)
    says(
        page(refused),
        lang,
        "Gør en anden liste til standardliste, før du arkiverer denne.",
        "Make another list the default before archiving this one.",
    )


# -- imports ------------------------------------------------------------------------------------


def upload(member: StaffClient, mailing_list: MailingList, data: bytes) -> TestResponse:
    """POST the upload form with a file."""
    return member.post(
        "/admin/imports",
        data={"file": (io.BytesIO(data), "people.csv"), "list_id": str(mailing_list.id)},
        content_type="multipart/form-data",
    )


def latest_job() -> ImportJob:
    """The newest import job, fresh from the database."""
    db.session.commit()
    job = db.session.scalars(select(ImportJob).order_by(ImportJob.id.desc())).first()
    assert job is not None
    db.session.refresh(job)
    return job


@pytest.mark.parametrize("lang", LANGUAGES)
def test_upload_refusals(
    console: Callable[..., StaffClient], default_list: MailingList, lang: str
) -> None:
    editor = console(lang)
    empty = upload(editor, default_list, b"")
    assert empty.status_code == 400
    says(page(empty), lang, "Filen er tom.", "The file is empty.")
    latin = upload(editor, default_list, "email\nJørgen@example.org\n".encode("cp1252"))
    says(
        page(latin),
        lang,
        "Filen er ikke UTF-8 (den er måske Windows-1252 eller Latin-1).",
        "The file is not UTF-8 (it may be Windows-1252 or Latin-1).",
    )
    nul = upload(editor, default_list, b"email,\na@example.org,A\x00B\n")
    says(page(nul), lang, "(kolonne 2): Indeholder NUL-tegn.", "(column 2): Contains NUL.")
    # csv's English reason ("unexpected end of data") becomes a sentence of ours.
    unclosed = upload(editor, default_list, b'email,name\na@example.org,"Anna\n')
    assert unclosed.status_code == 400
    says(
        page(unclosed),
        lang,
        "Filen kan ikke læses som CSV: et felt i anførselstegn er ikke afsluttet",
        "The file cannot be read as CSV: a quoted field is not closed",
    )
    assert "unexpected end of data" not in page(unclosed)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_mapping_page_and_its_refusal(
    console: Callable[..., StaffClient], default_list: MailingList, lang: str
) -> None:
    editor = console(lang)
    upload(editor, default_list, b"E-mail;Navn\nanna@example.org;Anna\n")
    job = latest_job()
    mapping = page(editor.get(f"/admin/imports/{job.id}"))
    says(mapping, lang, "adskilt af semikolon.", "separated by semicolon.")
    refused = editor.post(f"/admin/imports/{job.id}/queue", {"email": "", "name": "1"})
    assert refused.status_code == 400
    says(
        page(refused),
        lang,
        "Vælg den kolonne, der indeholder e-mailadressen.",
        "Choose the column that holds the e-mail address.",
    )


ROWS_WITH_ERRORS = (
    b"email,consented_at\n"
    b"ok@example.org,2024-01-01\n"  # line 2
    b"nope,\n"  # 3: not an address (the shared rules' message)
    b"OK@example.org,\n"  # 4: the same address as line 2
    b"later@example.org,2999-01-01\n"  # 5: in the future
    b"slash@example.org,31/12/2023\n"  # 6: not ISO 8601 (the value is quoted back)
)


def test_row_errors_are_stored_in_english_and_shown_in_the_readers_language(
    console: Callable[..., StaffClient], default_list: MailingList
) -> None:
    danish, english = console("da"), console("en")
    upload(danish, default_list, ROWS_WITH_ERRORS)
    job = latest_job()
    danish.post(f"/admin/imports/{job.id}/queue", {"email": "0", "consented_at": "1"})
    db.session.commit()
    assert run_next_import() == 1  # the worker: no request, no page language

    job = latest_job()
    assert job.status == ImportStatus.FAILED
    stored = [e["message"] for e in job.errors]
    assert stored == [
        "This is not a valid e-mail address.",
        "The same address as line 2.",
        "Lies in the future.",
        "Not an ISO 8601 date or time ('31/12/2023'); write e.g. 2024-03-01 or "
        "2024-03-01T14:05:00+01:00.",
    ]
    shown = {
        lang: page(member.get(f"/admin/imports/{job.id}"))
        for lang, member in (("da", danish), ("en", english))
    }
    for lang, text in shown.items():
        says(
            text,
            lang,
            "Linje 3 (email): Det er ikke en gyldig e-mailadresse.",
            "Line 3 (email): This is not a valid e-mail address.",
        )
        says(text, lang, "Samme adresse som linje 2.", "The same address as line 2.")
        says(text, lang, "Ligger i fremtiden.", "Lies in the future.")
        says(
            text,
            lang,
            "Ikke en dato eller et tidspunkt i ISO 8601 ('31/12/2023'); skriv fx",
            "Not an ISO 8601 date or time ('31/12/2023'); write e.g.",
        )
    assert [e["message"] for e in latest_job().errors] == stored  # showing changed nothing


def test_a_discarded_import_says_so_in_the_readers_language(
    console: Callable[..., StaffClient], default_list: MailingList
) -> None:
    danish, english = console("da"), console("en")
    upload(danish, default_list, b"email\na@example.org\n")
    job = latest_job()
    assert danish.post(f"/admin/imports/{job.id}/discard").status_code == 302
    assert latest_job().errors[0]["message"] == "Discarded before it was queued."
    says(
        page(danish.get(f"/admin/imports/{job.id}")),
        "da",
        "Kasseret, før den blev sat i kø.",
        "Discarded before it was queued.",
    )
    says(
        page(english.get(f"/admin/imports/{job.id}")),
        "en",
        "Kasseret, før den blev sat i kø.",
        "Discarded before it was queued.",
    )
    again = danish.post(f"/admin/imports/{job.id}/discard", follow_redirects=True)
    says(
        page(again),
        "da",
        "Kun en import, der ikke er sat i kø, kan kasseres.",
        "Only an import that has not been queued can be discarded.",
    )


# -- outside a request: English -----------------------------------------------------------------


def test_direct_calls_and_commands_stay_english(
    app: Flask, runner: FlaskCliRunner, default_list: MailingList
) -> None:
    with pytest.raises(InvalidInput, match="The subject contains control characters"):
        create_campaign("nyhedsbrev", "Nyt\x0bi november", "Hej", SENDER)
    db.session.rollback()
    result = runner.invoke(
        args=["list", "create", "nyhedsbrev", "--name", "Igen", "--consent-text", "Ja."]
    )
    assert result.exit_code != 0
    assert "A list named 'nyhedsbrev' exists already." in result.output


def test_stored_messages_with_values_find_their_msgid(app: Flask) -> None:
    stored = MORE_ERRORS % {"n": 7}
    assert in_page_language(stored) == "... and 7 more errors."  # no request: as stored
    # A fresh app context each: Flask-Babel keeps the locale it chose in ``g``.
    with app.app_context(), app.test_request_context(headers={"Accept-Language": "da"}):
        assert in_page_language(stored) == "... and 7 more errors."  # no templates given
        assert in_page_language(stored, [MORE_ERRORS]) == "... og 7 fejl mere."
        assert in_page_language("Lies in the future.") == "Ligger i fremtiden."
        assert in_page_language("Something stored long ago.") == "Something stored long ago."
    with app.app_context(), app.test_request_context(headers={"Accept-Language": "en"}):
        assert in_page_language(stored, [MORE_ERRORS]) == "... and 7 more errors."
