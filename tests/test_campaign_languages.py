"""Campaign mails in the recipient's language: the layout in theirs, the text as written.

Subject and body are sent as staff wrote them; the layout around them (the
reason for the mail, the link labels, ``<html lang>``) is in each recipient's
language: a configured one (LANGUAGES) or else the default. What is proved
here, through the real worker and a real SMTP server: a Danish and an English
reader of one campaign each get the layout in their language, in both parts;
their unsubscribe links and List-Unsubscribe headers work (one-click POST);
DKIM still verifies; a language that is not configured gets the default. The
campaign is rendered once per language its readers need, never per recipient,
and the bodies are quoted-printable-encoded once per language and batch. A
campaign that was already sending when this arrived (no per-language
renderings, no ``rendered_locale``) goes on with the rendering it started
with, across the real migration too. The console's preview follows the
console's language; the test mail is in the default language.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html import escape
from typing import Any

import dkim
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_babel import get_locale
from flask_migrate import downgrade, upgrade
from sqlalchemy import delete, select, update

from newsletter.campaigns import personal, service
from newsletter.campaigns.claim import claim_deliveries
from newsletter.campaigns.compose import RenderedCampaign
from newsletter.campaigns.mime import EncodedBody
from newsletter.campaigns.outcomes import DeliveryBatch, Recipient
from newsletter.campaigns.recipients import load_recipients
from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.models import (
    Campaign,
    MailingList,
    Role,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.models.campaigns import CampaignRendering

from .conftest import ORIGIN
from .fixtures.mailflow import html_of, link_path, text_of
from .fixtures.smtp import SMTPServer
from .fixtures.staff import StaffClient
from .test_dkim import DOMAIN, SELECTOR, dns_for, generate_ed25519_key
from .test_migrations import empty_database_url, fresh_app  # noqa: F401 - fixtures used here

NEUTRAL = f"{ORIGIN}/subscribe?list=nyhedsbrev"  # where a sample's personal links lead
Deliver = Callable[[], list[EmailMessage]]
Subscribed = Callable[..., EmailMessage]

SUBJECT = "Nyt fra Inklusio: æøå"
BODY = "# Nyt fra os\n\nHej {{ name }}!\n\nLæs [mere](https://inklusio.dk/nyt).\n"


@dataclass(frozen=True)
class Layout:
    """What marks the layout of one language (the list is "Nyhedsbrev")."""

    reason: str  # why the reader gets the mail
    text_labels: tuple[str, str]  # the unsubscribe and preference labels, text part
    html_labels: tuple[str, str]  # ... and HTML part
    lang: str  # the document's language


LAYOUT = {
    "da": Layout(
        "Du får denne mail, fordi du har tilmeldt dig Nyhedsbrev.",
        ("Afmeld: ", "Indstillinger: "),
        (">Afmeld</a>", ">Indstillinger</a>"),
        '<html lang="da">',
    ),
    "en": Layout(
        "You receive this mail because you subscribed to Nyhedsbrev.",
        ("Unsubscribe: ", "Preferences: "),
        (">Unsubscribe</a>", ">Preferences</a>"),
        '<html lang="en">',
    ),
}


def set_locale(email: str, locale: str) -> None:
    """Store a subscriber's language, as the preference page does (or an older
    configuration with more languages left it)."""
    db.session.execute(
        update(Subscriber).where(Subscriber.email_key == email).values(locale=locale)
    )
    db.session.commit()


def readers(subscribed: Subscribed, **locales: str) -> None:
    """Confirmed subscribers of the default list, ``local part=locale``."""
    for local, locale in locales.items():
        subscribed(f"{local}@example.org", name=local.capitalize())
        set_locale(f"{local}@example.org", locale)


def by_recipient(mails: list[EmailMessage]) -> dict[str, EmailMessage]:
    """Mails keyed by the local part of their recipient."""
    return {str(m["To"].addresses[0].username): m for m in mails}


def assert_layout(mail: EmailMessage, locale: str) -> None:
    """The mail's layout is in ``locale`` (and not in the other language), in
    both parts, around the body and subject as written, with working links."""
    other = LAYOUT["en" if locale == "da" else "da"]
    layout = LAYOUT[locale]
    text, html = text_of(mail), html_of(mail)
    assert mail["Subject"] == SUBJECT
    assert "Nyt fra os" in text
    assert "Nyt fra os" in html
    assert 'href="https://inklusio.dk/nyt"' in html
    assert layout.reason in text
    assert layout.reason in html
    assert other.reason not in text + html
    unsubscribe = str(mail["List-Unsubscribe"]).strip("<>")
    manage = ORIGIN + link_path(mail, "manage")
    unsubscribe_label, manage_label = layout.text_labels
    assert f"{unsubscribe_label}{unsubscribe}" in text
    assert f"{manage_label}{manage}" in text
    assert f'<a href="{unsubscribe}"' in html
    assert f'<a href="{manage}"' in html
    for label in layout.html_labels:
        assert label in html
    for label in other.html_labels:
        assert label not in html
    assert layout.lang in html
    assert "C.A. Olesens Gade 4" in text  # the postal address, in every language
    assert "C.A. Olesens Gade 4" in html


def unsubscribed(client: FlaskClient, mail: EmailMessage) -> bool:
    """One-click unsubscribe (RFC 8058) with the mail's header: 200, and the
    subscription is unsubscribed."""
    url = str(mail["List-Unsubscribe"]).strip("<>")
    response = client.post(url.removeprefix(ORIGIN), data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    db.session.commit()
    status = db.session.scalar(
        select(Subscription.status)
        .join(Subscriber)
        .where(Subscriber.email_key == str(mail["To"].addresses[0].addr_spec))
    )
    return status == SubscriptionStatus.UNSUBSCRIBED


def test_danish_and_english_readers_each_get_the_layout_in_their_language(
    client: FlaskClient, default_list: MailingList, subscribed: Subscribed, deliver: Deliver
) -> None:
    readers(subscribed, dansk="da", english="en")
    campaign = create_campaign("nyhedsbrev", SUBJECT, BODY)
    assert start_campaign(campaign.id) == 2

    mails = by_recipient(deliver())

    assert sorted(mails) == ["dansk", "english"]
    assert_layout(mails["dansk"], "da")
    assert_layout(mails["english"], "en")
    assert "Hej Dansk!" in text_of(mails["dansk"])
    assert "Hej English!" in html_of(mails["english"])
    for mail in mails.values():
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert client.get(link_path(mail, "manage")).status_code == 200
        assert client.get(link_path(mail, "unsubscribe")).status_code == 200
        assert unsubscribed(client, mail)


def test_a_language_that_is_not_configured_gets_the_default_layout(
    app: Flask, default_list: MailingList, subscribed: Subscribed, deliver: Deliver
) -> None:
    readers(subscribed, tysk="de", tom="", english="en")
    campaign = create_campaign("nyhedsbrev", SUBJECT, BODY)
    start_campaign(campaign.id)

    mails = by_recipient(deliver())

    assert_layout(mails["tysk"], "da")
    assert_layout(mails["tom"], "da")
    assert_layout(mails["english"], "en")
    # With English as the default, the same readers get English.
    app.config["BABEL_DEFAULT_LOCALE"] = "en"
    second = create_campaign("nyhedsbrev", SUBJECT, BODY)
    start_campaign(second.id)
    assert all(LAYOUT["en"].reason in text_of(mail) for mail in by_recipient(deliver()).values())


def test_dkim_signatures_verify_on_mails_in_either_language(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    key = generate_ed25519_key()
    app.config.update(
        DKIM_SELECTOR=SELECTOR,
        DKIM_DOMAIN=DOMAIN,
        DKIM_ALGORITHM=key.algorithm,
        DKIM_PRIVATE_KEY=key.private,
    )
    readers(subscribed, dansk="da", english="en")
    campaign = create_campaign("nyhedsbrev", SUBJECT, BODY)
    start_campaign(campaign.id)
    before = len(smtp_server.recorder.received)

    assert len(deliver()) == 2

    received = smtp_server.recorder.received[before:]
    assert {r.rcpt_tos[0] for r in received} == {"dansk@example.org", "english@example.org"}
    for mail in received:
        assert dkim.verify(mail.raw, dnsfunc=dns_for(key))
        locale = "da" if mail.rcpt_tos == ["dansk@example.org"] else "en"
        assert_layout(mail.message, locale)


def test_rendered_once_per_language_needed_and_encoded_once_per_language_and_batch(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readers(subscribed, a="da", b="da", c="da", d="en", e="en", f="de")
    renders: list[str] = []
    encodes: list[str] = []
    real_render, real_encode = service.render_campaign, personal.encode_template

    def counting_render(*args: Any, **kwargs: Any) -> RenderedCampaign:
        renders.append(str(get_locale()))  # the language being rendered in
        return real_render(*args, **kwargs)

    def counting_encode(template: str) -> EncodedBody:
        encodes.append(template)
        return real_encode(template)

    monkeypatch.setattr(service, "render_campaign", counting_render)
    monkeypatch.setattr(personal, "encode_template", counting_encode)
    campaign = create_campaign("nyhedsbrev", SUBJECT, BODY)
    campaign_id = campaign.id
    start_campaign(campaign_id)
    db.session.commit()

    assert renders == ["da", "en"]  # once per language, not per recipient
    stored = db.session.get(Campaign, campaign_id)
    assert stored is not None
    assert stored.rendered_locale == "da"  # the default is the main rendering
    assert stored.rendered_text is not None
    assert LAYOUT["da"].reason in stored.rendered_text
    assert [(r.locale, LAYOUT["en"].reason in r.text) for r in stored.renderings] == [("en", True)]

    mails = by_recipient(deliver())

    assert len(mails) == 6
    # One batch: the two bodies of each of the two languages, encoded once each.
    assert len(encodes) == 4
    for local in "abcf":
        assert_layout(mails[local], "da")
    for local in "de":
        assert_layout(mails[local], "en")


def test_a_list_with_readers_of_one_language_is_rendered_once_in_it(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readers(subscribed, one="en", two="en")
    renders: list[str] = []
    real_render = service.render_campaign

    def counting(*args: Any, **kwargs: Any) -> RenderedCampaign:
        renders.append(args[0])
        return real_render(*args, **kwargs)

    monkeypatch.setattr(service, "render_campaign", counting)
    campaign = create_campaign("nyhedsbrev", SUBJECT, BODY)
    start_campaign(campaign.id)
    db.session.commit()

    assert renders == [SUBJECT]
    stored = db.session.get(Campaign, campaign.id)
    assert stored is not None
    assert (stored.rendered_locale, stored.renderings) == ("en", [])
    for mail in deliver():
        assert_layout(mail, "en")


def test_a_reader_whose_language_has_no_rendering_gets_the_main_one(
    default_list: MailingList, subscribed: Subscribed, deliver: Deliver
) -> None:
    """Someone who changes language while a campaign is sending, to one that
    none of its readers had at the start, gets its main rendering."""
    readers(subscribed, dansk="da", skifter="da")
    campaign = create_campaign("nyhedsbrev", SUBJECT, BODY)
    start_campaign(campaign.id)
    set_locale("skifter@example.org", "en")

    mails = by_recipient(deliver())

    assert_layout(mails["dansk"], "da")
    assert_layout(mails["skifter"], "da")


def test_a_campaign_already_sending_before_the_upgrade_keeps_its_rendering(
    client: FlaskClient, default_list: MailingList, subscribed: Subscribed, deliver: Deliver
) -> None:
    """What migration 0006 leaves a campaign that the previous release started:
    the main rendering in the default language, no ``rendered_locale``, nothing
    else. Every reader gets that rendering, as before, and the links work."""
    readers(subscribed, dansk="da", english="en")
    campaign = create_campaign("nyhedsbrev", SUBJECT, BODY)
    start_campaign(campaign.id)
    db.session.execute(delete(CampaignRendering))
    db.session.execute(update(Campaign).values(rendered_locale=None))
    db.session.commit()

    mails = by_recipient(deliver())

    assert_layout(mails["dansk"], "da")
    assert_layout(mails["english"], "da")
    assert all(unsubscribed(client, mail) for mail in mails.values())


@pytest.mark.usefixtures("fresh_app")
def test_migration_0006_keeps_a_sending_campaign_and_its_deliveries() -> None:
    """Up from 0005 with a campaign half sent, and back down: nothing is lost
    (on SQLite, a batch-mode copy of ``campaigns`` would have cascaded to the
    deliveries), and the campaign's rendering is its main one for everyone."""
    upgrade(revision="0005")
    statements = [
        "INSERT INTO lists (id, slug, name, description, is_default, created_at)"
        " VALUES (1, 'nyhedsbrev', 'Nyhedsbrev', '', :yes, :now)",
        "INSERT INTO campaigns (id, list_id, subject, body_markdown, sender, status, is_public,"
        " created_at, started_at, rendered_html, rendered_text) VALUES (1, 1, 'Nyt', 'Hej',"
        " 'Inklusio <nyhedsbrev@newsletter.test>', 'sending', :no, :now, :now, :html, :text)",
        "INSERT INTO deliveries (campaign_id, subscriber_id, status, attempts, next_attempt_at)"
        " VALUES (1, NULL, 'sent', 1, :now), (1, NULL, 'queued', 0, :now)",
    ]
    values = {
        "now": "2026-11-20 08:00:00",  # naive UTC, as the DateTime columns hold it
        "yes": True,
        "no": False,
        "html": "<p>Hej</p><p>Afmeld NLPH7f3aUNSUBSCRIBE</p>",
        "text": "Hej\nAfmeld: NLPH7f3aUNSUBSCRIBE\n",
    }
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), values)

    upgrade()

    campaign = db.session.get(Campaign, 1)
    assert campaign is not None
    assert (campaign.rendered_locale, campaign.renderings) == (None, [])
    content = personal.load_content(1, {"da", "en"})
    assert content.languages == {}
    english = Recipient(2, 1, "reader@example.org", "", "k" * 32, 1, 0, "en")
    raw = personal.render(english, content, personal.LinkTemplates.build()).data
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    assert "Afmeld: http://localhost:5000/unsubscribe/" in text_of(message)
    db.session.remove()  # no transaction may hold a lock on campaigns now

    downgrade(revision="0005")

    with db.engine.connect() as conn:
        statuses = conn.execute(sa.text("SELECT status FROM deliveries ORDER BY id")).scalars()
        assert list(statuses) == ["sent", "queued"]
        columns = {c["name"] for c in sa.inspect(conn).get_columns("campaigns")}
        assert "rendered_html" in columns
        assert "rendered_locale" not in columns


def test_the_console_preview_and_the_test_mail_are_in_the_console_language(
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    staff_client: Callable[..., StaffClient],
) -> None:
    readers(subscribed, dansk="da", english="en")
    campaign = create_campaign("nyhedsbrev", SUBJECT, BODY)
    editor = staff_client(Role.EDITOR)

    def preview(lang: str) -> str:
        response = editor.get(f"/admin/campaigns/{campaign.id}/preview?lang={lang}")
        assert response.status_code == 200
        return response.get_data(as_text=True)

    assert LAYOUT["da"].reason in preview("da")
    assert LAYOUT["en"].reason in preview("en")
    for lang in ("en", "da"):
        assert editor.post(f"/admin/campaigns/{campaign.id}/test?lang={lang}").status_code == 302
        [test_mail] = deliver()
        assert LAYOUT[lang].reason in text_of(test_mail)
        assert LAYOUT[lang].reason in html_of(test_mail)
        other = LAYOUT["da" if lang == "en" else "en"].reason
        assert other not in text_of(test_mail)

    start_campaign(campaign.id)
    mails = by_recipient(deliver())
    # Once sent, each language's preview is exactly what its readers got, with
    # the staff member's name and neutral links for the personal parts.
    for local, lang in (("dansk", "da"), ("english", "en")):
        mail = mails[local]
        sent = html_of(mail).replace("\r\n", "\n")
        for url in (str(mail["List-Unsubscribe"]).strip("<>"), ORIGIN + link_path(mail, "manage")):
            sent = sent.replace(escape(url), escape(NEUTRAL))
        assert sent.replace(local.capitalize(), "Test editor") == preview(lang)


def test_the_batch_loader_reads_each_recipients_language(
    app: Flask, default_list: MailingList, subscribed: Subscribed
) -> None:
    readers(subscribed, dansk="da", english="en", tysk="de")
    campaign = create_campaign("nyhedsbrev", SUBJECT, BODY)
    start_campaign(campaign.id)
    db.session.commit()

    loaded = load_recipients(claim_deliveries("test-worker", 10), DeliveryBatch())

    assert sorted((r.email, r.locale) for r in loaded) == [
        ("dansk@example.org", "da"),
        ("english@example.org", "en"),
        ("tysk@example.org", "da"),
    ]
