"""Who may open what: every /admin route for anonymous, viewer, editor and owner.

The table is written out by hand (what the product promises), not derived from
the code. A route added without a row here fails ``test_every_route_is_in_the_table``.
Forbidden is 403; anonymous requests go to the login page (302). A permitted
request gets the status in the table: a GET renders (200) or redirects (302),
a POST with an empty form is refused for its content (400) or redirects back
(302) but is never forbidden.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from flask import Flask
from sqlalchemy import select

from newsletter.campaigns.service import create_campaign
from newsletter.extensions import db
from newsletter.models import ImportJob, Role, Subscriber

from .fixtures.staff import StaffClient, csrf_from

ROLES = [Role.VIEWER, Role.EDITOR, Role.OWNER]


@dataclass(frozen=True)
class Route:
    """One route: method, a concrete path, the least role, the status it then gets."""

    endpoint: str
    method: str
    path: str
    least: Role | None  # None: any logged-in person (own account pages)
    allowed_status: int


# {ids} in a path is filled from the objects made by the `objects` fixture.
TABLE = [
    Route("admin.dashboard", "GET", "/admin/", Role.VIEWER, 200),
    Route("admin.intake_failed", "GET", "/admin/intake", Role.VIEWER, 200),
    Route("admin.intake_retry", "POST", "/admin/intake/1/retry", Role.EDITOR, 302),
    Route("admin.intake_discard", "POST", "/admin/intake/1/discard", Role.EDITOR, 302),
    Route("admin.password", "GET", "/admin/account/password", None, 200),
    Route("admin.password", "POST", "/admin/account/password", None, 200),
    Route("admin.two_factor", "GET", "/admin/account/two-factor", None, 200),
    Route("admin.two_factor", "POST", "/admin/account/two-factor", None, 200),
    Route("admin.two_factor_disable", "POST", "/admin/account/two-factor/disable", None, 302),
    Route("admin.staff_list", "GET", "/admin/staff", Role.OWNER, 200),
    Route("admin.staff_new", "GET", "/admin/staff/new", Role.OWNER, 200),
    Route("admin.staff_new", "POST", "/admin/staff/new", Role.OWNER, 200),
    Route("admin.staff_edit", "GET", "/admin/staff/{staff}", Role.OWNER, 200),
    Route("admin.staff_edit", "POST", "/admin/staff/{staff}", Role.OWNER, 302),
    Route(
        "admin.staff_reset_two_factor",
        "POST",
        "/admin/staff/{staff}/reset-two-factor",
        Role.OWNER,
        302,
    ),
    Route("admin.settings", "POST", "/admin/settings", Role.OWNER, 302),
    Route("admin.audit_log", "GET", "/admin/audit", Role.OWNER, 200),
    # Subscribers (erasure and unsubscribe last: they change the subscriber).
    Route("admin.subscribers", "GET", "/admin/subscribers", Role.VIEWER, 200),
    Route("admin.subscriber_export", "POST", "/admin/subscribers/export", Role.EDITOR, 200),
    Route("admin.subscriber_detail", "GET", "/admin/subscribers/{subscriber}", Role.VIEWER, 200),
    Route(
        "admin.subscriber_proof", "GET", "/admin/subscribers/{subscriber}/proof", Role.VIEWER, 200
    ),
    Route(
        "admin.subscriber_proof_json",
        "GET",
        "/admin/subscribers/{subscriber}/proof.json",
        Role.VIEWER,
        200,
    ),
    Route(
        "admin.subscriber_proof_bundle",
        "POST",
        "/admin/subscribers/{subscriber}/proof-bundle.json",
        Role.VIEWER,
        200,
    ),
    Route(
        "admin.subscriber_erase", "GET", "/admin/subscribers/{subscriber}/erase", Role.EDITOR, 200
    ),
    Route(
        "admin.subscriber_erase", "POST", "/admin/subscribers/{subscriber}/erase", Role.EDITOR, 200
    ),
    Route(
        "admin.subscriber_unsubscribe",
        "POST",
        "/admin/subscribers/{subscriber}/unsubscribe",
        Role.EDITOR,
        302,
    ),
    # Lists.
    Route("admin.lists", "GET", "/admin/lists", Role.VIEWER, 200),
    Route("admin.list_new", "GET", "/admin/lists/new", Role.EDITOR, 200),
    Route("admin.list_new", "POST", "/admin/lists/new", Role.EDITOR, 200),
    Route("admin.list_detail", "GET", "/admin/lists/{list}", Role.VIEWER, 200),
    Route("admin.list_edit", "GET", "/admin/lists/{list}/edit", Role.EDITOR, 200),
    Route("admin.list_edit", "POST", "/admin/lists/{list}/edit", Role.EDITOR, 200),
    Route("admin.list_archive", "POST", "/admin/lists/{list}/archive", Role.EDITOR, 302),
    Route("admin.list_unarchive", "POST", "/admin/lists/{list}/unarchive", Role.EDITOR, 302),
    # Imports (discard last: it removes the job).
    Route("admin.imports", "GET", "/admin/imports", Role.EDITOR, 200),
    Route("admin.import_upload", "POST", "/admin/imports", Role.EDITOR, 400),
    Route("admin.import_job", "GET", "/admin/imports/{import_job}", Role.EDITOR, 200),
    Route("admin.import_progress", "GET", "/admin/imports/{import_job}/progress", Role.EDITOR, 200),
    Route("admin.import_queue", "POST", "/admin/imports/{import_job}/queue", Role.EDITOR, 400),
    Route("admin.import_discard", "POST", "/admin/imports/{import_job}/discard", Role.EDITOR, 302),
    # Campaigns (start, pause, resume and cancel last: they change its state).
    Route("admin.campaigns", "GET", "/admin/campaigns", Role.VIEWER, 200),
    Route("admin.campaign_new", "GET", "/admin/campaigns/new", Role.EDITOR, 200),
    Route("admin.campaign_new", "POST", "/admin/campaigns/new", Role.EDITOR, 200),
    Route("admin.campaign_detail", "GET", "/admin/campaigns/{campaign}", Role.VIEWER, 200),
    Route("admin.campaign_edit", "GET", "/admin/campaigns/{campaign}/edit", Role.EDITOR, 200),
    Route("admin.campaign_edit", "POST", "/admin/campaigns/{campaign}/edit", Role.EDITOR, 200),
    Route(
        "admin.campaign_preview",
        "GET",
        "/admin/campaigns/{campaign}/preview",
        Role.VIEWER,
        200,
    ),
    Route("admin.campaign_preview_draft", "POST", "/admin/campaigns/preview", Role.EDITOR, 400),
    Route(
        "admin.campaign_progress_json",
        "GET",
        "/admin/campaigns/{campaign}/progress.json",
        Role.VIEWER,
        200,
    ),
    Route("admin.campaign_public", "POST", "/admin/campaigns/{campaign}/public", Role.EDITOR, 302),
    Route("admin.campaign_test", "POST", "/admin/campaigns/{campaign}/test", Role.EDITOR, 302),
    Route("admin.campaign_start", "POST", "/admin/campaigns/{campaign}/start", Role.EDITOR, 302),
    Route("admin.campaign_pause", "POST", "/admin/campaigns/{campaign}/pause", Role.EDITOR, 302),
    Route("admin.campaign_resume", "POST", "/admin/campaigns/{campaign}/resume", Role.EDITOR, 302),
    Route("admin.campaign_cancel", "POST", "/admin/campaigns/{campaign}/cancel", Role.EDITOR, 302),
    Route("admin.deliverability", "GET", "/admin/deliverability", Role.VIEWER, 200),
]
PREVIEW_ENDPOINTS = {"admin.campaign_preview", "admin.campaign_preview_draft"}
# Reachable without login by design (the login steps) and logout; tested in test_admin_auth.
OUTSIDE_TABLE = {"admin.login", "admin.login_code", "admin.logout", "admin.static"}


@pytest.fixture
def objects(make_staff, default_list, subscribe) -> dict[str, int]:
    """One of each object the paths name."""
    subscribe("reader@example.org", name="Reader")
    subscriber = db.session.scalar(select(Subscriber.id))
    campaign = create_campaign(default_list.slug, "Hello", "Body", "Inklusio <nl@example.org>")
    job = ImportJob(list_id=default_list.id, filename="a.csv", content="email\nx@example.org\n")
    db.session.add(job)
    db.session.commit()
    return {
        "import_job": job.id,
        "staff": make_staff(Role.VIEWER).id,
        "subscriber": int(subscriber),
        "list": default_list.id,
        "campaign": campaign.id,
    }


def expected(route: Route, role: Role | None) -> int:
    """The status the table promises for ``role`` (None = anonymous)."""
    if role is None:
        return 302
    if route.least is None or role.includes(route.least):
        return route.allowed_status
    return 403


def test_every_route_is_in_the_table(app: Flask) -> None:
    covered = {(r.endpoint, r.method) for r in TABLE}
    missing = [
        (rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/admin") and rule.endpoint not in OUTSIDE_TABLE
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        if (rule.endpoint, method) not in covered
    ]
    assert missing == []


@pytest.mark.parametrize("role", [None, *ROLES], ids=lambda r: str(r or "anonymous"))
def test_each_role_gets_what_the_table_says(
    app: Flask,
    role: Role | None,
    staff_client: Callable[..., StaffClient],
    objects: dict[str, int],
) -> None:
    member = staff_client(role) if role else None
    anonymous = app.test_client()
    # Anonymous POSTs carry a valid CSRF token (from the login page), so what
    # refuses them is the login requirement, not the CSRF check.
    token = csrf_from(anonymous.get("/admin/login"))
    failures = []
    for route in TABLE:
        path = route.path.format(**objects)
        if member is None:
            response = anonymous.open(path, method=route.method, data={"csrf_token": token})
        elif route.method == "GET":
            response = member.get(path)
        else:
            response = member.post(path, {})
        want = expected(route, role)
        if response.status_code != want:
            failures.append(f"{route.method} {path}: {response.status_code}, expected {want}")
        failures += [f"{route.method} {path}: {p}" for p in header_problems(route, response)]
    assert failures == []


def header_problems(route: Route, response) -> list[str]:
    """Security headers every console response must carry: a CSP allowing only our own
    scripts, and the rest checked below."""
    headers = response.headers
    csp = headers.get("Content-Security-Policy", "")
    problems = []
    if "script-src 'self'" not in csp and "default-src 'none'" not in csp:
        problems.append(f"CSP allows scripts from elsewhere: {csp!r}")
    # The campaign preview is the one framed document: the mail as recipients see
    # it, with its inlined CSS, in a sandbox that runs no script (see architecture.md).
    framed = "sandbox" in csp
    if framed and route.endpoint not in PREVIEW_ENDPOINTS:
        problems.append("only the campaign preview is a framed document")
    if "unsafe-inline" in csp and not framed:
        problems.append("CSP has 'unsafe-inline'")
    if ("frame-ancestors 'self'" if framed else "frame-ancestors 'none'") not in csp:
        problems.append(f"framing not restricted: {csp!r}")
    if headers.get("X-Content-Type-Options") != "nosniff":
        problems.append("no X-Content-Type-Options: nosniff")
    if headers.get("Referrer-Policy") not in ("same-origin", "no-referrer"):
        problems.append(f"Referrer-Policy {headers.get('Referrer-Policy')!r}")
    return problems
