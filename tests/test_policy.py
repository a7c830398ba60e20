"""Privacy-policy versions: import, immutability, the /privacy pages, and the ledger's reference.

The controller's real policy (a copy kept in tests/data/persondatapolitik.md: site
front matter, a Danish body with "Dato for seneste opdatering: 30.10.2023") is
imported as it is.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from newsletter.extensions import db
from newsletter.ledger.leaf import LEAF_COLUMNS, Texts, leaf_document
from newsletter.ledger.verify import verify_ledger
from newsletter.models import ConsentEvent, MailingList, PolicyVersion, utcnow
from newsletter.privacy.policy import PolicyError, import_policy, parse_policy, policy_in_force

from .fixtures.ledger import seal_and_verify

SEED = Path(__file__).resolve().parent / "data" / "persondatapolitik.md"
ORIGIN_HEADERS = {"Origin": "http://newsletter.test"}


def policy_file(body: str, **front: str) -> bytes:
    """A policy file with the given front-matter keys."""
    lines = ["---", *(f"{key}: {value}" for key, value in front.items()), "---", body]
    return "\n".join(lines).encode()


def import_file(runner: FlaskCliRunner, path: Path) -> tuple[int, str]:
    """Run `newsletter policy import PATH`; exit code and all output."""
    result = runner.invoke(args=["policy", "import", str(path)])
    return result.exit_code, result.output


def test_the_seed_policy_imports_with_its_danish_date_and_is_shown(
    app: Flask, runner: FlaskCliRunner, client: FlaskClient
) -> None:
    assert SEED.exists(), f"the seed policy is expected at {SEED}"
    code, output = import_file(runner, SEED)
    assert code == 0, output
    assert "imported version 1: 'Persondatapolitik', in force from 2023-10-30" in output
    # Site keys of the static site generator mean nothing here: named and ignored.
    assert "ignored front matter keys: layout, templateClass" in output

    stored = db.session.scalars(select(PolicyVersion)).one()
    assert stored.effective_on == date(2023, 10, 30)
    assert stored.title == "Persondatapolitik"
    assert "layout" not in stored.body_markdown
    assert stored.body_markdown.startswith("Dato for seneste opdatering: 30.10.2023")

    page = client.get("/privacy")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<h1>Persondatapolitik</h1>" in html
    assert "<h2>Nyhedsbrev</h2>" in html
    assert '<time datetime="2023-10-30">' in html
    assert "Klage til Datatilsynet" in html
    assert "Set-Cookie" not in page.headers
    assert client.get("/privacy/1").get_data(as_text=True) == html


def test_importing_the_same_file_twice_is_a_no_op(runner: FlaskCliRunner, tmp_path: Path) -> None:
    path = tmp_path / "policy.md"
    path.write_bytes(policy_file("Text.", title="Policy", effective="2024-01-01"))
    assert import_file(runner, path)[0] == 0
    code, output = import_file(runner, path)
    assert code == 0
    assert "already imported as version 1 (in force from 2024-01-01); nothing changed" in output
    assert len(db.session.scalars(select(PolicyVersion)).all()) == 1


def test_a_file_without_any_date_is_refused_with_a_clear_message(
    runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "policy.md"
    path.write_bytes(policy_file("## Privacy\nWe keep little.", title="Policy", layout="x.njk"))
    code, output = import_file(runner, path)
    assert code == 1
    assert "no effective date" in output
    assert "effective: YYYY-MM-DD" in output
    assert "Dato for seneste opdatering: DD.MM.YYYY" in output
    assert db.session.scalars(select(PolicyVersion)).all() == []


@pytest.mark.parametrize(
    ("front", "body", "expected"),
    [
        ({"effective": "2024-03-01"}, "Text.", date(2024, 3, 1)),
        ({"date": "2024-03-02"}, "Text.", date(2024, 3, 2)),
        ({"date": "02.03.2024"}, "Text.", date(2024, 3, 2)),
        # A front-matter date wins over the body's line.
        ({"effective": "2024-03-03"}, "Dato for seneste opdatering: 01.01.2020", date(2024, 3, 3)),
        ({}, "dato for seneste opdatering:5.6.2021\nText.", date(2021, 6, 5)),
    ],
)
def test_effective_date_sources(
    app: Flask, front: dict[str, str], body: str, expected: date
) -> None:
    assert parse_policy(policy_file(body, **front)).effective_on == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (policy_file("Text.", date="tomorrow"), "is not a date"),
        (policy_file("Dato for seneste opdatering: 31.02.2023"), "names no real day"),
        (policy_file("   ", effective="2024-01-01"), "no text"),
        (b"---\ntitle: [unclosed\n---\nText.", "not valid YAML"),
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"x" * (600 * 1024), "larger than"),
    ],
)
def test_bad_files_are_refused(app: Flask, raw: bytes, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(raw)


def test_versions_are_immutable(app: Flask) -> None:
    version = import_policy(policy_file("Text.", effective="2024-01-01")).version
    version.body_markdown = "Edited."
    with pytest.raises(ValueError, match="immutable"):
        db.session.commit()
    db.session.rollback()
    assert db.session.get(PolicyVersion, version.id).body_markdown == "Text.\n"


def test_privacy_pages_show_every_version_with_its_dates(app: Flask, client: FlaskClient) -> None:
    assert client.get("/privacy").status_code == 404  # nothing imported yet
    today = utcnow().date()
    import_policy(policy_file("First text.", title="Policy", effective="2020-01-01"))
    import_policy(policy_file("Second text.", title="Policy", effective="2022-06-01"))
    future = (today + timedelta(days=30)).isoformat()
    import_policy(policy_file("Announced text.", title="Policy", effective=future))

    current = client.get("/privacy").get_data(as_text=True)
    assert "Second text." in current
    # In force now, and replaced on the announced version's day.
    assert re.search(rf'2022-06-01</time>\s*until <time datetime="{future}">', current)
    for number in (1, 2, 3):
        assert f'href="/privacy/{number}"' in current

    first = client.get("/privacy/1").get_data(as_text=True)
    assert "First text." in first
    assert re.search(r'2020-01-01</time>\s*until <time datetime="2022-06-01">', first)
    assert 'href="/privacy"' in first  # a way to the version in force

    announced = client.get("/privacy/3").get_data(as_text=True)
    assert "Announced text." in announced
    assert "not yet in force" in announced

    assert client.get("/privacy/4").status_code == 404
    assert client.get("/privacy/0").status_code == 404
    assert client.get("/privacy/99999999999999999999").status_code == 404


def test_policy_markdown_is_rendered_safely(app: Flask, client: FlaskClient) -> None:
    body = (
        "Dato for seneste opdatering: 01.01.2024\n\n<script>alert(1)</script>\n\n"
        "[x](javascript:alert(1)) ![p](https://tracker.example/p.gif)"
    )
    import_policy(policy_file(body))
    html = client.get("/privacy").get_data(as_text=True)
    assert "<script>alert" not in html
    assert 'href="javascript:' not in html  # the link is refused; its text stays text
    assert "tracker.example" not in html


def test_every_consent_event_references_the_policy_in_force(
    app: Flask,
    default_list: MailingList,
    post_form: Callable[..., TestResponse],
) -> None:
    assert post_form("/subscribe", {"email": "before@example.org"}).status_code == 200
    old = import_policy(policy_file("Old.", effective="2020-01-01")).version
    current = import_policy(policy_file("Current.", effective="2023-10-30")).version
    import_policy(
        policy_file("Announced.", effective=(utcnow().date() + timedelta(days=9)).isoformat())
    )
    assert policy_in_force() is not None
    assert policy_in_force().id == current.id  # type: ignore[union-attr]
    assert old.id != current.id
    assert post_form("/subscribe", {"email": "after@example.org"}).status_code == 200

    db.session.commit()
    events = db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq)).all()
    assert [e.policy_version_id for e in events] == [None, current.id]
    assert seal_and_verify().ok


def test_the_leaf_binds_the_policy_in_force_and_its_text(
    app: Flask, default_list: MailingList, post_form: Callable[..., TestResponse]
) -> None:
    """An event from before any policy was imported names none; a later one
    names the version in force and the SHA-256 of its text. Pointing an event
    at another version, removing or adding the reference, or editing the
    policy's text afterwards is caught, and the event is named."""
    assert post_form("/subscribe", {"email": "old@example.org"}).status_code == 200
    first = import_policy(policy_file("One.", effective="2020-01-01")).version
    second = import_policy(policy_file("Two.", effective="2021-01-01")).version
    assert post_form("/subscribe", {"email": "new@example.org"}).status_code == 200
    db.session.commit()
    old_event, new_event = db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq))
    assert old_event.policy_version_id is None
    assert new_event.policy_version_id == second.id
    assert seal_and_verify().ok
    rows = db.session.execute(select(*LEAF_COLUMNS).order_by(ConsentEvent.seq)).mappings()
    old_leaf, new_leaf = (leaf_document(row, Texts.load()) for row in rows)
    assert (old_leaf["policy_version"], old_leaf["policy_sha256"]) == (None, None)
    assert new_leaf["policy_version"] == second.version
    assert new_leaf["policy_sha256"] == hashlib.sha256(b"Two.\n").hexdigest()

    def point(event: ConsentEvent, version_id: int | None) -> list[str]:
        db.session.execute(
            update(ConsentEvent)
            .where(ConsentEvent.id == event.id)
            .values(policy_version_id=version_id)
        )
        db.session.commit()
        return [str(p) for p in verify_ledger().problems]

    broken = "does not match its sealed leaf"
    for event, value, was in (
        (new_event, first.id, second.id),
        (new_event, None, second.id),
        (old_event, first.id, None),
    ):
        problems = point(event, value)
        assert len(problems) == 1
        assert problems[0].startswith(f"event #{event.seq}: {broken}")
        point(event, was)
    assert verify_ledger().ok

    # The policy's text edited in place: the text and every event it was shown with.
    db.session.execute(
        update(PolicyVersion).where(PolicyVersion.id == second.id).values(body_markdown="Three.\n")
    )
    db.session.commit()
    problems = [str(p) for p in verify_ledger().problems]
    assert problems[0] == "texts: privacy policy version 2 was edited after it was imported"
    assert [p.split(":")[0] for p in problems[1:]] == [f"event #{new_event.seq}"]


def test_signup_form_and_api_link_to_the_policy(
    app: Flask, client: FlaskClient, default_list: MailingList
) -> None:
    form = client.get("/subscribe").get_data(as_text=True)
    assert 'href="/privacy"' in form
    response = client.post(
        "/api/v1/subscriptions", json={"email": "api@example.org"}, headers=ORIGIN_HEADERS
    )
    assert response.status_code == 202
    # RFC 6903's relation, on every answer of the API (errors too), readable cross-origin.
    assert response.headers["Link"] == '<http://newsletter.test/privacy>; rel="privacy-policy"'
    refused = client.post("/api/v1/subscriptions", json={"email": 5}, headers=ORIGIN_HEADERS)
    assert refused.status_code == 422
    assert refused.headers["Link"] == response.headers["Link"]
    app.config["ALLOWED_ORIGINS"] = ["https://inklusio.dk"]
    cross = client.post(
        "/api/v1/subscriptions",
        json={"email": "cors@example.org"},
        headers={"Origin": "https://inklusio.dk"},
    )
    assert cross.headers["Access-Control-Expose-Headers"] == "Link"


def test_consent_proof_names_the_policy_version(
    app: Flask,
    runner: FlaskCliRunner,
    default_list: MailingList,
    post_form: Callable[..., TestResponse],
) -> None:
    import_policy(policy_file("One.", effective="2020-01-01"))
    assert post_form("/subscribe", {"email": "proof@example.org"}).status_code == 200
    result = runner.invoke(args=["consent", "proof", "proof@example.org"])
    assert result.exit_code == 0
    assert '"privacy_policy_version": 1' in result.output
