"""IP minimisation (IP_LOGGING) is applied before anything is written, on every path.

The hosted form's case is in test_ledger.py. Here: the API, the confirm link,
the preference page, one-click unsubscribe, and the staff audit trail; then a
scan of the source, so that a new code path cannot store a raw address.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import AuditEntry, ConsentEvent, MailingList, Role, StaffUser

from .fixtures.ledger import seal_and_verify
from .fixtures.mailflow import link_path
from .fixtures.staff import log_in

PACKAGE = Path(__file__).resolve().parents[1] / "newsletter"
CASES = [
    ("full", "203.0.113.77", "203.0.113.77"),
    ("truncated", "203.0.113.77", "203.0.113.0/24"),
    ("truncated", "2001:db8:1234:5678::1", "2001:db8:1234::/48"),
    ("none", "203.0.113.77", None),
]


@pytest.mark.parametrize(("mode", "address", "stored"), CASES)
def test_every_ledger_write_from_a_request_is_minimised(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    deliver: Callable[[], list[EmailMessage]],
    mode: str,
    address: str,
    stored: str | None,
) -> None:
    app.config["IP_LOGGING"] = mode
    client.environ_base["REMOTE_ADDR"] = address
    response = client.post("/api/v1/subscriptions", json={"email": "ip@example.org"})
    assert response.status_code == 202
    (confirmation,) = deliver()
    assert client.post(link_path(confirmation, "confirm")).status_code == 200
    (welcome,) = deliver()
    manage = link_path(welcome, "manage")
    assert client.post(manage, data={"lists": [], "locale": "en"}).status_code == 200
    unsubscribe = link_path(welcome, "unsubscribe")
    assert client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200

    db.session.commit()
    events = db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.seq)).all()
    assert [(e.event, e.channel) for e in events] == [
        ("requested", "api"),
        ("confirmed", "confirm_link"),
        ("withdrawn", "manage_page"),
        ("preferences_changed", "manage_page"),
    ]
    assert [e.ip for e in events] == [stored] * len(events)
    assert seal_and_verify().ok


@pytest.mark.parametrize(("mode", "address", "stored"), CASES)
def test_staff_audit_entries_are_minimised(
    app: Flask,
    make_staff: Callable[..., StaffUser],
    mode: str,
    address: str,
    stored: str | None,
) -> None:
    app.config["IP_LOGGING"] = mode
    user = make_staff(Role.OWNER)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    assert log_in(client, user).status_code == 302
    client.post("/admin/login", data={"email": user.email, "password": "wrong"})
    db.session.commit()
    entries = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert entries, "logging in writes audit entries"
    assert [e.ip for e in entries] == [stored] * len(entries)


def calls(tree: ast.AST) -> list[ast.Call]:
    """Every call in a module."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def name_of(node: ast.expr) -> str:
    """``f`` for ``f(...)``, ``b`` for ``a.b(...)``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def test_no_code_path_reads_the_client_address_without_minimising_it() -> None:
    """``request.remote_addr`` is read in two places only, each inside minimise_ip(...);
    the console passes ``ip=client_ip()`` to every service that writes an audit entry."""
    readers: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        relative = str(path.relative_to(PACKAGE))
        raw = [
            node
            for node in ast.walk(tree)
            if (isinstance(node, ast.Attribute) and node.attr in {"remote_addr", "access_route"})
            or (isinstance(node, ast.Constant) and node.value in {"REMOTE_ADDR", "X-Forwarded-For"})
        ]
        minimised = [
            arg
            for call in calls(tree)
            if name_of(call.func) == "minimise_ip"
            for arg in call.args[:1]
            if isinstance(arg, ast.Attribute) and arg.attr == "remote_addr"
        ]
        if raw:
            readers[relative] = len(raw)
            assert len(raw) == len(minimised), f"{relative} reads the client address raw"
        if relative.startswith("admin/"):
            for call in calls(tree):
                for keyword in call.keywords:
                    if keyword.arg == "ip":
                        value = keyword.value
                        where = f"{relative}:{call.lineno} passes ip= without client_ip()"
                        assert isinstance(value, ast.Call), where
                        assert name_of(value.func) == "client_ip", where
    assert readers == {"ledger/evidence.py": 1, "admin/access.py": 1}
