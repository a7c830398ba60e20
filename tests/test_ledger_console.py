"""Staff console: the subscriber's proof page shows each event's verification status
(sealed and verified, waiting to be sealed, FAILED with the reason), and offers
the proof bundle as an audited POST download.

Every kind of tampering the page must catch is made here with plain SQL, as
someone with write access to the database would: an event's field, its
personal fields, its consent text, a stored leaf, the checkpoint's signature.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import select, text, update

import newsletter_verify
from newsletter.extensions import db
from newsletter.ledger import Evidence, append_event
from newsletter.ledger.seal import seal_waiting
from newsletter.ledger.status import FAILED, VERIFIED, WAITING, AddressStatus, address_status
from newsletter.models import (
    AuditEntry,
    Channel,
    ConsentEvent,
    ConsentEventType,
    ConsentText,
    LedgerCheckpoint,
    MailingList,
    Role,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.subscriptions.lists import current_consent_text

from .fixtures.staff import StaffClient

EVIDENCE = Evidence(ip="192.0.2.0/24", user_agent="Test", source_url="http://x/")


def add_subscriber(email: str, mailing_list: MailingList, events: int = 2) -> Subscriber:
    """A subscriber on the list with ``events`` ledger events (requested, confirmed, ...)."""
    subscriber = Subscriber(email=email, email_key=email.casefold(), name="")
    db.session.add(subscriber)
    consent = current_consent_text(mailing_list.id)
    subscriber.subscriptions.append(
        Subscription(
            list_id=mailing_list.id, status=SubscriptionStatus.ACTIVE, consent_text_id=consent.id
        )
    )
    db.session.flush()
    kinds = [ConsentEventType.REQUESTED, ConsentEventType.CONFIRMED]
    for n in range(events):
        append_event(
            event=kinds[min(n, 1)],
            channel=Channel.FORM,
            subscriber=subscriber,
            evidence=EVIDENCE,
            list_id=mailing_list.id,
            consent_text_id=consent.id,
        )
    db.session.commit()
    return subscriber


def proof_page(viewer: StaffClient, subscriber: Subscriber) -> str:
    """The printable proof page's HTML."""
    response = viewer.get(f"/admin/subscribers/{subscriber.id}/proof")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def seqs_of(subscriber: Subscriber) -> list[int]:
    """The subscriber's event numbers, in order."""
    db.session.commit()
    return list(
        db.session.scalars(
            select(ConsentEvent.seq)
            .where(ConsentEvent.subscriber_id == subscriber.id)
            .order_by(ConsentEvent.seq)
        )
    )


def english_status(address: str) -> AddressStatus:
    """address_status as a staff member reading English gets it."""
    db.session.commit()
    with current_app.test_request_context(headers={"Accept-Language": "en"}):
        found = address_status(address)
    db.session.commit()
    return found


def states(address: str) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Each event's state and reasons (in English), by seq."""
    return {seq: (s.state, s.reasons) for seq, s in english_status(address).events.items()}


def test_sealed_events_are_verified_and_new_ones_wait(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    ada = add_subscriber("ada@example.org", default_list)
    add_subscriber("other@example.org", default_list)
    seal_waiting()
    again = db.session.get(Subscriber, ada.id)
    assert again is not None
    append_event(
        event=ConsentEventType.WITHDRAWN,
        channel=Channel.MANAGE_PAGE,
        subscriber=again,
        evidence=EVIDENCE,
        list_id=default_list.id,
    )
    db.session.commit()
    first, second, third = seqs_of(ada)
    assert states("ada@example.org") == {
        first: (VERIFIED, ()),
        second: (VERIFIED, ()),
        third: (WAITING, ()),
    }
    page = proof_page(staff_client(Role.VIEWER), ada)
    assert page.count("Sealed and verified") == 2
    assert page.count("Waiting to be sealed") == 1
    assert "FAILED" not in page
    assert "Each event is checked against the latest signed checkpoint: 4 events" in page


def test_before_any_seal_every_event_waits(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    ada = add_subscriber("ada@example.org", default_list)
    assert {state for state, _ in states("ada@example.org").values()} == {WAITING}
    page = proof_page(staff_client(Role.VIEWER), ada)
    assert "Nothing is sealed yet: no checkpoint has been signed." in page
    assert page.count("Waiting to be sealed") == 2


def test_a_changed_event_shows_failed_with_the_reason(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    ada = add_subscriber("ada@example.org", default_list)
    seal_waiting()
    first, second = seqs_of(ada)
    db.session.execute(
        update(ConsentEvent).where(ConsentEvent.seq == first).values(channel=Channel.IMPORT)
    )
    db.session.commit()
    found = states("ada@example.org")
    assert found[second] == (VERIFIED, ())
    state, reasons = found[first]
    assert state == FAILED
    assert reasons == (
        "does not match its sealed leaf: the event, its consent text or its privacy policy "
        "was changed after it was sealed",
    )
    page = proof_page(staff_client(Role.VIEWER), ada)
    assert "1 event FAILED verification: see below." in page
    assert page.count(">FAILED</strong>") == 1
    assert "does not match its sealed leaf" in page
    assert page.count("Sealed and verified") == 1


def test_changed_personal_fields_break_the_commitment(default_list: MailingList) -> None:
    ada = add_subscriber("ada@example.org", default_list)
    seal_waiting()
    first, second = seqs_of(ada)
    db.session.execute(update(ConsentEvent).where(ConsentEvent.seq == second).values(ip="10.0.0.1"))
    db.session.commit()
    found = states("ada@example.org")
    assert found[first] == (VERIFIED, ())
    assert found[second] == (FAILED, ("its personal fields do not match their commitment",))


def test_an_edited_consent_text_fails_every_event_that_showed_it(
    default_list: MailingList,
) -> None:
    add_subscriber("ada@example.org", default_list)
    seal_waiting()
    db.session.execute(
        update(ConsentText)
        .where(ConsentText.list_id == default_list.id)
        .values(text="Something else entirely.")
    )
    db.session.commit()
    found = states("ada@example.org")
    assert {state for state, _ in found.values()} == {FAILED}
    for _, reasons in found.values():
        assert "its consent text (version 1) was edited after it was written" in reasons
        assert any("does not match its sealed leaf" in r for r in reasons)


def test_a_replaced_stored_leaf_fails_its_inclusion_proof(default_list: MailingList) -> None:
    ada = add_subscriber("ada@example.org", default_list)
    seal_waiting()
    first, second = seqs_of(ada)
    db.session.execute(
        text("UPDATE ledger_nodes SET hash = :h WHERE level = 0 AND idx = :i"),
        {"h": bytes(32), "i": first - 1},
    )
    db.session.commit()
    found = states("ada@example.org")
    state, reasons = found[first]
    assert state == FAILED
    assert "its inclusion proof does not lead to the signed checkpoint's root" in reasons
    assert any("does not match its sealed leaf" in r for r in reasons)
    # The neighbour's own leaf holds, but its proof passes through the replaced hash.
    assert found[second] == (
        FAILED,
        ("its inclusion proof does not lead to the signed checkpoint's root",),
    )


def test_a_forged_checkpoint_fails_every_sealed_event(
    default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    ada = add_subscriber("ada@example.org", default_list)
    seal_waiting()
    note = db.session.scalars(select(LedgerCheckpoint.note)).one()
    origin, size, _root, rest = note.split("\n", 3)
    forged = "\n".join([origin, size, "A" * 43 + "=", rest])
    db.session.execute(update(LedgerCheckpoint).values(note=forged))
    db.session.commit()
    status = english_status("ada@example.org")
    assert status.checkpoint is not None
    assert status.checkpoint.reasons == (
        "the checkpoint's signature does not verify with any key of the ledger",
    )
    assert status.failed == 2
    db.session.commit()
    page = proof_page(staff_client(Role.VIEWER), ada)
    assert "The checkpoint FAILED" in page
    assert "2 events FAILED verification: see below." in page


def test_the_bundle_download_seals_first_verifies_and_is_audited(
    app: Flask, default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    ada = add_subscriber("ada@example.org", default_list)  # nothing sealed yet
    viewer = staff_client(Role.VIEWER)
    assert f'action="/admin/subscribers/{ada.id}/proof-bundle.json"' in proof_page(viewer, ada)
    detail = viewer.get(f"/admin/subscribers/{ada.id}").get_data(as_text=True)
    assert f'action="/admin/subscribers/{ada.id}/proof-bundle.json"' in detail

    response = viewer.post(f"/admin/subscribers/{ada.id}/proof-bundle.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="consent-proof-bundle-subscriber-{ada.id}.json"'
    )
    assert response.headers["Cache-Control"] == "no-store"
    bundle = json.loads(response.get_data(as_text=True))
    assert [json.loads(e["leaf"])["event"] for e in bundle["events"]] == [
        "requested",
        "confirmed",
    ]
    key = newsletter_verify.parse_vkey(app.test_client().get("/ledger/key").get_data(as_text=True))
    assert newsletter_verify.verify_bundle(bundle, key).ok

    db.session.commit()
    entries = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    proofs = [(e.action, e.object_id, e.details) for e in entries if e.action == "subscriber.proof"]
    assert proofs[-1] == ("subscriber.proof", str(ada.id), {"form": "bundle"})


def test_the_bundle_needs_a_csrf_token_and_a_login(
    app: Flask, default_list: MailingList, staff_client: Callable[..., StaffClient]
) -> None:
    ada = add_subscriber("ada@example.org", default_list)
    path = f"/admin/subscribers/{ada.id}/proof-bundle.json"
    viewer = staff_client(Role.VIEWER)
    assert viewer.client.post(path).status_code == 400
    assert viewer.client.post(path, data={"csrf_token": "forged"}).status_code == 400
    assert app.test_client().post(path).status_code == 400
    assert viewer.post("/admin/subscribers/999999/proof-bundle.json").status_code == 404
    db.session.commit()
    assert db.session.scalars(select(AuditEntry.action)).all().count("subscriber.proof") == 0


def test_the_proof_page_with_a_failure_is_valid_html(
    default_list: MailingList, staff_client: Callable[..., StaffClient], tmp_path: Path
) -> None:
    from .test_html_validity import report, vnu_errors

    ada = add_subscriber("ada@example.org", default_list)
    seal_waiting()
    first, _second = seqs_of(ada)
    db.session.execute(
        update(ConsentEvent).where(ConsentEvent.seq == first).values(channel=Channel.IMPORT)
    )
    db.session.commit()
    viewer = staff_client(Role.VIEWER)
    files = []
    for name, path in (
        ("proof", f"/admin/subscribers/{ada.id}/proof"),
        ("detail", f"/admin/subscribers/{ada.id}"),
    ):
        file = tmp_path / f"{name}.html"
        file.write_bytes(viewer.get(path).get_data())
        files.append(file)
    assert "FAILED" in files[0].read_text(encoding="utf-8")
    errors = vnu_errors(files)
    assert errors == {}, report(errors)
