"""CSV import: parsing, rules, whole-or-nothing, the worker's lease, and the command.

The console's pages are tested in test_admin_imports.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select, update

from newsletter.extensions import db
from newsletter.imports import jobs
from newsletter.imports.jobs import not_reactivated
from newsletter.imports.mapping import guess_mapping
from newsletter.imports.parse import FileProblem, decode, iter_records, sniff_delimiter
from newsletter.imports.run import LeaseLost, claim_next, run_claimed
from newsletter.imports.validate import parse_consented_at
from newsletter.models import (
    AuditEntry,
    ConsentEvent,
    ImportJob,
    ImportStatus,
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.subscriptions.suppression import add as suppress
from newsletter.validation import InvalidInput

from .fixtures.ledger import seal_and_verify
from .fixtures.mailflow import Deliver, link_path

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)

GOOD = (
    b"email,name,consented_at,source\n"
    b"anna@example.org,Anna,2024-03-01,signup form at the fair\n"
    b"bo@example.org,Bo,2024-03-02T14:05:00+01:00,website footer form\n"
    b"carl@example.org,Carl,,\n"
    b"dora@example.org,Dora,2024-03-03,\n"
)


def all_counts() -> dict[str, int]:
    """Rows in every table, committing around the reads (SQLite has one writer)."""
    db.session.commit()
    result = {
        table.name: db.session.scalar(select(func.count()).select_from(table)) or 0
        for table in db.metadata.sorted_tables
    }
    db.session.commit()
    return result


def status_of(email: str, mailing_list: MailingList) -> SubscriptionStatus | None:
    """The subscription status of an address on a list."""
    db.session.commit()
    return db.session.scalar(
        select(Subscription.status)
        .join(Subscriber)
        .where(Subscriber.email_key == email, Subscription.list_id == mailing_list.id)
    )


def address_of(mail: EmailMessage) -> str:
    """The bare address a mail went to."""
    return parseaddr(str(mail["To"]))[1]


def queue(data: bytes, mailing_list: MailingList, filename: str = "people.csv") -> ImportJob:
    """Upload and queue a file with the guessed mapping, as the console does."""
    job = jobs.create_job(data, filename, mailing_list.id, actor=None, ip=None)
    choices = {str(f): str(p) for p, f in (job.mapping or {}).items() if f}
    jobs.queue_job(job, choices, actor=None, ip=None)
    return job


def run(data: bytes, mailing_list: MailingList) -> ImportJob:
    """Queue a file and run it here, as a worker would."""
    job = queue(data, mailing_list)
    claim = claim_next()
    assert claim is not None
    assert claim.job_id == job.id
    return run_claimed(claim)


# -- reading the file ---------------------------------------------------------------------------


def test_decode_accepts_utf8_with_and_without_bom() -> None:
    assert decode("email\nø@example.org\n".encode()) == "email\nø@example.org\n"
    assert decode(b"\xef\xbb\xbfemail\n") == "email\n"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ("email\nJørgen\n".encode("cp1252"), "not UTF-8"),
        ("email\n".encode("utf-16"), "UTF-16"),
        (b"  \n", "empty"),
    ],
)
def test_decode_refuses_other_encodings_with_a_clear_message(data: bytes, words: str) -> None:
    with pytest.raises(FileProblem, match=words):
        decode(data)


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        ("email,name", ","),
        ("email;name;source", ";"),
        ("email\tname", "\t"),
        ('"name, full";email;source', ";"),
        ("email", ","),
    ],
)
def test_delimiter_is_the_one_that_splits_the_header(header: str, delimiter: str) -> None:
    assert sniff_delimiter(header + "\nx\n") == delimiter


def test_mapping_is_guessed_from_english_and_danish_headings() -> None:
    assert guess_mapping(["E-mail", "Navn", "Samtykke tidspunkt", "Kilde", "Other"]) == {
        "0": "email",
        "1": "name",
        "2": "consented_at",
        "3": "source",
        "4": None,
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-03-01", datetime(2024, 3, 1, tzinfo=UTC)),
        ("2024-03-01 14:05", datetime(2024, 3, 1, 14, 5, tzinfo=UTC)),
        ("2024-03-01T14:05:09Z", datetime(2024, 3, 1, 14, 5, 9, tzinfo=UTC)),
        ("2024-03-01T14:05:09+01:00", datetime(2024, 3, 1, 13, 5, 9, tzinfo=UTC)),
        ("", None),
    ],
)
def test_consent_times_in_iso_8601(raw: str, expected: datetime | None) -> None:
    assert parse_consented_at(raw, NOW) == expected


@pytest.mark.parametrize("raw", ["01/03/2024", "yesterday", "2024-13-01", "2026-02-01"])
def test_other_consent_times_are_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        parse_consented_at(raw, NOW)


# -- the rules ----------------------------------------------------------------------------------


def test_good_file_imports_active_and_pending_rows(
    app: Flask, client: FlaskClient, make_list: Callable[..., MailingList], deliver: Deliver
) -> None:
    topic = make_list("topic", "Topic")
    job = queue(GOOD, topic)

    mails = deliver()  # the worker runs the import, then sends what it queued

    db.session.refresh(job)
    assert job.status == ImportStatus.DONE
    assert (job.imported_active, job.imported_pending, job.unchanged) == (2, 2, 0)
    assert job.content is None
    assert status_of("anna@example.org", topic) == SubscriptionStatus.ACTIVE
    assert status_of("bo@example.org", topic) == SubscriptionStatus.ACTIVE
    # A time without a source is not evidence: Dora must confirm like Carl.
    assert status_of("carl@example.org", topic) == SubscriptionStatus.PENDING
    assert status_of("dora@example.org", topic) == SubscriptionStatus.PENDING
    assert sorted(address_of(m) for m in mails) == ["carl@example.org", "dora@example.org"]

    for mail in mails:
        response = client.post(link_path(mail, "confirm"))
        assert response.status_code == 200
        assert status_of(address_of(mail), topic) == SubscriptionStatus.ACTIVE
    assert seal_and_verify().ok


def test_every_imported_row_has_a_ledger_event_with_the_evidence(
    app: Flask, make_list: Callable[..., MailingList], make_staff: Callable[..., object]
) -> None:
    topic = make_list("topic", "Topic")
    staff = make_staff("editor", email="importer@example.org")
    job = jobs.create_job(GOOD, "people.csv", topic.id, actor=staff, ip=None)  # type: ignore[arg-type]
    choices = {str(f): str(p) for p, f in (job.mapping or {}).items() if f}
    jobs.queue_job(job, choices, actor=None, ip=None)
    claim = claim_next()
    assert claim is not None
    run_claimed(claim)

    events = {e.email: e for e in db.session.scalars(select(ConsentEvent))}
    assert len(events) == 4
    assert {e.channel for e in events.values()} == {"import"}
    anna = events["anna@example.org"]
    assert anna.event == "imported"
    assert anna.details == {
        "consented_at": "2024-03-01T00:00:00+00:00",
        "source": "signup form at the fair",
        "import_job": job.id,
        "staff_id": job.created_by_id,
    }
    assert events["carl@example.org"].event == "requested"
    report = seal_and_verify()
    assert report.ok, report.problems
    assert report.events == 4


def test_evidence_less_file_imports_everyone_as_pending(
    app: Flask, make_list: Callable[..., MailingList], deliver: Deliver
) -> None:
    topic = make_list("topic", "Topic")
    job = run(b"email,name\none@example.org,One\ntwo@example.org,Two\n", topic)
    assert (job.imported_active, job.imported_pending) == (0, 2)
    db.session.commit()
    statuses = set(db.session.scalars(select(Subscription.status)))
    assert statuses == {SubscriptionStatus.PENDING}
    assert len(deliver()) == 2


def test_bad_file_imports_nothing_and_lists_errors_by_line(
    app: Flask, make_list: Callable[..., MailingList]
) -> None:
    topic = make_list("topic", "Topic")
    data = (
        (
            "email,name,consented_at,source\n"
            "ok@example.org,Ok,2024-01-01,form\n"  # line 2
            "not-an-address,X,,\n"  # 3
            "bad@example.org,Bad,31/12/2023,form\n"  # 4
            "OK@example.org,Again,,\n"  # 5: duplicate of line 2
            "long@example.org," + "n" * 201 + ",,\n"  # 6
            'crlf@example.org,"two\nlines",,\n'  # 7 (and 8)
            "extra@example.org,E,,,surplus\n"  # 9
            "src@example.org,S,2024-01-01," + "s" * 201 + "\n"  # 10
        ).encode()
    )
    job = queue(data, topic)
    before = all_counts()
    claim = claim_next()
    assert claim is not None
    job = run_claimed(claim)

    assert job.status == ImportStatus.FAILED
    found = [(e["line"], e["field"]) for e in job.errors]
    assert found == [
        (3, "email"),
        (4, "consented_at"),
        (5, "email"),
        (6, "name"),
        (7, "name"),
        (9, "row"),
        (10, "source"),
    ]
    assert "line 2" in job.errors[2]["message"]
    after = all_counts()
    assert after == {**before, "audit_entries": before["audit_entries"] + 1}
    assert job.content is None


def test_duplicates_within_the_file_are_errors(
    app: Flask, make_list: Callable[..., MailingList]
) -> None:
    topic = make_list("topic", "Topic")
    job = run(b"email\na@example.org\nb@example.org\nA@Example.org\n", topic)
    assert job.status == ImportStatus.FAILED
    assert job.errors == [{"line": 4, "field": "email", "message": "The same address as line 2."}]
    db.session.commit()
    assert db.session.scalar(select(func.count(Subscriber.id))) == 0


def test_unsubscribed_bounced_and_suppressed_are_never_reactivated(
    app: Flask, make_list: Callable[..., MailingList], deliver: Deliver
) -> None:
    topic = make_list("topic", "Topic")
    run(
        b"email,consented_at,source\nleft@example.org,2024-01-01,form\n"
        b"bounced@example.org,2024-01-01,form\nkept@example.org,2024-01-01,form\n",
        topic,
    )
    db.session.execute(
        update(Subscription)
        .where(
            Subscription.subscriber_id.in_(
                select(Subscriber.id).where(Subscriber.email_key == "left@example.org")
            )
        )
        .values(status=SubscriptionStatus.UNSUBSCRIBED)
    )
    db.session.execute(
        update(Subscription)
        .where(
            Subscription.subscriber_id.in_(
                select(Subscriber.id).where(Subscriber.email_key == "bounced@example.org")
            )
        )
        .values(status=SubscriptionStatus.BOUNCED)
    )
    suppress("gone@example.org", "erasure")
    db.session.commit()
    events_before = all_counts()["consent_events"]

    job = run(
        b"email,consented_at,source\nleft@example.org,2024-06-01,fair\n"
        b"bounced@example.org,,\ngone@example.org,2024-06-01,fair\n"
        b"kept@example.org,,\nnew@example.org,,\n",
        topic,
    )

    assert job.status == ImportStatus.DONE
    assert (job.imported_active, job.imported_pending, job.unchanged) == (0, 1, 1)
    assert not_reactivated(job) == 3
    assert [e["line"] for e in job.errors] == [2, 3, 4]
    assert status_of("left@example.org", topic) == SubscriptionStatus.UNSUBSCRIBED
    assert status_of("bounced@example.org", topic) == SubscriptionStatus.BOUNCED
    assert status_of("gone@example.org", topic) is None
    assert status_of("kept@example.org", topic) == SubscriptionStatus.ACTIVE
    assert all_counts()["consent_events"] == events_before + 1  # new@ only
    assert [address_of(m) for m in deliver()] == ["new@example.org"]


TwoLists = tuple[MailingList, MailingList]
SAM = b"email\nsam@example.org\n"


@pytest.fixture
def two_lists(make_list: Callable[..., MailingList]) -> TwoLists:
    """Two lists, "first" and "second", to import the same address into."""
    return make_list("first", "First"), make_list("second", "Second")


@pytest.fixture
def sam_on_first(two_lists: TwoLists) -> TwoLists:
    """sam@example.org imported into "first" (pending, no mail sent yet); the two lists."""
    run(SAM, two_lists[0])
    return two_lists


def test_existing_subscriber_keeps_their_name_and_gets_one_mail_for_all_pending_lists(
    app: Flask, two_lists: TwoLists, deliver: Deliver
) -> None:
    first, second = two_lists
    run(b"email,name\nsam@example.org,Sam\n", first)
    assert len(deliver()) == 1
    db.session.execute(update(Subscriber).values(last_confirmation_sent_at=None))
    db.session.commit()
    run(b"email,name\nSAM@example.org,Someone Else\n", second)
    db.session.commit()
    subscriber = db.session.scalars(select(Subscriber)).one()
    assert subscriber.name == "Sam"
    mails = deliver()
    assert len(mails) == 1
    assert status_of("sam@example.org", second) == SubscriptionStatus.PENDING


def test_a_known_pending_address_imported_into_another_list_within_the_window_gets_its_confirmation(
    app: Flask, client: FlaskClient, sam_on_first: TwoLists, deliver: Deliver
) -> None:
    first, second = sam_on_first
    assert len(deliver()) == 1  # within the window: no mail names "second" yet

    run(SAM, second)

    (mail,) = deliver()
    assert client.post(link_path(mail, "confirm")).status_code == 200
    assert status_of("sam@example.org", second) == SubscriptionStatus.ACTIVE
    assert status_of("sam@example.org", first) == SubscriptionStatus.ACTIVE


def test_an_address_mailed_for_the_same_lists_within_the_window_gets_no_second_mail(
    app: Flask, client: FlaskClient, sam_on_first: TwoLists, deliver: Deliver
) -> None:
    first, second = sam_on_first
    run(SAM, second)
    mails = deliver()
    assert len(mails) == 2  # the second one names both lists

    job = run(b"email\nsam@example.org\nnew@example.org\n", first)

    assert job.imported_pending == 2
    assert [address_of(m) for m in deliver()] == ["new@example.org"]
    # The newest mail sent still confirms everything pending.
    assert client.post(link_path(mails[-1], "confirm")).status_code == 200
    assert status_of("sam@example.org", first) == SubscriptionStatus.ACTIVE
    assert status_of("sam@example.org", second) == SubscriptionStatus.ACTIVE


def test_bom_and_semicolons(app: Flask, make_list: Callable[..., MailingList]) -> None:
    topic = make_list("topic", "Topic")
    data = "\ufeffE-mail;Navn;Samtykke;Kilde\nøre@example.org;Søren Ø;2024-02-01;messe\n"
    job = run(data.encode(), topic)
    assert job.status == ImportStatus.DONE
    assert job.imported_active == 1
    db.session.commit()
    subscriber = db.session.scalars(select(Subscriber)).one()
    assert (subscriber.email, subscriber.name) == ("øre@example.org", "Søren Ø")


def test_every_import_is_audited(app: Flask, make_list: Callable[..., MailingList]) -> None:
    topic = make_list("topic", "Topic")
    run(GOOD, topic)
    db.session.commit()
    entries = {e.action: e for e in db.session.scalars(select(AuditEntry))}
    assert set(entries) == {"import.upload", "import.queue", "import.done"}
    assert entries["import.done"].details == {
        "list": "topic",
        "file": "people.csv",
        "rows": 4,
        "active": 2,
        "pending": 2,
        "unchanged": 0,
        "not_reactivated": 0,
    }


def test_a_subscription_that_changes_during_the_import_fails_it_whole(
    app: Flask, make_list: Callable[..., MailingList], monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.imports import apply

    topic = make_list("topic", "Topic")
    run(b"email\nleaving@example.org\n", topic)  # pending
    counts_before = all_counts()
    read = apply._known_subscribers

    def read_then_someone_unsubscribes(rows: object, list_id: int) -> object:
        known = read(rows, list_id)  # type: ignore[arg-type]
        db.session.execute(update(Subscription).values(status=SubscriptionStatus.UNSUBSCRIBED))
        return known

    monkeypatch.setattr(apply, "_known_subscribers", read_then_someone_unsubscribes)
    job = run(b"email,consented_at,source\nleaving@example.org,2024-01-01,fair\n", topic)
    assert job.status == ImportStatus.FAILED
    assert "changed while the file was imported" in job.errors[0]["message"]
    after = all_counts()
    assert after["consent_events"] == counts_before["consent_events"]
    assert after["outbox"] == counts_before["outbox"]


# -- the worker: lease and takeover -------------------------------------------------------------


def test_a_leased_job_is_not_taken_by_a_second_worker_until_the_lease_ends(
    app: Flask, make_list: Callable[..., MailingList]
) -> None:
    topic = make_list("topic", "Topic")
    queue(GOOD, topic)
    first = claim_next()
    assert first is not None
    assert claim_next() is None  # the second worker finds nothing to do

    # The first worker dies: after its lease another one takes the job over.
    db.session.execute(
        update(ImportJob).values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
    )
    db.session.commit()
    second = claim_next()
    assert second is not None
    assert second.job_id == first.job_id
    with pytest.raises(LeaseLost):
        run_claimed(first)  # the stalled first worker must not write
    assert run_claimed(second).status == ImportStatus.DONE
    db.session.commit()
    assert db.session.scalar(select(func.count(Subscriber.id))) == 4


# -- newsletter list import FILE --list SLUG (alias: newsletter import) ---------------------------


def test_command_imports_a_file(
    runner: FlaskCliRunner, make_list: Callable[..., MailingList], tmp_path: Path
) -> None:
    make_list("topic", "Topic")
    path = tmp_path / "people.csv"
    path.write_bytes(GOOD)
    result = runner.invoke(args=["import", str(path), "--list", "topic"])
    assert result.exit_code == 0, result.output
    assert "2 active, 2 pending" in result.stdout
    assert "checked 4 of 4 rows" in result.stderr
    db.session.commit()
    assert db.session.scalar(select(func.count(Subscription.id))) == 4
    assert seal_and_verify().ok


@pytest.mark.parametrize("command", [["list", "import"], ["import"]])
def test_list_import_and_its_top_level_alias_import_the_same_way(
    runner: FlaskCliRunner,
    make_list: Callable[..., MailingList],
    tmp_path: Path,
    command: list[str],
) -> None:
    make_list("topic", "Topic")
    path = tmp_path / "people.csv"
    path.write_bytes(GOOD)
    result = runner.invoke(args=[*command, str(path), "--list", "topic"])
    assert result.exit_code == 0, result.output
    assert "2 active, 2 pending" in result.stdout
    db.session.commit()
    assert db.session.scalar(select(func.count(Subscription.id))) == 4
    refused = runner.invoke(args=[*command, str(path), "--list", "nope"])
    assert refused.exit_code == 1
    assert "No list 'nope'" in refused.output


def test_command_refuses_a_file_with_errors_and_imports_nothing(
    runner: FlaskCliRunner, make_list: Callable[..., MailingList], tmp_path: Path
) -> None:
    make_list("topic", "Topic")
    path = tmp_path / "people.csv"
    path.write_bytes(b"email,name\nok@example.org,Ok\nbroken,X\n")
    before = all_counts()
    result = runner.invoke(args=["import", str(path), "--list", "topic"])
    assert result.exit_code == 1
    assert "line 3, email:" in result.stderr
    after = all_counts()
    assert after["subscribers"] == before["subscribers"] == 0
    assert after["consent_events"] == before["consent_events"]
    assert after["outbox"] == before["outbox"]


def test_command_column_option_and_unknown_list(
    runner: FlaskCliRunner, make_list: Callable[..., MailingList], tmp_path: Path
) -> None:
    make_list("topic", "Topic")
    path = tmp_path / "people.csv"
    path.write_bytes(b"Kontakt,Hvem\nx@example.org,X\n")
    result = runner.invoke(args=["import", str(path), "--list", "topic"])
    assert result.exit_code == 1
    assert "email" in result.output
    result = runner.invoke(
        args=["import", str(path), "--list", "topic", "--column", "email=Kontakt"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["import", str(path), "--list", "nope"])
    assert result.exit_code == 1
    assert "No list 'nope'" in result.output


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('email,name\na@example.org,"Anna\n', "a quoted field is not closed"),
        ('email,name\na@example.org,"An"na\n', "a quotation mark inside one is not doubled"),
        ("email,name\na@example.org," + "x" * 140_000 + "\n", "longer than 131,072 characters"),
    ],
)
def test_unreadable_csv_is_explained_in_a_sentence_of_ours(text: str, words: str) -> None:
    with pytest.raises(FileProblem, match=words) as refused:
        list(iter_records(text, ","))
    assert refused.value.line == 2
