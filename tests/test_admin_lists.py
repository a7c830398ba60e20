"""Lists in the staff console: roles, CSRF, create, edit, archive, consent versions."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage

import pytest
from flask import Flask
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import (
    AuditEntry,
    ConsentEvent,
    ConsentText,
    MailingList,
    Role,
    Subscription,
)

from .fixtures.ledger import seal_and_verify
from .fixtures.staff import StaffClient

NEW_TEXT = "Ja tak, send mig nyhedsbrevet. Jeg kan framelde mig med linket i hver mail (v2)."


def fresh(model: type, key: object) -> object:
    """Re-read a row after the console changed it (ends our transaction first)."""
    db.session.commit()
    db.session.expire_all()
    return db.session.get(model, key)


def audits(action: str) -> list[AuditEntry]:
    """Audit entries with this action, oldest first."""
    db.session.commit()
    return list(
        db.session.scalars(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        )
    )


def edit_data(mailing_list: MailingList, **changes: str) -> dict[str, str]:
    """The edit form as a browser sends it unchanged, with ``changes`` applied."""
    data = {
        "name": mailing_list.name,
        "description": mailing_list.description,
        "consent_text": mailing_list.consent_texts[-1].text,
    }
    if mailing_list.is_default:
        data["is_default"] = "y"
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (Role.VIEWER, {"index": 200, "detail": 200, "new": 403, "edit": 403, "archive": 403}),
        (Role.EDITOR, {"index": 200, "detail": 200, "new": 200, "edit": 200, "archive": 302}),
        (Role.OWNER, {"index": 200, "detail": 200, "new": 200, "edit": 200, "archive": 302}),
    ],
)
def test_each_route_for_each_role(
    staff_client: Callable[..., StaffClient],
    default_list: MailingList,
    make_list: Callable[..., MailingList],
    role: Role,
    expected: dict[str, int],
) -> None:
    other = make_list("andet", "Andet")
    user = staff_client(role)
    got = {
        "index": user.get("/admin/lists").status_code,
        "detail": user.get(f"/admin/lists/{default_list.id}").status_code,
        "new": user.get("/admin/lists/new").status_code,
        "edit": user.get(f"/admin/lists/{default_list.id}/edit").status_code,
        "archive": user.post(f"/admin/lists/{other.id}/archive").status_code,
    }
    assert got == expected
    assert user.post(f"/admin/lists/{other.id}/unarchive").status_code == expected["archive"]


def test_anonymous_is_sent_to_login(client, default_list: MailingList) -> None:
    for path in ("/admin/lists", f"/admin/lists/{default_list.id}", "/admin/lists/new"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.location.startswith("/admin/login")


def test_unknown_list_is_404(staff_client: Callable[..., StaffClient]) -> None:
    editor = staff_client(Role.EDITOR)
    assert editor.get("/admin/lists/999999").status_code == 404
    assert editor.get("/admin/lists/999999/edit").status_code == 404
    assert editor.post("/admin/lists/999999/archive").status_code == 404


def test_posts_without_csrf_token_are_refused(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    editor = staff_client(Role.EDITOR)
    lid = default_list.id
    for path, data in [
        ("/admin/lists/new", {"slug": "x", "name": "X", "consent_text": "Ja."}),
        (f"/admin/lists/{lid}/edit", {"name": "Hacked", "consent_text": "Nej."}),
        (f"/admin/lists/{lid}/archive", {}),
        (f"/admin/lists/{lid}/unarchive", {}),
    ]:
        assert editor.client.post(path, data=data).status_code == 400, path
        forged = {**data, "csrf_token": "forged"}
        assert editor.client.post(path, data=forged).status_code == 400, path
    unchanged = fresh(MailingList, lid)
    assert unchanged.name == "Nyhedsbrev"
    assert len(unchanged.consent_texts) == 1
    assert audits("list.update") == []


def test_editor_creates_a_list_with_version_one_and_it_is_audited(
    staff_client: Callable[..., StaffClient],
) -> None:
    editor = staff_client(Role.EDITOR)
    response = editor.post(
        "/admin/lists/new",
        {
            "slug": "kurser",
            "name": "Kurser",
            "description": "Nye kurser",
            "consent_text": "Ja tak til mails om kurser.",
            "is_default": "y",
        },
    )
    assert response.status_code == 302
    created = db.session.scalar(select(MailingList).where(MailingList.slug == "kurser"))
    assert created is not None
    assert response.location == f"/admin/lists/{created.id}"
    assert (created.name, created.description, created.is_default) == (
        "Kurser",
        "Nye kurser",
        True,
    )
    assert [(t.version, t.text) for t in created.consent_texts] == [
        (1, "Ja tak til mails om kurser.")
    ]
    [entry] = audits("list.create")
    assert entry.actor_id == editor.user.id
    assert entry.object_id == str(created.id)
    assert entry.details["consent_version"] == 1
    page = editor.get("/admin/lists").get_data(as_text=True)
    assert "Kurser" in page


def test_create_refuses_bad_and_duplicate_slugs(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    editor = staff_client(Role.EDITOR)
    base = {"name": "X", "consent_text": "Ja."}
    bad = editor.post("/admin/lists/new", {**base, "slug": "Not A Slug"})
    assert bad.status_code == 200
    assert 'aria-invalid="true"' in bad.get_data(as_text=True)
    duplicate = editor.post("/admin/lists/new", {**base, "slug": "nyhedsbrev"})
    assert "exists already" in duplicate.get_data(as_text=True)
    too_long = editor.post("/admin/lists/new", {**base, "slug": "lang", "consent_text": "x" * 5001})
    assert too_long.status_code == 200
    db.session.commit()
    assert db.session.scalar(select(MailingList).where(MailingList.slug == "lang")) is None
    assert audits("list.create") == []


def test_new_consent_text_is_a_new_version_and_the_old_one_is_untouched(
    app: Flask,
    staff_client: Callable[..., StaffClient],
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    subscribe: Callable[..., EmailMessage],
) -> None:
    subscribed("first@example.org")
    db.session.commit()
    v1 = db.session.scalars(select(ConsentText).where(ConsentText.list_id == default_list.id)).one()
    v1_id, v1_text, v1_created = v1.id, v1.text, v1.created_at
    subscription = db.session.scalars(select(Subscription)).one()
    assert subscription.consent_text_id == v1_id
    events_before = {
        e.id: e.consent_text_id for e in db.session.scalars(select(ConsentEvent)).all()
    }
    assert set(events_before.values()) == {v1_id}

    editor = staff_client(Role.EDITOR)
    response = editor.post(
        f"/admin/lists/{default_list.id}/edit", edit_data(default_list, consent_text=NEW_TEXT)
    )
    assert response.status_code == 302

    db.session.commit()
    db.session.expire_all()
    texts = db.session.scalars(
        select(ConsentText)
        .where(ConsentText.list_id == default_list.id)
        .order_by(ConsentText.version)
    ).all()
    assert [(t.id == v1_id, t.version, t.text) for t in texts] == [
        (True, 1, v1_text),
        (False, 2, NEW_TEXT),
    ]
    assert texts[0].created_at == v1_created  # the row itself was not rewritten
    assert db.session.get(Subscription, subscription.id).consent_text_id == v1_id
    events_after = {e.id: e.consent_text_id for e in db.session.scalars(select(ConsentEvent)).all()}
    assert events_after == events_before  # the ledger still names version 1
    assert seal_and_verify().ok

    [entry] = audits("list.consent_version")
    assert entry.details == {
        "before": {"version": 1, "consent_text_id": v1_id},
        "after": {"version": 2, "consent_text_id": texts[1].id},
    }
    assert entry.actor_id == editor.user.id
    assert audits("list.update") == []  # nothing else changed

    # New signups agree to version 2 from now on; the form shows it is in force.
    subscribe("second@example.org")
    db.session.commit()
    newest = db.session.scalars(select(Subscription).order_by(Subscription.id.desc())).first()
    assert newest.consent_text_id == texts[1].id
    page = editor.get(f"/admin/lists/{default_list.id}/edit").get_data(as_text=True)
    assert "Version 2 is in force" in page
    assert NEW_TEXT in page
    assert v1_text in page  # the history


def test_saving_the_same_consent_text_adds_no_version(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    editor = staff_client(Role.EDITOR)
    data = edit_data(default_list, name="Nyhedsbrevet", description="Om os")
    # A browser sends CRLF line ends and may add trailing space: still the same text.
    data["consent_text"] = data["consent_text"] + "  \r\n"
    assert editor.post(f"/admin/lists/{default_list.id}/edit", data).status_code == 302
    changed = fresh(MailingList, default_list.id)
    assert len(changed.consent_texts) == 1
    assert (changed.name, changed.description) == ("Nyhedsbrevet", "Om os")
    [entry] = audits("list.update")
    assert entry.details == {
        "description": {"before": "", "after": "Om os"},
        "name": {"before": "Nyhedsbrev", "after": "Nyhedsbrevet"},
    }
    assert audits("list.consent_version") == []


def test_only_one_list_is_the_default(
    staff_client: Callable[..., StaffClient],
    default_list: MailingList,
    make_list: Callable[..., MailingList],
) -> None:
    other = make_list("andet", "Andet")
    editor = staff_client(Role.EDITOR)
    data = edit_data(other, is_default="y")
    assert editor.post(f"/admin/lists/{other.id}/edit", data).status_code == 302
    assert fresh(MailingList, other.id).is_default is True
    assert fresh(MailingList, default_list.id).is_default is False


def test_archive_and_unarchive(
    client,
    staff_client: Callable[..., StaffClient],
    default_list: MailingList,
    make_list: Callable[..., MailingList],
) -> None:
    other = make_list("andet", "Andet liste")
    editor = staff_client(Role.EDITOR)
    assert "Andet liste" in client.get("/subscribe").get_data(as_text=True)

    assert editor.post(f"/admin/lists/{other.id}/archive").status_code == 302
    assert fresh(MailingList, other.id).archived_at is not None
    assert "Andet liste" not in client.get("/subscribe").get_data(as_text=True)
    assert "archived since" in editor.get(f"/admin/lists/{other.id}").get_data(as_text=True)

    assert editor.post(f"/admin/lists/{other.id}/unarchive").status_code == 302
    assert fresh(MailingList, other.id).archived_at is None
    assert [e.action for e in audits("list.archive") + audits("list.unarchive")] == [
        "list.archive",
        "list.unarchive",
    ]

    # The default list cannot be archived: the signup form would lose its default.
    refused = editor.post(f"/admin/lists/{default_list.id}/archive", follow_redirects=True)
    assert "Make another list the default" in refused.get_data(as_text=True)
    assert fresh(MailingList, default_list.id).archived_at is None


def test_viewer_sees_the_version_in_force_and_the_history(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    editor = staff_client(Role.EDITOR)
    editor.post(
        f"/admin/lists/{default_list.id}/edit", edit_data(default_list, consent_text=NEW_TEXT)
    )
    viewer = staff_client(Role.VIEWER)
    page = viewer.get(f"/admin/lists/{default_list.id}").get_data(as_text=True)
    assert "Version 2" in page
    assert "in force" in page
    assert "Version 1" in page
    assert "Edit</a>" not in page  # no editing controls for a viewer
    assert f"/admin/lists/{default_list.id}/archive" not in page
