"""The suppression list (subscriptions/suppression.py): add, lift, and the two checks."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage

from flask import Flask
from sqlalchemy import func, select

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.ledger.keys import email_digest, email_digests, ledger_keys
from newsletter.models import MailingList, Suppression
from newsletter.subscriptions import suppression

from .conftest import TEST_SECRET

ROTATED_SECRET = "rotated-secret-key-0123456789-abcdefghijklmnop"


def stored() -> list[tuple[str, str]]:
    """Every suppression as (digest, reason)."""
    return [
        (row.email_digest, row.reason)
        for row in db.session.execute(select(Suppression.email_digest, Suppression.reason))
    ]


def test_add_is_idempotent(app: Flask) -> None:
    assert suppression.add("gone@example.org", suppression.BOUNCE) is True
    assert suppression.add("gone@example.org", suppression.ERASED) is False
    db.session.commit()
    assert suppression.add("gone@example.org", suppression.BOUNCE) is False
    db.session.commit()
    # One row, with the first reason, as the address's keyed digest (never in clear).
    assert stored() == [(email_digest("gone@example.org"), "bounce")]


def test_lift_removes_the_address_under_every_key_in_use(
    app_factory: Callable[..., Flask],
) -> None:
    """An address suppressed before the secret was rotated, and again after it:
    a lift takes off both digests, and nothing of another address."""
    before = app_factory(SECRET_KEY=TEST_SECRET, LEDGER_KEY=None)
    with before.app_context():
        suppression.add("bounced@example.org", suppression.BOUNCE)
        suppression.add("other@example.org", suppression.BOUNCE)
        db.session.commit()
        db.session.remove()

    rotated = app_factory(
        SECRET_KEY=ROTATED_SECRET, SECRET_KEY_FALLBACKS=[TEST_SECRET], LEDGER_KEY=None
    )
    with rotated.app_context():
        assert len(ledger_keys()) == 2
        # Under the new key the address is not there yet: add writes its new digest.
        assert suppression.add("bounced@example.org", suppression.ERASED) is True
        db.session.commit()
        digests = set(email_digests("bounced@example.org"))
        assert {digest for digest, _reason in stored()} >= digests

        suppression.lift("bounced@example.org")
        db.session.commit()
        assert not suppression.is_suppressed("bounced@example.org")
        assert not {digest for digest, _reason in stored()} & digests
        assert suppression.is_suppressed("other@example.org")  # found under the old key
        assert db.session.scalar(select(func.count()).select_from(Suppression)) == 1
        db.session.remove()


def test_single_and_batch_checks_agree(app: Flask) -> None:
    suppressed = {f"gone{n}@example.org" for n in range(5)}
    kept = {f"here{n}@example.org" for n in range(5)}
    for address in suppressed:
        suppression.add(address, suppression.BOUNCE)
    db.session.commit()

    for address in suppressed | kept:
        in_batch = bool(suppression.suppressed_among(email_digests(address)))
        assert suppression.is_suppressed(address) is in_batch is (address in suppressed)

    digests = {email_digest(address): address for address in suppressed | kept}
    found = suppression.suppressed_among(list(digests))
    assert {digests[digest] for digest in found} == suppressed
    assert suppression.suppressed_among([]) == set()


def test_the_batch_check_covers_more_digests_than_one_query_takes(app: Flask) -> None:
    suppression.add("needle@example.org", suppression.BOUNCE)
    db.session.commit()
    haystack = [email_digest(f"person{n}@example.org") for n in range(2500)]
    needle = email_digest("needle@example.org")
    # The one suppressed digest at the very end, past two full chunks, and repeated.
    assert suppression.suppressed_among([*haystack, needle, needle]) == {needle}


def test_a_campaign_skips_an_address_suppressed_under_a_key_from_before_a_rotation(
    app: Flask,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    """A bounce recorded before SECRET_KEY was rotated is stored under the old key's
    digest; the claim-time check looks under every key in use, so it is still skipped."""
    for address in ("kept@example.org", "bounced@example.org"):
        subscribed(address)
    old_secret = "the-secret-before-the-rotation-0123456789-abcdef"
    app.config["SECRET_KEY_FALLBACKS"] = [old_secret]
    old_key = ledger_keys()[1]
    db.session.add(
        Suppression(email_digest=email_digest("bounced@example.org", old_key), reason="bounce")
    )
    db.session.commit()
    assert suppression.is_suppressed("bounced@example.org")

    campaign = create_campaign(default_list.slug, "After the rotation", "Hej\n")
    start_campaign(campaign.id)
    mails = deliver()

    assert [mail["To"].addresses[0].addr_spec for mail in mails] == ["kept@example.org"]
