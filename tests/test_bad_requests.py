"""Malformed requests are answered 4xx with the app's own error page, never 500.

Route ids outside the database's integer range or written in other scripts'
digits, query arguments that are not ASCII numbers or representable dates, NUL
in filters, lone surrogates in JSON text, TOTP codes in other digits. And the
staff lists' second pages (the pager once overwrote the translation function).
(The same classes are fuzzed in test_hostile_input.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from newsletter.extensions import db
from newsletter.models import AuditEntry, Campaign, ImportJob, MailingList, Role, StaffUser

from .fixtures.staff import StaffClient

BIG_IDS = ["2147483648", "9223372036854775808", str(2**70)]
ARABIC_ONE = "\u0661"  # ARABIC-INDIC DIGIT ONE: int() reads it as 1
SUPERSCRIPT_TWO = "\u00b2"  # isdigit() is True, int() raises
DANISH = {"Accept-Language": "da"}


def _second_page(owner: StaffClient, path: str) -> str:
    """Page 2 of a staff list: 200, with links back to page 1 and on to page 3."""
    response = owner.get(f"{path}?page=2&lang=da")
    text = response.get_data(as_text=True)
    assert response.status_code == 200, text[:400]
    assert 'rel="prev"' in text
    assert "page=1" in text
    assert "Side 2" in text  # the pager's own text, translated
    return text


def test_second_page_of_the_audit_log(
    staff_client: Callable[..., StaffClient],
) -> None:
    owner = staff_client(Role.OWNER)
    start = datetime.now(UTC) - timedelta(days=1)
    db.session.add_all(
        AuditEntry(
            actor_email="bulk@example.org",
            action="test.bulk",
            object_type="test",
            object_id=str(n),
            details={},
            occurred_at=start + timedelta(seconds=n),
        )
        for n in range(120)
    )
    db.session.commit()
    text = _second_page(owner, "/admin/audit")
    assert 'rel="next"' in text


def test_second_page_of_the_campaign_list(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    owner = staff_client(Role.OWNER)
    db.session.add_all(
        Campaign(list_id=default_list.id, subject=f"Nr. {n}", body_markdown="Hej", sender="")
        for n in range(55)
    )
    db.session.commit()
    text = _second_page(owner, "/admin/campaigns")
    assert "Nr. 0" in text


def test_second_page_of_the_import_list(
    staff_client: Callable[..., StaffClient], default_list: MailingList
) -> None:
    owner = staff_client(Role.OWNER)
    user = db.session.get(StaffUser, owner.user.id)
    db.session.add_all(
        ImportJob(list_id=default_list.id, created_by_id=user.id, filename=f"fil-{n}.csv")
        for n in range(25)
    )
    db.session.commit()
    text = _second_page(owner, "/admin/imports")
    assert "fil-0.csv" in text
