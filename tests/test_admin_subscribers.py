"""Staff console: the subscriber list (search, filters, keyset pages), the subscriber
page, proof of consent, manual unsubscribe and erasure, with roles and CSRF."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.ledger import Evidence, append_event
from newsletter.ledger.proof import consent_proof
from newsletter.models import (
    AuditEntry,
    Channel,
    ConsentEvent,
    ConsentEventType,
    MailingList,
    Role,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.subscriptions.lists import current_consent_text
from newsletter.subscriptions.search import like_pattern, parse_filter, search_subscribers
from newsletter.validation import InvalidInput

from .fixtures.ledger import seal_and_verify
from .fixtures.staff import StaffClient

ROW_LINK = re.compile(r'href="/admin/subscribers/(\d+)"')


def add_subscriber(
    email: str,
    mailing_list: MailingList | None = None,
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
    name: str = "",
    events: bool = False,
) -> Subscriber:
    """A subscriber written directly (no mail flow), optionally on a list and in the ledger."""
    subscriber = Subscriber(email=email, email_key=email.casefold(), name=name)
    db.session.add(subscriber)
    if mailing_list is not None:
        text = current_consent_text(mailing_list.id)
        subscriber.subscriptions.append(
            Subscription(list_id=mailing_list.id, status=status, consent_text_id=text.id)
        )
        db.session.flush()
        if events:
            append_event(
                event=ConsentEventType.REQUESTED,
                channel=Channel.FORM,
                subscriber=subscriber,
                evidence=Evidence(ip="192.0.2.0/24", user_agent="Test", source_url="http://x/"),
                list_id=mailing_list.id,
                consent_text_id=text.id,
            )
    db.session.commit()
    return subscriber


def listed_ids(html: str) -> list[int]:
    """Subscriber ids linked from a list page, in order."""
    return [int(i) for i in ROW_LINK.findall(html)]


def audit_actions() -> list[str]:
    """Every audit action so far, oldest first (login entries left out)."""
    db.session.commit()
    actions = db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id))
    return [a for a in actions if not a.startswith("staff.")]


# ---------------------------------------------------------------- access

ROUTES = [
    # method, path template, least role, status for a permitted role
    ("GET", "/admin/subscribers", Role.VIEWER, 200),
    ("GET", "/admin/subscribers/{id}", Role.VIEWER, 200),
    ("GET", "/admin/subscribers/{id}/proof", Role.VIEWER, 200),
    ("GET", "/admin/subscribers/{id}/proof.json", Role.VIEWER, 200),
    ("POST", "/admin/subscribers/{id}/unsubscribe", Role.EDITOR, 302),
    ("GET", "/admin/subscribers/{id}/erase", Role.EDITOR, 200),
    ("POST", "/admin/subscribers/{id}/erase", Role.EDITOR, 302),
    ("POST", "/admin/subscribers/export", Role.EDITOR, 200),
]
FORMS = {
    "/admin/subscribers/{id}/unsubscribe": {"list": "all"},
    "/admin/subscribers/{id}/erase": {"confirm": "y"},
    "/admin/subscribers/export": {},
}


@pytest.mark.parametrize(("method", "path", "least", "ok"), ROUTES)
@pytest.mark.parametrize("role", [None, Role.VIEWER, Role.EDITOR, Role.OWNER])
def test_every_route_for_every_role(
    app: Flask,
    default_list: MailingList,
    staff_client: Callable[..., StaffClient],
    method: str,
    path: str,
    least: Role,
    ok: int,
    role: Role | None,
) -> None:
    subscriber = add_subscriber("ada@example.org", default_list, events=True)
    url = path.format(id=subscriber.id)
    if role is None:
        client = app.test_client()
        response = client.get(url) if method == "GET" else client.post(url, data={})
        # GETs go to the login page; POSTs are refused for want of a CSRF token first.
        assert response.status_code == (302 if method == "GET" else 400)
        if method == "GET":
            assert response.location.startswith("/admin/login")
        return
    user = staff_client(role)
    response = user.get(url) if method == "GET" else user.post(url, FORMS[path])
    assert response.status_code == (ok if role.includes(least) else 403)


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/admin/subscribers/{id}/unsubscribe", {"list": "all"}),
        ("/admin/subscribers/{id}/erase", {"confirm": "y"}),
        ("/admin/subscribers/export", {}),
    ],
)
def test_posts_without_csrf_token_are_refused(
    default_list: MailingList, staff_client: Callable[..., StaffClient], path: str, data: dict
) -> None:
    subscriber = add_subscriber("ada@example.org", default_list)
    editor = staff_client(Role.EDITOR)
    url = path.format(id=subscriber.id)
    assert editor.client.post(url, data=data).status_code == 400
    assert editor.client.post(url, data={**data, "csrf_token": "forged"}).status_code == 400
    db.session.commit()
    assert db.session.get(Subscriber, subscriber.id) is not None
    assert db.session.scalar(select(Subscription.status)) == SubscriptionStatus.ACTIVE
    assert audit_actions() == []


def test_unknown_subscriber_is_404(staff_client: Callable[..., StaffClient]) -> None:
    editor = staff_client(Role.EDITOR)
    assert editor.get("/admin/subscribers/999999").status_code == 404
    assert editor.get("/admin/subscribers/999999/proof.json").status_code == 404
    assert editor.post("/admin/subscribers/999999/erase", {"confirm": "y"}).status_code == 404


# ---------------------------------------------------------------- search


def test_search_by_address_fragment_and_name(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    ada = add_subscriber("Ada.Lovelace@Example.org", default_list, name="Ada Lovelace")
    bob = add_subscriber("bob@example.org", default_list, name="Robert Jørgensen")
    add_subscriber("carl@other.test", default_list, name="Carl")
    viewer = staff_client(Role.VIEWER)

    page = viewer.get("/admin/subscribers?q=LOVELACE").get_data(as_text=True)
    assert listed_ids(page) == [ada.id]
    page = viewer.get("/admin/subscribers?q=jørgen").get_data(as_text=True)
    assert listed_ids(page) == [bob.id]
    page = viewer.get("/admin/subscribers?q=example.org").get_data(as_text=True)
    assert listed_ids(page) == [bob.id, ada.id]  # newest first


def test_search_wildcards_are_literal() -> None:
    assert like_pattern("a_b%c\\") == "%a\\_b\\%c\\\\%"


def test_search_treats_underscore_literally(default_list: MailingList, app: Flask) -> None:
    under = add_subscriber("first_last@example.org", default_list)
    add_subscriber("firstxlast@example.org", default_list)
    found = search_subscribers(parse_filter({"q": "t_l"})).subscribers
    assert [s.id for s in found] == [under.id]


def test_filter_by_list_and_status(
    make_list: Callable[..., MailingList], staff_client: Callable[..., StaffClient]
) -> None:
    news = make_list("news", "News")
    events = make_list("events", "Events")
    active = add_subscriber("a@example.org", news, SubscriptionStatus.ACTIVE)
    pending = add_subscriber("p@example.org", news, SubscriptionStatus.PENDING)
    gone = add_subscriber("u@example.org", news, SubscriptionStatus.UNSUBSCRIBED)
    other = add_subscriber("e@example.org", events, SubscriptionStatus.ACTIVE)
    viewer = staff_client(Role.VIEWER)

    def ids(query: str) -> list[int]:
        return listed_ids(viewer.get(f"/admin/subscribers?{query}").get_data(as_text=True))

    assert ids("list=news") == [gone.id, pending.id, active.id]
    assert ids("list=news&status=active") == [active.id]
    assert ids("list=events&status=active") == [other.id]
    assert ids("status=active") == [other.id, active.id]
    assert ids("status=pending&q=example") == [pending.id]
    assert ids("list=news&status=bounced") == []
    assert ids("") == [other.id, gone.id, pending.id, active.id]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("q=ab", "at least 3 characters"),
        ("list=nope", "Unknown list"),
        ("list=Bad%20Slug", "Unknown list"),
        ("status=deleted", "Unknown status"),
        ("q=a%0Ab%0Ac", "control characters"),
        ("q=" + "x" * 255, "at most 254"),
    ],
)
def test_bad_filters_are_explained(
    default_list: MailingList, staff_client: Callable[..., StaffClient], query: str, message: str
) -> None:
    add_subscriber("ada@example.org", default_list)
    response = staff_client(Role.VIEWER).get(f"/admin/subscribers?{query}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert message in page
    assert 'aria-invalid="true"' in page
    assert listed_ids(page) == []


def test_keyset_pages_cover_everything_once(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    for n in range(120):
        db.session.add(Subscriber(email=f"s{n:03}@example.org", email_key=f"s{n:03}@example.org"))
    db.session.commit()
    expected = list(db.session.scalars(select(Subscriber.id).order_by(Subscriber.id.desc())))
    viewer = staff_client(Role.VIEWER)
    seen: list[int] = []
    url = "/admin/subscribers"
    pages = 0
    while url:
        page = viewer.get(url).get_data(as_text=True)
        pages += 1
        seen.extend(listed_ids(page))
        match = re.search(r'rel="next" href="([^"]+)"', page)
        url = match.group(1).replace("&amp;", "&") if match else ""
        if pages > 1:
            assert "First page" in page
    assert pages == 3
    assert seen == expected


def test_keyset_cursor_is_bounded(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    add_subscriber("ada@example.org", default_list)
    viewer = staff_client(Role.VIEWER)
    for before in ("-1", "abc", "9" * 40, "0", "2147483648", "\u00b2"):
        response = viewer.get(f"/admin/subscribers?before={before}")
        assert response.status_code == 400
        assert "before must be a whole number from 1 to 2147483647." in response.get_data(
            as_text=True
        )
    for before in ("", "2147483647"):
        response = viewer.get(f"/admin/subscribers?before={before}")
        assert response.status_code == 200
        assert len(listed_ids(response.get_data(as_text=True))) == 1


def test_parse_filter_names_the_field() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_filter({"status": "nope"})
    assert exc.value.field == "status"


# ---------------------------------------------------------------- subscriber page


def test_subscriber_page_shows_profile_timeline_and_deliveries(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    ada = add_subscriber("ada@example.org", default_list, name="Ada", events=True)
    page = staff_client(Role.VIEWER).get(f"/admin/subscribers/{ada.id}").get_data(as_text=True)
    assert "ada@example.org" in page
    assert "Ada" in page
    assert "requested" in page
    assert "channel: form" in page
    assert "No campaign mail yet." in page
    # A viewer sees no change buttons.
    assert "/unsubscribe" not in page
    assert "/erase" not in page


def test_proof_downloads_as_json_and_is_audited(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    ada = add_subscriber("ada@example.org", default_list, events=True)
    response = staff_client(Role.VIEWER).get(f"/admin/subscribers/{ada.id}/proof.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    document = json.loads(response.get_data(as_text=True))
    assert document == json.loads(json.dumps(consent_proof("ada@example.org")))
    assert [e["event"] for e in document["events"]] == ["requested"]
    assert audit_actions() == ["subscriber.proof"]


def test_proof_printable_page(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    ada = add_subscriber("ada@example.org", default_list, events=True)
    response = staff_client(Role.VIEWER).get(f"/admin/subscribers/{ada.id}/proof")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Proof of consent" in page
    assert "#1 requested" in page
    assert "192.0.2.0/24" in page
    assert current_consent_text(default_list.id).text[:40] in page
    assert "<script" not in page
    assert "style=" not in page
    assert audit_actions() == ["subscriber.proof"]


# ---------------------------------------------------------------- unsubscribe


def test_manual_unsubscribe_is_recorded_with_channel_staff(
    make_list: Callable[..., MailingList], staff_client: Callable[..., StaffClient]
) -> None:
    news = make_list("news", "News")
    events = make_list("events", "Events")
    ada = add_subscriber("ada@example.org", news, events=True)
    db.session.add(
        Subscription(
            subscriber_id=ada.id,
            list_id=events.id,
            status=SubscriptionStatus.ACTIVE,
            consent_text_id=current_consent_text(events.id).id,
        )
    )
    db.session.commit()
    editor = staff_client(Role.EDITOR)
    page = editor.get(f"/admin/subscribers/{ada.id}").get_data(as_text=True)
    assert f'value="{news.id}"' in page
    assert 'value="all"' in page

    response = editor.post(f"/admin/subscribers/{ada.id}/unsubscribe", {"list": str(news.id)})
    assert response.status_code == 302
    db.session.commit()
    statuses = dict(
        db.session.execute(
            select(Subscription.list_id, Subscription.status).where(
                Subscription.subscriber_id == ada.id
            )
        ).all()
    )
    assert statuses == {news.id: SubscriptionStatus.UNSUBSCRIBED, events.id: "active"}
    event = db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq.desc())).first()
    assert event is not None
    assert (event.event, event.channel, event.list_id) == ("withdrawn", "staff", news.id)
    assert event.details == {"staff_id": editor.user.id}
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "subscriber.unsubscribe")
    ).one()
    assert entry.object_id == str(ada.id)
    assert entry.details == {
        "subscriptions": {"news": {"before": "active", "after": "unsubscribed"}}
    }
    assert seal_and_verify().ok

    # "Every list" takes the rest; a second time changes and logs nothing.
    editor.post(f"/admin/subscribers/{ada.id}/unsubscribe", {"list": "all"})
    editor.post(f"/admin/subscribers/{ada.id}/unsubscribe", {"list": "all"})
    db.session.commit()
    assert set(db.session.scalars(select(Subscription.status))) == {"unsubscribed"}
    assert audit_actions() == ["subscriber.unsubscribe", "subscriber.unsubscribe"]


def test_unsubscribe_from_a_list_not_offered_is_refused(
    make_list: Callable[..., MailingList], staff_client: Callable[..., StaffClient]
) -> None:
    news = make_list("news", "News")
    other = make_list("other", "Other")
    ada = add_subscriber("ada@example.org", news)
    editor = staff_client(Role.EDITOR)
    response = editor.post(f"/admin/subscribers/{ada.id}/unsubscribe", {"list": str(other.id)})
    assert response.status_code == 302
    assert "Choose a list" in editor.get(response.location).get_data(as_text=True)
    assert audit_actions() == []


# ---------------------------------------------------------------- erasure


def test_erasure_needs_the_confirm_step(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    ada = add_subscriber("ada@example.org", default_list, events=True)
    editor = staff_client(Role.EDITOR)
    page = editor.get(f"/admin/subscribers/{ada.id}/erase").get_data(as_text=True)
    assert "cannot be undone" in page
    response = editor.post(f"/admin/subscribers/{ada.id}/erase", {})
    assert response.status_code == 200
    assert "Tick the box to confirm." in response.get_data(as_text=True)
    db.session.commit()
    assert db.session.get(Subscriber, ada.id) is not None

    response = editor.post(f"/admin/subscribers/{ada.id}/erase", {"confirm": "y"})
    assert response.status_code == 302
    assert response.location == "/admin/subscribers"
    db.session.commit()
    assert db.session.get(Subscriber, ada.id) is None
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "subscriber.erase")
    ).one()
    assert entry.actor_id == editor.user.id
    assert entry.details == {"channel": "staff", "subscriptions": {"nyhedsbrev": "active"}}
    assert "ada@example.org" not in json.dumps(entry.details)
    erased = db.session.scalars(select(ConsentEvent).where(ConsentEvent.event == "erased")).one()
    assert erased.channel == "staff"
    assert erased.details == {"staff_id": editor.user.id}
    assert seal_and_verify().ok
    assert editor.get(f"/admin/subscribers/{ada.id}").status_code == 404
