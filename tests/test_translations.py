"""Danish first, English available: complete catalogues, the language rules, mails.

The Danish catalogue (newsletter/translations/da/LC_MESSAGES/messages.po) must
translate every message, with none fuzzy, and hold exactly the messages a fresh
extraction finds in the code and templates (`make messages` brings it up to
date). Pages rendered in Danish must not ask for any message the catalogue
lacks, which catches messages that reach `_()` as variables.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from babel.support import Translations
from flask import Flask
from flask.testing import FlaskClient

from newsletter.models import MailingList

from .fixtures.mailflow import link_path
from .fixtures.pages import public_pages, seed_site

ROOT = Path(__file__).parents[1]
CATALOGUE = ROOT / "newsletter" / "translations" / "da" / "LC_MESSAGES" / "messages.po"
ORIGIN = {"Origin": "http://newsletter.test"}
KEYWORDS = ["-k", "_l", "-k", "lazy_gettext", "--no-location"]


def read(path: Path) -> Catalog:
    """A .po or .pot file."""
    with path.open("rb") as file:
        return read_po(file)


def ids(catalog: Catalog) -> set[tuple[str | None, str]]:
    """(context, message id) of every message (the singular, for plural messages)."""
    return {(m.context, m.id if isinstance(m.id, str) else m.id[0]) for m in catalog if m.id}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """Every message in the code and templates, freshly extracted as `make messages` does."""
    pot = tmp_path_factory.mktemp("i18n") / "messages.pot"
    pybabel = Path(sys.executable).parent / "pybabel"
    subprocess.run(
        [str(pybabel), "-q", "extract", "-F", "babel.cfg", *KEYWORDS, "-o", str(pot), "."],
        cwd=ROOT,
        check=True,
    )
    return read(pot)


def test_every_danish_message_is_translated_and_none_is_fuzzy() -> None:
    catalogue = read(CATALOGUE)
    untranslated = [
        m.id
        for m in catalogue
        if m.id and (not m.string or (isinstance(m.string, tuple) and not all(m.string)))
    ]
    fuzzy = [m.id for m in catalogue if m.id and m.fuzzy]
    assert untranslated == [], f"{len(untranslated)} untranslated Danish messages"
    assert fuzzy == [], f"{len(fuzzy)} fuzzy Danish messages"


def test_the_catalogue_holds_exactly_the_messages_in_the_code(extracted: Catalog) -> None:
    catalogue = read(CATALOGUE)
    missing = sorted(ids(extracted) - ids(catalogue))
    stale = sorted(ids(catalogue) - ids(extracted))
    assert missing == [], "not in the catalogue (run `make messages`, then translate)"
    assert stale == [], "in the catalogue but no longer in the code (run `make messages`)"


def test_every_translation_keeps_its_placeholders() -> None:
    catalogue = read(CATALOGUE)
    problems = [(m.id, str(error)) for m in catalogue if m.id for error in m.check(catalogue)]
    assert problems == []


@pytest.fixture
def missed() -> Iterator[set[str]]:
    """Record every message looked up in the Danish catalogue that it does not hold."""
    seen: set[str] = set()
    original = Translations.ugettext

    def lookup(self: Translations, message: str) -> str:
        if self.files and message not in self._catalog:  # type: ignore[attr-defined]
            seen.add(message)
        return original(self, message)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Translations, "ugettext", lookup)
        patch.setattr(Translations, "gettext", lookup)
        yield seen


def test_danish_pages_ask_for_no_message_the_catalogue_lacks(
    app: Flask, client: FlaskClient, missed: set[str]
) -> None:
    seeded = seed_site()
    for state in public_pages(seeded):
        path = f"{state.start}{'&' if '?' in state.start else '?'}lang=da"
        if state.form is None:
            client.get(path)
        else:
            client.post(path, data=state.form, headers=ORIGIN)
    for data in ({}, {"email": "x" * 300}, {"email": "a@example.org", "name": "n" * 300}):
        client.post("/subscribe?lang=da", data=data, headers=ORIGIN)
    client.post("/subscribe?lang=da", data={"email": "a@example.org"})  # no Origin: 403
    assert missed == set()


# -- which language ------------------------------------------------------------------------


@pytest.fixture
def browser_client(app: Flask) -> FlaskClient:
    """A client that sends no Accept-Language unless told (the suite's usual client
    asks for English, see conftest.EnglishClient)."""
    return FlaskClient(app, app.response_class)


def heading(client: FlaskClient, path: str, **headers: str) -> str:
    """The page's lang attribute and its first heading."""
    html = client.get(path, headers=headers).get_data(as_text=True)
    lang = html.split('<html lang="', 1)[1].split('"', 1)[0]
    return lang + " " + html.split("<h1>", 1)[1].split("</h1>", 1)[0]


def test_danish_is_the_default_and_english_is_there_for_who_asks(
    browser_client: FlaskClient, default_list: MailingList
) -> None:
    client = browser_client
    assert heading(client, "/subscribe") == "da Tilmeld dig vores nyhedsbrev"
    english = "en Subscribe to our newsletter"
    assert heading(client, "/subscribe", **{"Accept-Language": "en-GB,en;q=0.9"}) == english
    assert heading(client, "/subscribe", **{"Accept-Language": "fr, en;q=0.5"}) == english
    assert heading(client, "/subscribe", **{"Accept-Language": "fr"}) == (
        "da Tilmeld dig vores nyhedsbrev"
    )
    # The switch (?lang=) beats Accept-Language, both ways.
    assert heading(client, "/subscribe?lang=en", **{"Accept-Language": "da"}) == english
    assert heading(client, "/subscribe?lang=da", **{"Accept-Language": "en"}) == (
        "da Tilmeld dig vores nyhedsbrev"
    )
    assert heading(client, "/subscribe?lang=xx") == "da Tilmeld dig vores nyhedsbrev"


def test_token_pages_speak_the_subscribers_language_unless_switched(
    app: Flask, browser_client: FlaskClient
) -> None:
    client = browser_client
    seeded = seed_site()  # the seeded subscribers chose Danish
    manage = seeded.paths["manage"]
    assert heading(client, manage, **{"Accept-Language": "en"}) == "da Dine indstillinger"
    assert heading(client, f"{manage}?lang=en") == "en Your preferences"


@pytest.mark.parametrize(
    ("how", "subject"),
    [
        ({"path": "/subscribe"}, "Bekræft din tilmelding"),
        ({"path": "/subscribe?lang=en"}, "Please confirm your subscription"),
        ({"path": "/subscribe", "Accept-Language": "en"}, "Please confirm your subscription"),
        ({"path": "/subscribe?lang=da", "Accept-Language": "en"}, "Bekræft din tilmelding"),
    ],
    ids=["default", "switched-to-english", "english-browser", "switched-to-danish"],
)
def test_mails_come_in_the_language_of_the_signup_page(
    browser_client: FlaskClient,
    default_list: MailingList,
    deliver: Callable[[], list[EmailMessage]],
    how: dict[str, str],
    subject: str,
) -> None:
    client = browser_client
    headers = {**ORIGIN, **{k: v for k, v in how.items() if k != "path"}}
    response = client.post(how["path"], data={"email": "sprog@example.org"}, headers=headers)
    assert response.status_code == 200
    (confirmation,) = deliver()
    assert confirmation["Subject"] == subject
    client.post(link_path(confirmation, "confirm"))
    (welcome,) = deliver()
    danish = subject.startswith("Bekræft")
    assert welcome["Subject"] == ("Velkommen til Nyhedsbrev" if danish else "Welcome to Nyhedsbrev")
    assert welcome["Content-Language"] in (None, "da" if danish else "en")
