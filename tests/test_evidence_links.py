"""Evidence keeps the page, never a capability link (ledger.evidence.page_of).

The links in mails carry signed tokens (``/manage/<token>`` never expires and
can erase the subscriber), and every staff member reads the ledger. So an
event keeps scheme, host and path with the token replaced by ``…``, and no
query string; migration 0007 removes the links that older events hold.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import random
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.ledger.evidence import MAX_SOURCE_URL, REDACTED, TOKEN_ROUTES, page_of
from newsletter.models import Channel, ConsentEvent, ConsentEventType, MailingList, Role, Subscriber
from newsletter.tokens import Purpose, make_token

from .fixtures.intake import drain_intake
from .fixtures.ledger import seal_and_verify
from .fixtures.mailflow import link_path
from .fixtures.properties import PROPERTIES
from .fixtures.staff import StaffClient
from .test_import import run as run_import
from .test_migrations import empty_database_url, fresh_app  # noqa: F401 - fixtures used here

PROPERTY = settings(PROPERTIES, max_examples=300)
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
# Every public route with a token, as (route, what may follow the token).
LINK_ROUTES = [
    ("confirm", ""),
    ("unsubscribe", ""),
    ("manage", ""),
    ("manage", "/erase"),
    ("data", ""),
]
HOSTS = ["newsletter.test", "localhost", "nyheder.example.dk", "127.0.0.1", "[2001:db8::1]"]


def ledger_text() -> str:
    """Every column of every ledger event row, as the database holds it."""
    db.session.commit()
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM consent_events")).all()
    db.session.commit()
    return "\n".join(" ".join(str(value) for value in row) for row in rows)


def assert_nowhere(token: str, text: str) -> None:
    """Neither the token nor its payload or signature is in ``text`` (its time part
    is no secret, and every token signed in the same second shares it)."""
    assert token not in text
    for part in (p for p in token.split(".") if len(p) >= 16):
        assert part not in text, f"token part {part!r} found"


# ---------------------------------------------------------------- the rule


def test_token_routes_are_exactly_the_routes_with_a_token(app: Flask) -> None:
    starts = {
        rule.rule.split("/")[1] for rule in app.url_map.iter_rules() if "token" in rule.arguments
    }
    assert starts == TOKEN_ROUTES
    for rule in app.url_map.iter_rules():
        if "token" in rule.arguments:
            assert rule.rule.split("/")[2] == "<token>", rule.rule


@pytest.mark.parametrize(
    ("url", "page"),
    [
        ("http://localhost/manage/eyJzIjoiYSJ9.Z1a2b3.c2ln/erase", "http://localhost/manage/…/erase"),
        ("https://a:b@Example.ORG:8443/artikler/hvorfor?utm=x#top", "https://example.org:8443/artikler/hvorfor"),
        ("https://example.org/2024-03-01-udgave-nr-12", "https://example.org/2024-03-01-udgave-nr-12"),
        ("https://example.org/Annual_Report_2024.pdf", "https://example.org/Annual_Report_2024.pdf"),
        ("https://example.org/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2lnbmF0dXJl", "https://example.org/…"),
        ("https://example.org/blog/manage/ok", "https://example.org/blog/manage/ok"),
        ("http://localhost/%6Danage/x", "http://localhost/manage/…"),
        ("http://localhost//Unsubscribe//x", "http://localhost//Unsubscribe//…"),
        ("http://localhost/%2Fconfirm%2Fx", "http://localhost//confirm/…"),
        ("https://example.org/ø/a b", "https://example.org/%C3%B8/a%20b"),
        ("https://example.org", "https://example.org/"),
        ("http://[2001:db8::1]:5000/data/x", "http://[2001:db8::1]:5000/data/…"),
        (f"https://example.org/reset/{secrets.token_urlsafe(24)}/", "https://example.org/reset/…/"),
        (f"https://example.org/r/{secrets.token_hex(16)}", "https://example.org/r/…"),
        (f"https://example.org/r/{uuid.uuid4()}", "https://example.org/r/…"),
        ("https://example.org/k/x7f2m9q4z8w1r5t3y6u0", "https://example.org/k/…"),
        ("null", None),
        ("/manage/x", None),
        ("android-app://com.google.android.gm/", None),
        ("javascript:alert(1)", None),
        ("http://[::1/x", None),
        ("http://example.org:99999/", None),
        ("http://a%20b/", None),
        ("", None),
    ],
)  # fmt: skip
def test_page_of_keeps_the_page_and_nothing_secret(url: str, page: str | None) -> None:
    assert page_of(url) == page


_tokens = st.text(alphabet=TOKEN_ALPHABET, min_size=8, max_size=300)
_query = st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=4)


@given(
    token=_tokens,
    route=st.sampled_from(LINK_ROUTES),
    scheme=st.sampled_from(["http", "https", "HTTPS"]),
    host=st.sampled_from(HOSTS),
    port=st.sampled_from(["", ":5000", ":443"]),
    shout=st.booleans(),
    encode=st.booleans(),
    query=_query,
    token_in=st.sets(st.sampled_from(["query", "fragment", "user"])),
)
@PROPERTY
def test_no_token_in_a_link_survives(
    token: str,
    route: tuple[str, str],
    scheme: str,
    host: str,
    port: str,
    shout: bool,
    encode: bool,
    query: list[tuple[str, str]],
    token_in: set[str],
) -> None:
    """Any token on any of our link routes, percent-encoded or not, with the token
    again in the query, fragment or user part: the page is the route with ``…``."""
    name, tail = route
    name = name.upper() if shout else name
    sent = "".join(f"%{byte:02X}" for byte in token.encode()) if encode else token
    pairs = [*query, ("t", token)] if "query" in token_in else query
    user = f"{token}@" if "user" in token_in else ""
    fragment = f"#{token}" if "fragment" in token_in else ""
    url = f"{scheme}://{user}{host}{port}/{name}/{sent}{tail}?{urlencode(pairs)}{fragment}"
    page = page_of(url)
    assert page == f"{scheme.lower()}://{host}{port}/{name}/{REDACTED}{tail}"
    assert token not in page or token in f"{scheme.lower()}://{host}{port}/{name}/"


def test_random_keys_in_a_foreign_path_are_not_kept() -> None:
    """Another site's keys (base64url, hex, UUID), 16 characters or more, from a
    seeded generator so that a run is reproducible. The rule is a heuristic:
    about one 16-character key in 6,000 happens to read as words."""
    rng = random.Random(7)
    for _ in range(1000):
        raw = rng.randbytes(rng.randint(16, 48))
        for key in (
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
            raw.hex(),
            str(uuid.UUID(bytes=raw[:16])),
        ):
            page = page_of(f"https://partner.example/a/{key}/b?k={key}#{key}")
            assert page == "https://partner.example/a/…/b", key


@given(st.text(max_size=3000))
@PROPERTY
def test_any_text_gives_a_bounded_http_page_or_none(url: str) -> None:
    page = page_of(url)
    assert page is None or (
        page.startswith(("http://", "https://")) and len(page) <= MAX_SOURCE_URL
    )


# ---------------------------------------------------------------- end to end


@pytest.fixture
def reader(default_list: MailingList, subscribed: Callable[..., EmailMessage]) -> EmailMessage:
    """reader@example.org, confirmed through the link in the mail; their welcome mail."""
    return subscribed("reader@example.org")


@pytest.mark.parametrize("referer", [False, True])
def test_a_withdrawal_on_the_preference_page_stores_no_token(
    client: FlaskClient,
    reader: EmailMessage,
    staff_client: Callable[..., StaffClient],
    referer: bool,
) -> None:
    """With no Referer (our pages send none) the request URL is the page; with one
    (a browser that ignores the policy) the Referer: either way ``/manage/…``."""
    path = link_path(reader, "manage")
    token = path.rsplit("/", 1)[1]
    headers = {"Referer": f"http://newsletter.test{path}?x={token}"} if referer else {}
    response = client.post(path, data={"action": "unsubscribe_all"}, headers=headers)
    assert response.status_code == 200

    text = ledger_text()
    assert_nowhere(token, text)
    subscriber = db.session.scalar(select(Subscriber))
    assert subscriber is not None
    assert subscriber.token_key not in text
    withdrawn = db.session.scalars(
        select(ConsentEvent).where(ConsentEvent.event == ConsentEventType.WITHDRAWN)
    ).one()
    assert withdrawn.source_url == "http://newsletter.test/manage/…"
    assert seal_and_verify().ok

    viewer = staff_client(Role.VIEWER)
    for page in ("", "/proof", "/proof.json"):
        response = viewer.get(f"/admin/subscribers/{subscriber.id}{page}")
        assert response.status_code == 200
        shown = response.get_data(as_text=True)
        assert "/manage/…" in shown or "/manage/\\u2026" in shown
        assert_nowhere(token, shown)


@pytest.mark.parametrize("one_click", [False, True])
def test_an_unsubscribe_from_a_link_stores_no_token(
    client: FlaskClient, reader: EmailMessage, one_click: bool
) -> None:
    path = link_path(reader, "unsubscribe")
    data = {"List-Unsubscribe": "One-Click"} if one_click else {}
    assert client.post(path, data=data).status_code == 200

    text = ledger_text()
    assert_nowhere(path.rsplit("/", 1)[1], text)
    pages = db.session.scalars(select(ConsentEvent.source_url).order_by(ConsentEvent.seq))
    assert list(pages) == [
        "http://newsletter.test/subscribe",  # the hosted form's own URL (no Referer sent)
        "http://newsletter.test/confirm/…",
        "http://newsletter.test/unsubscribe/…",
    ]
    assert seal_and_verify().ok


def test_a_signup_keeps_the_page_without_its_query(
    client: FlaskClient, default_list: MailingList
) -> None:
    secret = secrets.token_urlsafe(16)
    page = f"https://www.example.org/artikler/hvorfor?utm_source=x&session={secret}#form"
    response = client.post(
        "/subscribe",
        data={"email": "page@example.org"},
        headers={"Origin": "http://newsletter.test", "Referer": page},
    )
    assert response.status_code == 200
    db.session.commit()
    drain_intake()
    event = db.session.scalars(select(ConsentEvent)).one()
    assert event.source_url == "https://www.example.org/artikler/hvorfor"
    assert secret not in ledger_text()


def test_an_imported_source_keeps_the_page_of_a_link(make_list: Callable[..., MailingList]) -> None:
    """An import's ``source`` is hashed into the ledger for good: a link in it keeps its page."""
    key = secrets.token_urlsafe(16)
    source = f"form https://old.example/confirm/{key}?s={key} (2019)"
    data = f"email,consented_at,source\nold@example.org,2019-05-01,{source}\n".encode()
    run_import(data, make_list("gamle", "Gamle"))
    event = db.session.scalars(select(ConsentEvent)).one()
    assert event.details["source"] == "form https://old.example/confirm/… (2019)"
    assert key not in ledger_text()


def test_a_failing_link_page_does_not_log_its_token(
    app_factory: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """Flask logs "Exception on <path>" for a 500; a token in that path is cut short."""
    app = app_factory(PROPAGATE_EXCEPTIONS=False)

    def broken(token: str) -> str:
        raise RuntimeError("broken page")

    app.add_url_rule("/manage/<token>/broken", view_func=broken)
    token = make_token_in(app)
    with caplog.at_level(logging.ERROR):
        assert app.test_client().get(f"/manage/{token}/broken").status_code == 500
    assert "Exception on /manage/" in caplog.text
    assert token not in caplog.text


def make_token_in(app: Flask) -> str:
    """A real manage token signed with the app's key."""
    with app.app_context():
        return make_token(Purpose.MANAGE, secrets.token_hex(16))


# ---------------------------------------------------------------- migration 0007

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
MIGRATION_0011 = MIGRATIONS / "versions" / "0011_merkle_ledger.py"
OLD_TIME = datetime(2026, 11, 1, 12, tzinfo=UTC)  # when the 0006 release wrote the events


def frozen_chain() -> ModuleType:
    """Migration 0011, loaded from its path: it keeps the HMAC chain's code frozen
    (the row hash and personal digest as the releases up to 0010 computed them,
    and the old verification)."""
    spec = importlib.util.spec_from_file_location("migration_0011", MIGRATION_0011)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_as_the_0006_release(events: list[dict[str, Any]]) -> None:
    """Insert one subscriber's events with plain Core statements into the schema
    of revision 0006, chained as the code of that release chained them: keyed
    email and personal digests, each row hash over the content and the hash
    before it, and the ledger head on the last (the models are of a later
    schema and cannot write there)."""
    chain = frozen_chain()
    key = chain._keys()[0]
    metadata = sa.MetaData()
    with db.engine.begin() as conn:
        metadata.reflect(conn, only=["subscribers", "consent_events", "ledger_head"])
        subscribers = metadata.tables["subscribers"]
        conn.execute(
            subscribers.insert().values(
                email="old@example.org",
                email_key="old@example.org",
                name="",
                locale="da",
                token_key="k" * 22,
                created_at=OLD_TIME.replace(tzinfo=None),
            )
        )
        subscriber_id = conn.execute(sa.select(subscribers.c.id)).scalar_one()
        previous = chain.GENESIS
        for seq, values in enumerate(events, start=1):
            row = {
                "seq": seq,
                "occurred_at": OLD_TIME + timedelta(seconds=seq, microseconds=250_000),
                "subscriber_id": subscriber_id,
                "list_id": None,
                "consent_text_id": None,
                "policy_version_id": None,
                "email_digest": chain._digest(key, "email:old@example.org"),
                "details": {},
                "email": "old@example.org",
                "ip": None,
                "user_agent": None,
                "source_url": None,
                **values,
            }
            row["personal_digest"] = chain._personal_digest(row, key)
            row["prev_hash"] = previous
            row["row_hash"] = previous = chain._row_hash(row, key)
            stored = {**row, "occurred_at": row["occurred_at"].replace(tzinfo=None)}
            conn.execute(metadata.tables["consent_events"].insert().values(**stored))
        head = metadata.tables["ledger_head"]
        conn.execute(head.update().where(head.c.id == 1).values(seq=len(events), row_hash=previous))


def old_chain_break() -> str | None:
    """The old verification (frozen in migration 0011): where the chain breaks, or None."""
    with db.engine.connect() as conn:
        broken: str | None = frozen_chain()._first_break(conn)
    return broken


def test_migration_0007_removes_stored_links_and_the_chain_still_verifies(
    fresh_app: Flask,  # noqa: F811 - the fixture imported above
) -> None:
    """Events written by the old code (the link as sent in source_url) lose their
    personal fields, as erasure does; other events keep theirs; the old chain
    still verifies, and the events carry over into the Merkle ledger."""
    upgrade(revision="0006")
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO lists (slug, name, description, is_default, created_at)"
                " VALUES ('nyhedsbrev', 'Nyhedsbrev', '', :yes, :at)"
            ),
            {"yes": True, "at": OLD_TIME.replace(tzinfo=None)},
        )
        list_id = conn.execute(sa.text("SELECT id FROM lists")).scalar_one()
    token = make_token(Purpose.MANAGE, "k" * 32)
    foreign = secrets.token_urlsafe(20)
    old_pages = {
        "requested": "http://localhost/artikler/hvorfor?utm=x",
        "confirmed": f"http://localhost/confirm/{make_token(Purpose.CONFIRM, 'k' * 32)}",
        "preferences_changed": f"http://localhost/manage/{token}",
        "withdrawn": f"http://localhost/unsubscribe/{token}",
        "suppressed": "http://localhost/admin/subscribers/1",
        "imported": f"https://partner.example/signup?ref={foreign}",
    }
    # Evidence as the release of 0006 stored it: the page as sent, link and all.
    events: list[dict[str, Any]] = [
        {
            "event": event,
            "channel": Channel.MANAGE_PAGE.value,
            "list_id": list_id,
            "ip": "192.0.2.0/24",
            "user_agent": "Browser",
            "source_url": page,
        }
        for event, page in old_pages.items()
    ]
    events.append({"event": ConsentEventType.SUPPRESSED.value, "channel": Channel.SYSTEM.value})
    write_as_the_0006_release(events)
    assert old_chain_break() is None
    with db.engine.connect() as conn:
        before: dict[int, str] = dict(
            conn.execute(sa.text("SELECT seq, row_hash FROM consent_events")).all()
        )
    assert len(before) == len(events)
    # The frozen check is no formality: an edited link breaks this chain.
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE consent_events SET source_url = 'x' WHERE seq = 5"))
    assert old_chain_break() == "event #5: its personal fields do not match their digest"
    with db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE consent_events SET source_url = :page WHERE seq = 5"),
            {"page": old_pages["suppressed"]},
        )

    upgrade(revision="0007")

    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT event, email, ip, source_url FROM consent_events ORDER BY seq")
        ).all()
        after: dict[int, str] = dict(
            conn.execute(sa.text("SELECT seq, row_hash FROM consent_events")).all()
        )
    assert [tuple(row) for row in rows] == [
        ("requested", "old@example.org", "192.0.2.0/24", old_pages["requested"]),
        ("confirmed", None, None, None),
        ("preferences_changed", None, None, None),
        ("withdrawn", None, None, None),
        ("suppressed", "old@example.org", "192.0.2.0/24", old_pages["suppressed"]),
        ("imported", None, None, None),
        ("suppressed", "old@example.org", None, None),
    ]
    text = ledger_text()
    assert_nowhere(token, text)
    assert foreign not in text
    assert after == before
    assert old_chain_break() is None

    # On to the Merkle ledger: the redacted events are erased ones there.
    upgrade()
    committed = db.session.execute(
        select(ConsentEvent.seq, ConsentEvent.salt, ConsentEvent.personal_commitment).order_by(
            ConsentEvent.seq
        )
    ).all()
    assert [seq for seq, salt, commitment in committed if salt and commitment] == [1, 5, 7]
    assert [seq for seq, salt, commitment in committed if not (salt or commitment)] == [2, 3, 4, 6]
    report = seal_and_verify()
    assert report.ok, report.problems
    assert (report.events, report.sealed, report.waiting) == (7, 7, 0)
    result = fresh_app.test_cli_runner().invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output
    assert "7 events sealed, 0 waiting" in result.output
