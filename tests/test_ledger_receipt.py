"""The person's own receipt: "Send me the proof of my consent" on the preference page.

Like the copy of one's data, the proof is never handed out on the page (the
preference link may have been forwarded): a fresh, expiring link goes to the
address itself, through the real SMTP test server here. That link's page
offers two downloads, the data and the proof; the proof is the consent bundle
``newsletter-verify`` checks with nothing but the key from ``/ledger/key``.
The data export carries the same bundle, and the welcome mail says in one
sentence that the proof exists and where to ask for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

import newsletter_verify
from newsletter.extensions import db
from newsletter.models import MailingList, OutboxKind, OutboxMessage, Subscriber
from newsletter.tokens import Purpose, make_token

from .fixtures.mailflow import html_of, link_path, text_of

Mails = Callable[[], list[EmailMessage]]
ORIGIN = {"Origin": "http://newsletter.test"}
WELCOME_SENTENCE = {
    "en": "On the same page you can ask for the proof of your consent",
    "da": "På samme side kan du bede om beviset for dit samtykke",
}


def no_cookie(response: TestResponse) -> TestResponse:
    """The response, after checking it sets no cookie."""
    assert "Set-Cookie" not in response.headers
    return response


def ask_for_proof(client: FlaskClient, manage_path: str) -> str:
    """Press "Send me the proof of my consent" on the preference page; the page's HTML."""
    response = no_cookie(client.post(manage_path, data={"action": "proof"}, headers=ORIGIN))
    assert response.status_code == 200
    return response.get_data(as_text=True)


def link_mails(mails: list[EmailMessage]) -> list[EmailMessage]:
    """The download-link mails among ``mails``."""
    return [m for m in mails if "/data/" in text_of(m)]


def published_key(client: FlaskClient) -> newsletter_verify.Verifier:
    """The verifier key as anyone fetches it."""
    return newsletter_verify.parse_vkey(
        no_cookie(client.get("/ledger/key")).get_data(as_text=True).strip()
    )


def download_proof(client: FlaskClient, path: str) -> dict:
    """POST the download link for the proof; the parsed bundle."""
    response = no_cookie(client.post(path, data={"download": "proof"}, headers=ORIGIN))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="consent-proof-')
    assert response.headers["Cache-Control"] == "no-store"
    return json.loads(response.get_data(as_text=True))


def test_the_welcome_mail_says_the_proof_exists_in_both_languages(
    app: Flask, client: FlaskClient, default_list: MailingList, deliver: Mails
) -> None:
    for lang in ("da", "en"):
        signup = {"email": f"velkommen-{lang}@example.org", "locale": lang}
        assert client.post("/api/v1/subscriptions", json=signup).status_code == 202
        (confirmation,) = deliver()
        client.post(link_path(confirmation, "confirm"))
        (welcome,) = deliver()
        assert WELCOME_SENTENCE[lang] in text_of(welcome)
        assert WELCOME_SENTENCE[lang] in html_of(welcome)
        other = "da" if lang == "en" else "en"
        assert WELCOME_SENTENCE[other] not in text_of(welcome)


def test_a_subscriber_gets_a_proof_that_verifies_with_the_published_key(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Mails,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    welcome = subscribed("Bevis@Example.org", name="Bo Bevis")
    manage = link_path(welcome, "manage")
    page = no_cookie(client.get(manage)).get_data(as_text=True)
    assert "Send me the proof of my consent" in page
    assert 'name="action" value="proof"' in page

    html = ask_for_proof(client, manage)
    assert "We have sent a link to the proof of your consent to Bevis@example.org" in html
    assert "/data/" not in html  # the link goes to the mailbox only
    (mail,) = link_mails(deliver())
    assert mail["Subject"] == "The proof of your consent"
    assert mail["To"] == "Bo Bevis <Bevis@example.org>"
    assert mail["List-Unsubscribe"] is None  # asked for: transactional
    assert "http://newsletter.test/ledger/key" in text_of(mail)
    assert "http://newsletter.test/ledger/key" in html_of(mail)
    download = link_path(mail, "data")

    # GET shows both buttons and hands out nothing.
    shown = no_cookie(client.get(download))
    assert shown.status_code == 200
    assert shown.headers["Cache-Control"] == "no-store"
    text = shown.get_data(as_text=True)
    assert "Download the proof of my consent" in text
    assert 'name="download" value="proof"' in text
    assert "Download my data" in text

    # An event written a moment ago (not sealed by any worker yet) is in the proof:
    # the download seals first.
    keep = {"action": "save", "lists": [str(default_list.id)], "locale": "da"}
    saved = client.post(manage, data=keep, headers=ORIGIN)
    assert saved.status_code == 200
    bundle = download_proof(client, download)
    assert bundle["format"] == "newsletter-consent-proof/1"
    assert bundle["subject"]["email"] == "Bevis@example.org"
    events = [json.loads(e["leaf"])["event"] for e in bundle["events"]]
    assert events == ["requested", "confirmed", "preferences_changed"]
    assert all(e["personal"]["email"] == "Bevis@example.org" for e in bundle["events"])

    key = published_key(client)
    checkpoint = no_cookie(client.get("/ledger/checkpoint")).get_data(as_text=True)
    report = newsletter_verify.verify_bundle(bundle, key, newsletter_verify.parse_note(checkpoint))
    assert report.failures == []
    assert "Consent record of Bevis@example.org: every check holds." in report.summary

    # The console script, with files, as a third party runs it.
    files = {"bundle": json.dumps(bundle), "key": f"{key.name}\n", "cp": checkpoint}
    files["key"] = no_cookie(client.get("/ledger/key")).get_data(as_text=True)
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    args = [str(tmp_path / "bundle"), "--key", str(tmp_path / "key")]
    assert newsletter_verify.main([*args, "--checkpoint", str(tmp_path / "cp")]) == 0
    assert "Bevis@example.org" in capsys.readouterr().out


def test_an_edited_proof_or_another_key_fails(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Mails,
) -> None:
    """The verification above can fail: an edited leaf, an edited text, a foreign key."""
    ask_for_proof(client, link_path(subscribed("edit@example.org"), "manage"))
    (mail,) = link_mails(deliver())
    bundle = download_proof(client, link_path(mail, "data"))
    key = published_key(client)
    assert newsletter_verify.verify_bundle(bundle, key).ok

    edited = json.loads(json.dumps(bundle))
    edited["events"][0]["leaf"] = edited["events"][0]["leaf"].replace('"form"', '"import"')
    assert not newsletter_verify.verify_bundle(edited, key).ok

    edited = json.loads(json.dumps(bundle))
    (digest,) = edited["consent_texts"]
    edited["consent_texts"][digest]["text"] += " (and more)"
    assert not newsletter_verify.verify_bundle(edited, key).ok

    from newsletter.ledger.signing import Signer

    stranger = newsletter_verify.parse_vkey(Signer.generate(key.name).vkey)
    assert not newsletter_verify.verify_bundle(bundle, stranger).ok


def test_the_data_export_includes_the_bundle(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Mails,
) -> None:
    manage = link_path(subscribed("eksport@example.org"), "manage")
    response = client.post(manage, data={"action": "export"}, headers=ORIGIN)
    assert response.status_code == 200
    (mail,) = link_mails(deliver())
    assert mail["Subject"] == "A copy of your data"
    document = json.loads(
        no_cookie(client.post(link_path(mail, "data"), headers=ORIGIN)).get_data(as_text=True)
    )
    bundle = document["consent_proof"]
    assert [json.loads(e["leaf"])["event"] for e in bundle["events"]] == ["requested", "confirmed"]
    assert newsletter_verify.verify_bundle(bundle, published_key(client)).ok
    # The history and the bundle name the same events.
    assert [e["seq"] for e in document["consent_history"]] == [
        e["index"] + 1 for e in bundle["events"]
    ]


def test_expired_and_tampered_links_give_the_usual_pages(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Mails,
) -> None:
    ask_for_proof(client, link_path(subscribed("udloebet@example.org"), "manage"))
    download = link_path(link_mails(deliver())[0], "data")
    token = download.removeprefix("/data/")

    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response = no_cookie(client.post(f"/data/{tampered}", data={"download": "proof"}))
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "This link is not valid" in response.get_data(as_text=True)

    manage_token = make_token(
        Purpose.MANAGE, db.session.scalars(select(Subscriber)).one().token_key
    )
    db.session.commit()
    foreign = no_cookie(client.post(f"/data/{manage_token}", data={"download": "proof"}))
    assert foreign.status_code == 400

    app.config["DATA_EXPORT_MAX_AGE"] = -1  # every link is now too old
    expired = no_cookie(client.post(download, data={"download": "proof"}))
    assert expired.status_code == 410
    assert expired.mimetype == "text/html"
    assert "This link has expired" in expired.get_data(as_text=True)


def test_asking_again_within_the_window_sends_no_second_mail(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Mails,
) -> None:
    """The proof shares the data export's limit: one link mail per
    CONFIRM_RESEND_WINDOW, and that mail's page offers both downloads."""
    manage = link_path(subscribed("flood-proof@example.org"), "manage")
    for _ in range(3):
        ask_for_proof(client, manage)
    client.post(manage, data={"action": "export"}, headers=ORIGIN)
    (mail,) = link_mails(deliver())
    assert mail["Subject"] == "The proof of your consent"
    db.session.commit()
    kinds = db.session.scalars(
        select(OutboxMessage.payload).where(OutboxMessage.kind == OutboxKind.DATA_EXPORT)
    ).all()
    assert kinds == [{"proof": True}]

    app.config["CONFIRM_RESEND_WINDOW"] = 0
    ask_for_proof(client, manage)
    assert len(link_mails(deliver())) == 1


def test_the_new_pages_and_the_proof_mail_are_valid_html(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    deliver: Mails,
    tmp_path: Path,
) -> None:
    """The preference page after asking for the proof, the download page with
    both buttons, and the proof mail, in Danish and in English (Nu HTML Checker)."""
    from .test_html_validity import report, vnu_errors

    files = []
    for lang in ("da", "en"):
        signup = {"email": f"html-{lang}@example.org", "name": "Læser", "locale": lang}
        assert client.post("/api/v1/subscriptions", json=signup).status_code == 202
        (confirmation,) = deliver()
        client.post(link_path(confirmation, "confirm"))
        (welcome,) = deliver()
        manage = link_path(welcome, "manage")
        pages = {"manage-proof": ask_for_proof(client, manage)}
        (mail,) = link_mails(deliver())
        pages["data-page"] = client.get(link_path(mail, "data")).get_data(as_text=True)
        pages["proof-mail"] = html_of(mail)
        for name, html in pages.items():
            file = tmp_path / f"{name}.{lang}.html"
            file.write_text(html, encoding="utf-8")
            files.append(file)
    errors = vnu_errors(files)
    assert errors == {}, report(errors)


def test_when_nothing_can_be_sealed_the_proof_is_refused_and_the_data_still_given(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A missing signing key: the proof answers 503 with a sentence (nothing was
    ever sealed), the copy of the data is still handed out, without a bundle."""
    subscriber = Subscriber(
        email="nokey@example.org", email_key="nokey@example.org", name="", locale="en"
    )
    db.session.add(subscriber)
    db.session.commit()
    path = f"/data/{make_token(Purpose.DATA_EXPORT, subscriber.token_key)}"
    db.session.commit()
    app.config["LEDGER_SIGNING_KEY_FILE"] = str(tmp_path / "missing.key")

    refused = no_cookie(client.post(path, data={"download": "proof"}, headers=ORIGIN))
    assert refused.status_code == 503
    assert refused.mimetype == "text/html"
    assert "The proof cannot be made just now" in refused.get_data(as_text=True)
    assert "sealing before a consent proof failed" in caplog.text

    data = no_cookie(client.post(path, headers=ORIGIN))
    assert data.status_code == 200
    assert json.loads(data.get_data(as_text=True))["consent_proof"] is None
