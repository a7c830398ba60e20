"""The console's import pages: roles, CSRF, upload limits, preview, mapping, progress."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from email.message import EmailMessage

import pytest
from flask import Flask
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.models import (
    AuditEntry,
    ImportJob,
    ImportStatus,
    MailingList,
    Role,
    Subscription,
    SubscriptionStatus,
)

from .fixtures.staff import StaffClient

GOOD = (
    b"E-mail;Navn;Samtykke;Kilde\nanna@example.org;Anna;2024-03-01;messe\ncarl@example.org;Carl;;\n"
)

# (method, path with {job} for an import's id, least role, status a permitted role gets)
ROUTES = [
    ("GET", "/admin/imports", Role.EDITOR, 200),
    ("POST", "/admin/imports", Role.EDITOR, 302),
    ("GET", "/admin/imports/{job}", Role.EDITOR, 200),
    ("POST", "/admin/imports/{job}/queue", Role.EDITOR, 302),
    ("POST", "/admin/imports/{job}/discard", Role.EDITOR, 302),
    ("GET", "/admin/imports/{job}/progress", Role.EDITOR, 200),
]


def upload(
    client: StaffClient, mailing_list: MailingList, data: bytes = GOOD, name: str = "people.csv"
) -> object:
    """POST the upload form with a file."""
    return client.post(
        "/admin/imports",
        data={"file": (io.BytesIO(data), name), "list_id": str(mailing_list.id)},
        content_type="multipart/form-data",
    )


def latest_job() -> ImportJob:
    """The newest import job, fresh from the database."""
    db.session.commit()
    job = db.session.scalars(select(ImportJob).order_by(ImportJob.id.desc())).first()
    assert job is not None
    db.session.refresh(job)
    return job


def request_route(client: StaffClient, method: str, path: str, mailing_list: MailingList) -> object:
    """Call one route as a permitted role would, with valid input."""
    if method == "GET":
        return client.get(path)
    if path == "/admin/imports":
        return upload(client, mailing_list)
    if path.endswith("/queue"):
        return client.post(path, {"email": "0", "name": "1", "consented_at": "2", "source": "3"})
    return client.post(path)


@pytest.fixture
def topic(make_list: Callable[..., MailingList]) -> MailingList:
    """A list to import into."""
    return make_list("topic", "Topic")


@pytest.mark.parametrize(("method", "path", "role", "status"), ROUTES)
@pytest.mark.parametrize("who", [Role.VIEWER, Role.EDITOR, Role.OWNER])
def test_import_routes_per_role(
    staff_client: Callable[..., StaffClient],
    topic: MailingList,
    method: str,
    path: str,
    role: Role,
    status: int,
    who: Role,
) -> None:
    editor = staff_client(Role.EDITOR)
    assert upload(editor, topic).status_code == 302  # type: ignore[attr-defined]
    path = path.format(job=latest_job().id)
    client = staff_client(who)
    response = request_route(client, method, path, topic)
    expected = status if client.user.may(role) else 403
    assert response.status_code == expected  # type: ignore[attr-defined]


def test_anonymous_is_sent_to_login(app: Flask, topic: MailingList) -> None:
    response = app.test_client().get("/admin/imports")
    assert response.status_code == 302
    assert "/admin/login" in response.location


def test_upload_without_csrf_token_is_refused(
    staff_client: Callable[..., StaffClient], topic: MailingList
) -> None:
    editor = staff_client(Role.EDITOR)
    response = editor.client.post(
        "/admin/imports",
        data={"file": (io.BytesIO(GOOD), "people.csv"), "list_id": str(topic.id)},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    db.session.commit()
    assert db.session.scalar(select(func.count(ImportJob.id))) == 0


def test_upload_preview_mapping_progress_and_result(
    staff_client: Callable[..., StaffClient],
    topic: MailingList,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    editor = staff_client(Role.EDITOR)
    response = upload(editor, topic)
    job = latest_job()
    assert response.location.endswith(f"/admin/imports/{job.id}")  # type: ignore[attr-defined]

    page = editor.get(f"/admin/imports/{job.id}").get_data(as_text=True)
    assert "anna@example.org" in page  # the preview
    assert "semicolon" in page
    assert re.search(r'<option selected value="0">1: E-mail</option>', page)
    assert re.search(r'<option selected value="3">4: Kilde</option>', page)

    queued = editor.post(
        f"/admin/imports/{job.id}/queue",
        {"email": "0", "name": "1", "consented_at": "2", "source": "3"},
    )
    assert queued.status_code == 302
    progress = editor.get(f"/admin/imports/{job.id}/progress").get_json()
    assert progress["status"] == "queued"
    assert progress["finished"] is False
    page = editor.get(f"/admin/imports/{job.id}").get_data(as_text=True)
    assert "admin-import.js" in page
    assert "Reload" in page

    mails = deliver()
    assert len(mails) == 1  # Carl's confirmation; Anna had evidence
    progress = editor.get(f"/admin/imports/{job.id}/progress").get_json()
    assert progress == {
        "status": "done",
        "finished": True,
        "total_rows": 2,
        "processed_rows": 2,
        "percent": 100,
        "imported_active": 1,
        "imported_pending": 1,
        "unchanged": 0,
        "not_reactivated": 0,
        "errors": 0,
    }
    page = editor.get(f"/admin/imports/{job.id}").get_data(as_text=True)
    assert "admin-import.js" not in page
    statuses = sorted(db.session.scalars(select(Subscription.status)))
    assert statuses == [SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING]
    actions = set(db.session.scalars(select(AuditEntry.action)))
    assert {"import.upload", "import.queue", "import.done"} <= actions
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "import.done")).one()
    assert entry.actor_id == editor.user.id


def test_a_file_with_errors_shows_them_by_line(
    staff_client: Callable[..., StaffClient],
    topic: MailingList,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    editor = staff_client(Role.EDITOR)
    upload(editor, topic, b"email,consented_at\nok@example.org,2024-01-01\nnope,soon\n")
    job = latest_job()
    editor.post(f"/admin/imports/{job.id}/queue", {"email": "0", "consented_at": "1"})
    assert deliver() == []
    page = editor.get(f"/admin/imports/{job.id}").get_data(as_text=True)
    assert "Nothing was imported" in page
    assert "Line 3 (email)" in page
    assert db.session.scalar(select(func.count(Subscription.id))) == 0


def test_upload_larger_than_the_app_wide_limit_is_allowed_for_editors_only(
    app: Flask, staff_client: Callable[..., StaffClient], topic: MailingList
) -> None:
    rows = b"".join(b"person%d@example.org,Person %d\n" % (i, i) for i in range(5000))
    data = b"email,name\n" + rows
    assert len(data) > app.config["MAX_CONTENT_LENGTH"]
    assert upload(staff_client(Role.EDITOR), topic, data).status_code == 302  # type: ignore[attr-defined]
    assert latest_job().total_rows == 5000
    assert upload(staff_client(Role.VIEWER), topic, data).status_code == 413  # type: ignore[attr-defined]
    anonymous = app.test_client().post(
        "/admin/imports",
        data={"file": (io.BytesIO(data), "x.csv")},
        content_type="multipart/form-data",
    )
    assert anonymous.status_code == 413


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("email\nJørgen@example.org\n".encode("cp1252"), "not UTF-8"),
        (b"email,name\na@example.org,A\x00B\n", "Line 2 (name): Contains NUL."),
        (b"", "The file is empty."),
    ],
)
def test_unreadable_files_are_refused_with_a_message(
    staff_client: Callable[..., StaffClient], topic: MailingList, data: bytes, message: str
) -> None:
    response = upload(staff_client(Role.EDITOR), topic, data)
    assert response.status_code == 400  # type: ignore[attr-defined]
    assert message in response.get_data(as_text=True)  # type: ignore[attr-defined]
    db.session.commit()
    assert db.session.scalar(select(func.count(ImportJob.id))) == 0


def test_mapping_needs_an_email_column_once(
    staff_client: Callable[..., StaffClient], topic: MailingList
) -> None:
    editor = staff_client(Role.EDITOR)
    upload(editor, topic)
    job = latest_job()
    response = editor.post(f"/admin/imports/{job.id}/queue", {"email": "", "name": "1"})
    assert response.status_code == 400
    assert "Choose the column that holds the e-mail address." in response.get_data(as_text=True)
    response = editor.post(f"/admin/imports/{job.id}/queue", {"email": "0", "name": "0"})
    assert response.status_code == 400
    assert latest_job().status == ImportStatus.UPLOADED


def test_discard_drops_the_file(
    staff_client: Callable[..., StaffClient], topic: MailingList
) -> None:
    editor = staff_client(Role.EDITOR)
    upload(editor, topic)
    job = latest_job()
    assert editor.post(f"/admin/imports/{job.id}/discard").status_code == 302
    job = latest_job()
    assert (job.status, job.content) == (ImportStatus.FAILED, None)
    # A discarded (or queued) job cannot be queued again.
    response = editor.post(f"/admin/imports/{job.id}/queue", {"email": "0"})
    assert response.status_code == 302
    assert latest_job().status == ImportStatus.FAILED


def test_unknown_job_is_404(staff_client: Callable[..., StaffClient]) -> None:
    editor = staff_client(Role.EDITOR)
    assert editor.get("/admin/imports/999").status_code == 404
    assert editor.get("/admin/imports/999/progress").status_code == 404


def test_import_pages_have_nothing_inline_for_the_csp(
    staff_client: Callable[..., StaffClient],
    topic: MailingList,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    from .test_security import AssetParser

    editor = staff_client(Role.EDITOR)
    upload(editor, topic)
    job = latest_job()
    pages = [editor.get("/admin/imports"), editor.get(f"/admin/imports/{job.id}")]
    editor.post(f"/admin/imports/{job.id}/queue", {"email": "0"})
    pages.append(editor.get(f"/admin/imports/{job.id}"))  # progress
    deliver()
    pages.append(editor.get(f"/admin/imports/{job.id}"))  # result
    for response in pages:
        assert response.status_code == 200
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        parser = AssetParser()
        parser.feed(response.get_data(as_text=True))
        assert parser.inline == []
        assert all(url.startswith("/") for _tag, url in parser.loads)
