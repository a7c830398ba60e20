"""Campaigns in the staff console: roles, CSRF, compose, live preview, test mail,
schedule, start, pause, resume, cancel, public, progress."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from flask import Flask
from sqlalchemy import select

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.models import (
    AuditEntry,
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    MailingList,
    OutboxKind,
    OutboxMessage,
    OutboxStatus,
    Role,
)

from .fixtures.mailflow import html_of, link_path, text_of
from .fixtures.staff import StaffClient

BODY = "# Nyt fra os\n\nHej {{ name }}!\n\nLæs [mere](https://inklusio.dk/nyt).\n"
SENDER = "Inklusio <nyhedsbrev@newsletter.test>"
NEUTRAL = "http://newsletter.test/subscribe?list=nyhedsbrev"
URL = re.compile(r"https?://[^\s<>\"]+")


def draft(subject: str = "Nyt i november", body: str = BODY) -> Campaign:
    """A draft campaign to the default list, made by the service."""
    return create_campaign("nyhedsbrev", subject, body, SENDER)


def compose_data(**changes: str) -> dict[str, str]:
    """The compose form as a browser sends it."""
    data = {"list_slug": "nyhedsbrev", "subject": "Nyt i november", "sender": SENDER}
    data["body"] = BODY
    data.update(changes)
    return data


def fresh(campaign_id: int) -> Campaign:
    """Re-read a campaign after the console changed it."""
    db.session.commit()
    db.session.expire_all()
    campaign = db.session.get(Campaign, campaign_id)
    assert campaign is not None
    return campaign


def audit_trail(campaign_id: int) -> list[tuple[str, dict]]:
    """(action, details) of a campaign's audit entries, oldest first."""
    db.session.commit()
    rows = db.session.scalars(
        select(AuditEntry)
        .where(AuditEntry.object_type == "campaign", AuditEntry.object_id == str(campaign_id))
        .order_by(AuditEntry.id)
    )
    return [(row.action, row.details) for row in rows]


def status_change(before: str, after: str) -> dict[str, dict[str, str]]:
    """The audit details of a status change."""
    return {"status": {"before": before, "after": after}}


def future(hours: int = 2) -> datetime:
    """A whole minute some hours ahead, in UTC."""
    return (datetime.now(UTC) + timedelta(hours=hours)).replace(second=0, microsecond=0)


# Every campaign route: (method, path template, least role, status for a permitted role).
ROUTES = [
    ("GET", "/admin/campaigns", Role.VIEWER, 200),
    ("GET", "/admin/campaigns/{id}", Role.VIEWER, 200),
    ("GET", "/admin/campaigns/{id}/preview", Role.VIEWER, 200),
    ("GET", "/admin/campaigns/{id}/progress.json", Role.VIEWER, 200),
    ("GET", "/admin/campaigns/new", Role.EDITOR, 200),
    ("GET", "/admin/campaigns/{id}/edit", Role.EDITOR, 200),
    ("POST", "/admin/campaigns/preview?part=html", Role.EDITOR, 200),
    ("POST", "/admin/campaigns/preview?part=text", Role.EDITOR, 200),
    ("POST", "/admin/campaigns/new", Role.EDITOR, 302),
    ("POST", "/admin/campaigns/{id}/edit", Role.EDITOR, 302),
    ("POST", "/admin/campaigns/{id}/test", Role.EDITOR, 302),
    ("POST", "/admin/campaigns/{id}/public", Role.EDITOR, 302),
    ("POST", "/admin/campaigns/{id}/start", Role.EDITOR, 302),
    ("POST", "/admin/campaigns/{id}/pause", Role.EDITOR, 302),
    ("POST", "/admin/campaigns/{id}/resume", Role.EDITOR, 302),
    ("POST", "/admin/campaigns/{id}/cancel", Role.EDITOR, 302),
]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR, Role.OWNER])
def test_each_route_for_each_role(
    staff_client: Callable[..., StaffClient], default_list: MailingList, role: Role
) -> None:
    campaign = draft()
    user = staff_client(role)
    got, expected = [], []
    for method, template, least, status in ROUTES:
        path = template.format(id=campaign.id)
        if method == "GET":
            response = user.get(path)
        else:
            data = compose_data() if path.endswith(("/new", "/edit", "=html", "=text")) else {}
            response = user.post(path, data)
        got.append((method, path, response.status_code))
        expected.append((method, path, status if role.includes(least) else 403))
    assert got == expected


def test_anonymous_is_sent_to_login(client, default_list: MailingList) -> None:
    campaign = draft()
    for path in ("/admin/campaigns", f"/admin/campaigns/{campaign.id}/progress.json"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.location.startswith("/admin/login")


def test_posts_without_csrf_token_are_refused(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    campaign = draft()
    editor = staff_client(Role.EDITOR)
    posts = [template for method, template, _, _ in ROUTES if method == "POST"]
    for template in posts:
        path = template.format(id=campaign.id)
        assert editor.client.post(path, data=compose_data()).status_code == 400, path
        forged = {**compose_data(), "csrf_token": "forged"}
        assert editor.client.post(path, data=forged).status_code == 400, path
    assert fresh(campaign.id).status == CampaignStatus.DRAFT
    assert audit_trail(campaign.id) == []
    assert db.session.scalars(select(OutboxMessage)).all() == []


def test_compose_and_edit_a_draft_are_audited(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    editor = staff_client(Role.EDITOR)
    page = editor.get("/admin/campaigns/new").get_data(as_text=True)
    assert "can be edited while it is a draft or scheduled" in page
    assert "subject and sender are read each time a batch is sent" in page
    assert "Inklusio &lt;nyhedsbrev@example.org&gt;" in page  # the sender hint, escaped
    created = editor.post("/admin/campaigns/new", compose_data())
    assert created.status_code == 302
    campaign = db.session.scalars(select(Campaign)).one()
    assert created.location == f"/admin/campaigns/{campaign.id}"
    assert (campaign.subject, campaign.sender, campaign.body_markdown) == (
        "Nyt i november",
        SENDER,
        BODY,
    )
    form = editor.get(f"/admin/campaigns/{campaign.id}/edit").get_data(as_text=True)
    assert html.escape(BODY, quote=False) in form  # the body is in the textarea
    assert 'value="Nyt i november"' in form
    assert '<option selected value="nyhedsbrev">' in form
    edited = editor.post(
        f"/admin/campaigns/{campaign.id}/edit",
        compose_data(subject="Nyt i december", body=BODY.replace("\n", "\r\n")),
    )
    assert edited.status_code == 302
    assert fresh(campaign.id).subject == "Nyt i december"
    assert fresh(campaign.id).body_markdown == BODY  # line ends as typed, stored as LF
    trail = audit_trail(campaign.id)
    assert [action for action, _ in trail] == ["campaign.create", "campaign.update"]
    assert trail[1][1] == {"subject": {"before": "Nyt i november", "after": "Nyt i december"}}


def test_compose_refuses_bad_input(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    editor = staff_client(Role.EDITOR)
    for changes in (
        {"subject": ""},
        {"subject": "x" * 201},
        {"sender": "not an address"},
        {"list_slug": "unknown"},
        {"body": "   "},
    ):
        response = editor.post("/admin/campaigns/new", compose_data(**changes))
        assert response.status_code == 200, changes
        assert 'aria-invalid="true"' in response.get_data(as_text=True), changes
    assert db.session.scalars(select(Campaign)).all() == []


def test_a_long_body_is_accepted_by_the_compose_form(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    # Far above the 64 KiB MAX_CONTENT_LENGTH of ordinary forms.
    body = "Æblegrød og rødgrød med fløde. " * 8000
    editor = staff_client(Role.EDITOR)
    assert editor.post("/admin/campaigns/new", compose_data(body=body)).status_code == 302
    preview = editor.post("/admin/campaigns/preview?part=text", compose_data(body=body))
    assert preview.status_code == 200


def normalised(markup: str, name: str, personal_urls: list[str], *, is_html: bool) -> str:
    """A received part with the recipient's personal parts swapped for the preview's,
    and the wire's CRLF line ends read as LF."""
    markup = markup.replace("\r\n", "\n")
    for url in personal_urls:
        markup = markup.replace(
            html.escape(url) if is_html else url, NEUTRAL_ESCAPED if is_html else NEUTRAL
        )
    return markup.replace(html.escape(name) if is_html else name, "PERSON")


NEUTRAL_ESCAPED = html.escape(NEUTRAL)


def test_preview_is_exactly_what_the_recipient_gets(
    app: Flask,
    staff_client: Callable[..., StaffClient],
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    subscribed("reader@example.org", name="Zyxa Reader")
    editor = staff_client(Role.EDITOR)
    english = {"Accept-Language": "en"}  # the console (and its preview) in English
    data = compose_data(
        body=BODY
        + "\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![logo](http://newsletter.test/static/logo.png)\n"
    )
    preview_html = editor.post("/admin/campaigns/preview?part=html", data, headers=english)
    preview_text = editor.post("/admin/campaigns/preview?part=text", data, headers=english)
    assert preview_html.status_code == preview_text.status_code == 200
    assert "Hej Test editor!" in preview_html.get_data(as_text=True)
    assert preview_text.json["text"].count("Hej Test editor!") == 1

    assert editor.post("/admin/campaigns/new", data).status_code == 302
    campaign = db.session.scalars(select(Campaign)).one()
    saved = editor.get(f"/admin/campaigns/{campaign.id}/preview", headers=english)
    assert saved.get_data(as_text=True) == preview_html.get_data(as_text=True)
    assert editor.post(f"/admin/campaigns/{campaign.id}/start", headers=english).status_code == 302
    [mail] = deliver()

    personal = [
        str(mail["List-Unsubscribe"]).strip("<>"),
        "http://newsletter.test" + link_path(mail, "manage"),
    ]
    received_html = normalised(html_of(mail), "Zyxa Reader", personal, is_html=True)
    received_text = normalised(text_of(mail), "Zyxa Reader", personal, is_html=False)
    assert received_html == preview_html.get_data(as_text=True).replace("Test editor", "PERSON")
    assert received_text == preview_text.json["text"].replace("Test editor", "PERSON")
    # Once sent, the campaign page shows the frozen rendering that went out.
    after = editor.get(f"/admin/campaigns/{campaign.id}/preview").get_data(as_text=True)
    assert after == preview_html.get_data(as_text=True)


def test_preview_document_has_its_own_framing_policy(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    campaign = draft()
    editor = staff_client(Role.EDITOR)
    for response in (
        editor.get(f"/admin/campaigns/{campaign.id}/preview"),
        editor.post("/admin/campaigns/preview?part=html", compose_data()),
    ):
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'self'" in csp
        assert "default-src 'none'" in csp
        assert "sandbox" in csp
        assert "script-src" not in csp  # no script at all (default-src 'none')
        assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert response.headers["Cache-Control"] == "no-store"
    page = editor.get(f"/admin/campaigns/{campaign.id}/edit")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    markup = page.get_data(as_text=True)
    assert '<iframe name="campaign-preview" class="mail-preview" sandbox=""' in markup
    assert '<script src="/static/admin-campaign.js" defer></script>' in markup
    assert re.search(r"<script(?![^>]*\ssrc=)", markup) is None  # no inline script
    assert " style=" not in markup
    script = editor.get("/static/admin-campaign.js")
    script.close()  # a file response: release the file
    assert script.status_code == 200


def test_preview_of_a_half_written_draft_and_of_bad_input(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    editor = staff_client(Role.EDITOR)
    empty = editor.post("/admin/campaigns/preview?part=text", compose_data(subject="", body=""))
    assert empty.status_code == 200
    assert "Nyhedsbrev" in empty.json["text"]
    bad = editor.post("/admin/campaigns/preview?part=text", compose_data(list_slug="nope"))
    assert bad.status_code == 400
    assert "error" in bad.json
    assert db.session.scalars(select(Campaign)).all() == []  # a preview saves nothing


def test_test_mail_goes_to_the_staff_member_through_the_worker(
    staff_client: Callable[..., StaffClient],
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    subscribed("reader@example.org", name="Reader")
    campaign = draft()
    editor = staff_client(Role.EDITOR)
    assert editor.post(f"/admin/campaigns/{campaign.id}/test").status_code == 302
    assert editor.post(f"/admin/campaigns/{campaign.id}/test").status_code == 302  # double click
    rows = db.session.scalars(
        select(OutboxMessage).where(OutboxMessage.status == OutboxStatus.QUEUED)
    ).all()
    assert [(r.kind, r.staff_user_id, r.subscriber_id) for r in rows] == [
        (OutboxKind.CAMPAIGN_TEST, editor.user.id, None)
    ]
    [mail] = deliver()
    assert str(mail["To"]) == f"Test editor <{editor.user.email}>"
    assert mail["Subject"] == "[Test] Nyt i november"
    assert mail["From"] == SENDER
    assert "Hej Test editor!" in text_of(mail)
    assert "Hej Test editor!" in html_of(mail)
    for header in ("List-Unsubscribe", "List-Unsubscribe-Post", "List-Id"):
        assert mail[header] is None
    links = URL.findall(text_of(mail))
    assert NEUTRAL in links
    assert not [u for u in links if "/unsubscribe/" in u or "/manage/" in u]
    assert fresh(campaign.id).status == CampaignStatus.DRAFT  # a test starts nothing
    assert [a for a, _ in audit_trail(campaign.id)] == ["campaign.test_mail"]


def test_schedule_pause_resume_start_pause_resume_cancel_are_audited(
    staff_client: Callable[..., StaffClient],
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
) -> None:
    subscribed("reader@example.org")
    campaign = draft()
    editor = staff_client(Role.EDITOR)
    at = future()
    page = editor.get(f"/admin/campaigns/{campaign.id}").get_data(as_text=True)
    assert "Send at (UTC)" in page
    assert "UTC now" in page

    past = editor.post(f"/admin/campaigns/{campaign.id}/start", {"at": "2020-01-01T08:00"})
    assert past.status_code == 400
    assert "That time has passed" in past.get_data(as_text=True)
    assert fresh(campaign.id).status == CampaignStatus.DRAFT

    def post(action: str, **data: str) -> None:
        response = editor.post(f"/admin/campaigns/{campaign.id}/{action}", data)
        assert response.status_code == 302
        assert response.location == f"/admin/campaigns/{campaign.id}"

    post("start", at=at.strftime("%Y-%m-%dT%H:%M"))
    scheduled = fresh(campaign.id)
    assert (scheduled.status, scheduled.scheduled_at) == (CampaignStatus.SCHEDULED, at)
    shown = editor.get(f"/admin/campaigns/{campaign.id}").get_data(as_text=True)
    assert at.strftime("%Y-%m-%d %H:%M") + " UTC" in shown
    post("pause")
    assert fresh(campaign.id).status == CampaignStatus.PAUSED
    post("resume")
    assert fresh(campaign.id).status == CampaignStatus.SCHEDULED
    post("start")
    assert fresh(campaign.id).status == CampaignStatus.SENDING
    post("pause")
    post("resume")
    post("cancel")
    assert fresh(campaign.id).status == CampaignStatus.CANCELLED
    assert {d.status for d in db.session.scalars(select(Delivery))} == {DeliveryStatus.CANCELLED}

    refused = editor.post(f"/admin/campaigns/{campaign.id}/resume", follow_redirects=True)
    assert "cannot be resumed" in refused.get_data(as_text=True)

    assert audit_trail(campaign.id) == [
        ("campaign.schedule", {**status_change("draft", "scheduled"), "at": at.isoformat()}),
        ("campaign.pause", status_change("scheduled", "paused")),
        ("campaign.resume", status_change("paused", "scheduled")),
        ("campaign.start", {**status_change("scheduled", "sending"), "queued": 1}),
        ("campaign.pause", status_change("sending", "paused")),
        ("campaign.resume", status_change("paused", "sending")),
        ("campaign.cancel", status_change("sending", "cancelled")),
    ]


def test_progress_json_matches_a_real_delivery(
    client,
    staff_client: Callable[..., StaffClient],
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    welcomes = [subscribed(f"reader{n}@example.org") for n in range(3)]
    campaign = draft()
    editor = staff_client(Role.EDITOR)
    assert editor.post(f"/admin/campaigns/{campaign.id}/start").status_code == 302
    before = editor.get(f"/admin/campaigns/{campaign.id}/progress.json").json
    assert (before["total"], before["remaining"], before["sent"], before["status"]) == (
        3,
        3,
        0,
        "sending",
    )
    # Someone leaves after the start: skipped at claim time, and counted.
    assert client.post(link_path(welcomes[0], "unsubscribe")).status_code == 200
    mails = deliver()
    assert len(mails) == 2
    data = editor.get(f"/admin/campaigns/{campaign.id}/progress.json").json
    assert {
        k: data[k] for k in ("status", "total", "done", "sent", "failed", "skipped", "remaining")
    } == {
        "status": "done",
        "total": 3,
        "done": 3,
        "sent": 2,
        "failed": 0,
        "skipped": 1,
        "remaining": 0,
    }
    assert data["eta_seconds"] == 0
    assert data["rate"] >= 0
    page = editor.get(f"/admin/campaigns/{campaign.id}").get_data(as_text=True)
    assert '<progress id="progress-bar" max="3" value="3">' in page
    assert 'data-field="skipped">1<' in page


def test_editing_a_sending_campaign_is_refused(
    staff_client: Callable[..., StaffClient],
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
) -> None:
    subscribed("reader@example.org")
    campaign = draft()
    start_campaign(campaign.id)
    editor = staff_client(Role.EDITOR)
    page = editor.get(f"/admin/campaigns/{campaign.id}/edit")
    assert page.status_code == 409
    assert "can no longer be edited" in page.get_data(as_text=True)
    response = editor.post(
        f"/admin/campaigns/{campaign.id}/edit", compose_data(subject="Changed mid-send")
    )
    assert response.status_code == 409
    assert fresh(campaign.id).subject == "Nyt i november"
    assert audit_trail(campaign.id) == []
    detail = editor.get(f"/admin/campaigns/{campaign.id}").get_data(as_text=True)
    edit_block = re.search(r'<div data-statuses="draft scheduled"[^>]*>', detail)
    assert edit_block is not None
    assert "hidden" in edit_block.group()


def test_mark_public_and_back(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    campaign = draft()
    editor = staff_client(Role.EDITOR)
    assert editor.post(f"/admin/campaigns/{campaign.id}/public", {"public": "1"}).status_code == 302
    assert fresh(campaign.id).is_public is True
    assert editor.post(f"/admin/campaigns/{campaign.id}/public", {"public": "0"}).status_code == 302
    assert fresh(campaign.id).is_public is False
    assert audit_trail(campaign.id) == [
        ("campaign.public", {"public": {"before": False, "after": True}}),
        ("campaign.public", {"public": {"before": True, "after": False}}),
    ]


def test_unknown_campaign_is_404(staff_client: Callable[..., StaffClient]) -> None:
    editor = staff_client(Role.EDITOR)
    for path in ("/admin/campaigns/999999", "/admin/campaigns/999999/progress.json"):
        assert editor.get(path).status_code == 404
    assert editor.post("/admin/campaigns/999999/pause").status_code == 404
