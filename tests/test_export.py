"""CSV export: the console's filtered view and `newsletter list export` (alias
`newsletter export`), streamed, with spreadsheet formulas neutralised, and audited."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskCliRunner
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import (
    AuditEntry,
    MailingList,
    Role,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from newsletter.subscriptions.csv_export import COLUMNS, export_rows, neutralise
from newsletter.subscriptions.lists import current_consent_text
from newsletter.subscriptions.search import parse_filter

from .fixtures.staff import StaffClient


def add(
    email: str,
    mailing_list: MailingList,
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
    name: str = "",
) -> Subscriber:
    """A subscriber on one list, confirmed when active."""
    subscriber = Subscriber(email=email, email_key=email.casefold(), name=name)
    subscriber.subscriptions.append(
        Subscription(
            list_id=mailing_list.id,
            status=status,
            consent_text_id=current_consent_text(mailing_list.id).id,
            confirmed_at=utcnow() if status == SubscriptionStatus.ACTIVE else None,
        )
    )
    db.session.add(subscriber)
    db.session.commit()
    return subscriber


def parse(text: str) -> list[dict[str, str]]:
    """CSV text as dicts by header."""
    return list(csv.DictReader(io.StringIO(text)))


def exports() -> list[AuditEntry]:
    """The export audit entries."""
    db.session.commit()
    return list(
        db.session.scalars(select(AuditEntry).where(AuditEntry.action == "subscribers.export"))
    )


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+31 20 123", "'+31 20 123"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("Ada = Lovelace", "Ada = Lovelace"),
        ("", ""),
    ],
)
def test_formula_cells_are_neutralised(cell: str, expected: str) -> None:
    assert neutralise(cell) == expected


def test_console_export_streams_the_filtered_view(
    make_list: Callable[..., MailingList], staff_client: Callable[..., StaffClient]
) -> None:
    news = make_list("news", "News")
    other = make_list("other", "Other")
    add("ada@example.org", news, name='=HYPERLINK("http://evil","x")')
    add("-bob@example.org", news, name="@SUM(1)")
    add("pending@example.org", news, SubscriptionStatus.PENDING)
    add("carl@example.org", other)
    editor = staff_client(Role.EDITOR)
    page = editor.get("/admin/subscribers?list=news&status=active").get_data(as_text=True)
    assert '<input type="hidden" name="list" value="news">' in page
    assert '<input type="hidden" name="status" value="active">' in page

    response = editor.post(
        "/admin/subscribers/export", {"list": "news", "status": "active", "q": ""}
    )

    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith(
        'attachment; filename="subscribers-news-'
    )
    text = response.get_data(as_text=True)
    assert text.splitlines()[0] == ",".join(COLUMNS)
    rows = parse(text)
    assert [(r["email"], r["name"], r["list"], r["status"]) for r in rows] == [
        ("'-bob@example.org", "'@SUM(1)", "news", "active"),
        ("ada@example.org", '\'=HYPERLINK("http://evil","x")', "news", "active"),
    ]
    assert all(r["confirmed_at"] and r["requested_at"] for r in rows)
    assert rows[0]["consent_text_version"] == "1"
    (entry,) = exports()
    assert entry.actor_id == editor.user.id
    assert entry.details == {"filter": {"list": "news", "status": "active"}, "target": "download"}


def test_console_export_with_a_search(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    add("ada@example.org", default_list)
    add("bob@example.org", default_list)
    response = staff_client(Role.EDITOR).post("/admin/subscribers/export", {"q": "ada@"})
    assert [r["email"] for r in parse(response.get_data(as_text=True))] == ["ada@example.org"]


def test_console_export_refuses_a_bad_filter(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    response = staff_client(Role.EDITOR).post("/admin/subscribers/export", {"status": "nope"})
    assert response.status_code == 400
    assert exports() == []


def test_viewers_see_no_export_button(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    page = staff_client(Role.VIEWER).get("/admin/subscribers").get_data(as_text=True)
    assert "/admin/subscribers/export" not in page


def test_export_reads_in_batches_and_covers_every_row_once(
    make_list: Callable[..., MailingList],
) -> None:
    news = make_list("news", "News")
    other = make_list("other", "Other")
    for n in range(10):
        subscriber = add(f"s{n}@example.org", news)
        if n % 3 == 0:  # on two lists: two rows without a list filter
            subscriber.subscriptions.append(
                Subscription(
                    list_id=other.id,
                    status=SubscriptionStatus.PENDING,
                    consent_text_id=current_consent_text(other.id).id,
                )
            )
    db.session.commit()
    rows = list(export_rows(parse_filter({}), batch_size=3))
    assert rows[0] == list(COLUMNS)
    emails = [(r[0], r[3]) for r in rows[1:]]
    assert len(emails) == 14 == len(set(emails))
    assert emails[:2] == [("s9@example.org", "news"), ("s9@example.org", "other")]
    only_news = list(export_rows(parse_filter({"list": "news"}), batch_size=4))
    assert len(only_news) == 11


def test_export_command_writes_a_lists_csv(
    runner: FlaskCliRunner, make_list: Callable[..., MailingList], tmp_path: Path
) -> None:
    news = make_list("news", "News")
    add("ada@example.org", news, name="Ada")
    add("gone@example.org", news, SubscriptionStatus.UNSUBSCRIBED)

    result = runner.invoke(args=["export", "--list", "news"])
    assert result.exit_code == 0, result.output
    rows = parse(result.stdout)
    assert [(r["email"], r["status"]) for r in rows] == [
        ("gone@example.org", "unsubscribed"),
        ("ada@example.org", "active"),
    ]

    target = tmp_path / "active.csv"
    result = runner.invoke(
        args=["export", "--list", "news", "--status", "active", "--output", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert [r["email"] for r in parse(target.read_text(encoding="utf-8"))] == ["ada@example.org"]
    entries = exports()
    assert [e.actor_email for e in entries] == ["(command line)", "(command line)"]
    assert entries[1].details == {
        "filter": {"list": "news", "status": "active"},
        "target": f"file {target}",
    }


@pytest.mark.parametrize("command", [["list", "export"], ["export"]])
def test_list_export_and_its_top_level_alias_write_the_same_audited_csv(
    runner: FlaskCliRunner, make_list: Callable[..., MailingList], command: list[str]
) -> None:
    news = make_list("news", "News")
    add("ada@example.org", news, name="Ada")
    add("gone@example.org", news, SubscriptionStatus.UNSUBSCRIBED)

    result = runner.invoke(args=[*command, "--list", "news", "--status", "active"])
    assert result.exit_code == 0, result.output
    assert [(r["email"], r["status"]) for r in parse(result.stdout)] == [
        ("ada@example.org", "active")
    ]
    [entry] = exports()
    assert entry.details == {"filter": {"list": "news", "status": "active"}, "target": "stdout"}
    refused = runner.invoke(args=[*command, "--list", "nope"])
    assert refused.exit_code == 2
    assert "Unknown list" in refused.output


def test_export_command_refuses_an_unknown_list(runner: FlaskCliRunner, app) -> None:
    result = runner.invoke(args=["export", "--list", "nope"])
    assert result.exit_code == 2
    assert "Unknown list" in result.output
    assert exports() == []
