"""GET /ledger/checkpoint and GET /ledger/key: the newest signed checkpoint and the
verifier key, as plain text anyone may fetch, with no cookie and no session.

The checkpoint a visitor fetches verifies with the key a visitor fetches, using
only ``newsletter_verify`` (the standalone verifier), and it names the tree the
database holds.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

import newsletter_verify
from newsletter.extensions import db
from newsletter.ledger.seal import latest_checkpoint, seal_waiting
from newsletter.ledger.signing import Signer
from newsletter.models import LedgerTree, MailingList

from .fixtures.ledger import seal_and_verify

SECURITY_HEADERS = (
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "X-Frame-Options",
)


def assert_public_text(response: object) -> None:
    """Plain UTF-8 text, readable from any origin, with our security headers and no cookie."""
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Set-Cookie" not in headers
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["X-Content-Type-Options"] == "nosniff"
    for name in SECURITY_HEADERS:
        assert name in headers, name


def test_before_the_first_seal_the_checkpoint_is_404_with_a_sentence(
    app: Flask, client: FlaskClient
) -> None:
    response = client.get("/ledger/checkpoint")
    assert response.status_code == 404
    assert_public_text(response)
    assert response.get_data(as_text=True) == "No checkpoint has been signed yet.\n"
    assert response.headers["Cache-Control"] == "public, max-age=10"


def test_the_checkpoint_verifies_with_the_published_key(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
) -> None:
    subscribed("public@example.org")
    assert seal_and_verify().ok

    key_response = client.get("/ledger/key")
    assert key_response.status_code == 200
    assert_public_text(key_response)
    assert key_response.headers["Cache-Control"] == "public, max-age=3600"
    key_text = key_response.get_data(as_text=True)
    assert key_text.endswith("\n")
    assert key_text.count("\n") == 1
    verifier = newsletter_verify.parse_vkey(key_text.strip())

    response = client.get("/ledger/checkpoint")
    assert response.status_code == 200
    assert_public_text(response)
    assert response.headers["Cache-Control"] == "public, max-age=10"
    note = newsletter_verify.parse_note(response.get_data(as_text=True))
    assert newsletter_verify.verify_note(note, verifier)
    body = newsletter_verify.parse_checkpoint(note.body)
    tree = db.session.scalars(select(LedgerTree)).one()
    assert (body.origin, body.size, body.root.hex()) == (tree.origin, tree.size, tree.root_hash)
    assert body.size >= 2  # requested and confirmed
    stored = latest_checkpoint()
    assert stored is not None
    assert response.get_data(as_text=True) == stored.note
    db.session.commit()

    # The same bytes as the stored note, and a HEAD answers like the GET.
    head = client.head("/ledger/checkpoint")
    assert head.status_code == 200
    assert "Set-Cookie" not in head.headers


def test_a_changed_note_or_another_key_does_not_verify(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
) -> None:
    """The test above can fail: an edited root or a foreign key is refused."""
    subscribed("edited@example.org")
    seal_waiting()
    key = newsletter_verify.parse_vkey(client.get("/ledger/key").get_data(as_text=True).strip())
    text = client.get("/ledger/checkpoint").get_data(as_text=True)
    origin, size, _root, rest = text.split("\n", 3)
    forged_root = base64.b64encode(bytes(32)).decode()
    forged = newsletter_verify.parse_note("\n".join([origin, size, forged_root, rest]))
    assert not newsletter_verify.verify_note(forged, key)

    other = newsletter_verify.parse_vkey(Signer.generate(key.name).vkey)
    assert not newsletter_verify.verify_note(newsletter_verify.parse_note(text), other)


def test_the_checkpoint_follows_each_seal(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
) -> None:
    subscribed("first@example.org")
    seal_waiting()
    first = newsletter_verify.parse_checkpoint(
        newsletter_verify.parse_note(client.get("/ledger/checkpoint").get_data(as_text=True)).body
    )
    subscribed("second@example.org")
    seal_waiting()
    second = newsletter_verify.parse_checkpoint(
        newsletter_verify.parse_note(client.get("/ledger/checkpoint").get_data(as_text=True)).body
    )
    assert second.size > first.size


def test_neither_route_touches_the_session(app: Flask, client: FlaskClient) -> None:
    """Even a request that carries a session cookie gets none back."""
    client.set_cookie("session", "anything", domain="newsletter.test")
    for path in ("/ledger/checkpoint", "/ledger/key"):
        response = client.get(path)
        assert "Set-Cookie" not in response.headers, path
        assert response.status_code in (200, 404), path


def test_an_unusable_key_gives_503_with_a_sentence(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    app.config["LEDGER_SIGNING_KEY_FILE"] = str(tmp_path / "missing.key")
    response = client.get("/ledger/key")
    assert response.status_code == 503
    assert_public_text(response)
    assert response.get_data(as_text=True) == "The verifier key is not available just now.\n"
    assert response.headers["Cache-Control"] == "public, max-age=0"
