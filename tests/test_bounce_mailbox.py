"""The bounce mailbox: real DSNs, ARF reports and auto-replies, read from a real
Dovecot over IMAP, classified, recorded once and moved away."""

from __future__ import annotations

import email
import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.deliverability import fetch as fetch_module
from newsletter.deliverability.classify import MAX_REPORTS, Unreadable, classify
from newsletter.deliverability.fetch import FetchCounts, MailboxBusy, fetch_bounces, fetch_due
from newsletter.deliverability.imap import Mailbox, MailboxError, parse_url, quote_mailbox
from newsletter.extensions import db
from newsletter.ledger.keys import email_digest
from newsletter.mail.verp import envelope_sender
from newsletter.models import (
    BounceKind,
    BounceReport,
    Channel,
    ConsentEvent,
    Delivery,
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)

from .fixtures.dovecot import (  # noqa: F401
    DovecotMailbox,
    DovecotServer,
    TLSFiles,
    dovecot,
    dovecot_server,
    make_tls_files,
    running_dovecot,
)

DATA = Path(__file__).parent / "data" / "bounces"
FLUFL = DATA / "flufl"
DOMAIN = "bounce.example"
SAMPLE_RECIPIENT = "alice@example.org"
SAMPLE_VERP = "bounces+VERP@bounce.example"
ADDRESS = "reader@example.org"


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def reports_of(raw: bytes) -> list[tuple[str, str | None]]:
    result = classify(raw, DOMAIN)
    assert not isinstance(result, Unreadable), result
    return [(str(r.kind), r.recipient) for r in result]


# --- classify: real messages ------------------------------------------------------------

# (file, kind, recipients): the recipients are those flufl.bounce's own tests expect
# for its corpus; the kind follows the DSN's status code where it has one.
CORPUS = [
    ("dsn_11.txt", "hard", ["joem@example.com"]),  # 5.1.1
    ("dsn_14.txt", "hard", ["userx@example.com.dk"]),  # Status missing, 550 5.1.1 in text
    ("dsn_05.txt", "soft", ["userx@example.cz"]),  # delayed
    ("dsn_17.txt", "soft", ["userx@example.fi"]),  # 4.3.0 quota
    ("dsn_08.txt", "soft", ["userx@example.de"]),  # Postfix 4.0.0
    ("simple_42.txt", "soft", ["david...@gmail.com"]),  # 5.0.0 with Gmail's 550-5.7.1
    ("postfix_01.txt", "hard", ["xxxxx@local.ie"]),
    ("exim_01.txt", "hard", ["userx@its.example.nl"]),
    ("qmail_01.txt", "hard", ["userx@example.de"]),
    ("microsoft_01.txt", "hard", ["userx@example.COM"]),
    ("groupwise_01.txt", "hard", ["userx@example.EDU"]),
    ("yahoo_05.txt", "hard", ["userx@example.com", "usery@example.com"]),
    ("aol_01.txt", "hard", ["screenname@aol.com"]),
    ("simple_03.txt", "soft", ["userx@example.za"]),  # a warning: still trying
    ("netscape_01.txt", "hard", ["aaaaa@corel.com", "bbbbb@corel.com"]),
]


@pytest.mark.parametrize(("name", "kind", "recipients"), CORPUS)
def test_flufl_corpus(name: str, kind: str, recipients: list[str]) -> None:
    assert reports_of((FLUFL / name).read_bytes()) == [(kind, r) for r in recipients]


def test_every_bounce_of_the_flufl_corpus_names_its_recipients() -> None:
    """Every file flufl.bounce's tests find addresses in gives reports here;
    its non-bounces (no address detectable) are unreadable, or an auto-reply."""
    unreadable = set()
    for path in sorted(FLUFL.glob("*.txt")):
        result = classify(path.read_bytes(), DOMAIN)
        if isinstance(result, Unreadable):
            unreadable.add(path.name)
        else:
            assert result, path.name
            assert all(r.recipient or r.kind == BounceKind.AUTO_REPLY for r in result)
    assert unreadable == {"dumbass_01.txt", "groupwise_03.txt", "simple_43.txt"}


def test_postfix_hard_bounce() -> None:
    [report] = classify(sample("postfix_hard_511.eml"), DOMAIN)  # type: ignore[misc]
    assert report.kind == BounceKind.HARD
    assert report.source == "imap"
    assert report.recipient == SAMPLE_RECIPIENT
    assert report.verp == SAMPLE_VERP
    assert report.diagnostic.startswith("5.1.1 smtp; 550 5.1.1")
    assert report.occurred_at is not None
    assert report.occurred_at.isoformat() == "2026-12-07T01:02:03+00:00"
    assert report.dedupe_key == (
        "<20261207010203.4F1C2A0123@mx.newsletter.example> alice@example.org"
    )


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("postfix_soft_422.eml", "soft"),  # mailbox full
        ("gmail_policy_571.eml", "soft"),  # refused by policy: the address exists
        ("exchange_online_550_511.eml", "hard"),
        ("gmail_vacation.eml", "auto_reply"),
        ("exchange_oof.eml", "auto_reply"),
        ("aol_arf.eml", "complaint"),
    ],
)
def test_samples(name: str, kind: str) -> None:
    result = classify(sample(name), DOMAIN)
    assert not isinstance(result, Unreadable)
    assert [(str(r.kind), r.recipient, r.verp) for r in result] == [
        (kind, SAMPLE_RECIPIENT, SAMPLE_VERP)
    ]


def test_arf_of_rfc5965_names_the_original_recipient() -> None:
    [report] = classify(sample("rfc5965_arf.eml"), DOMAIN)  # type: ignore[misc]
    assert report.kind == BounceKind.COMPLAINT
    assert report.recipient == "user@example.com"  # Original-Rcpt-To
    assert report.verp is None  # the original envelope sender is not ours
    assert report.dedupe_key.startswith("sha256:")  # the report has no Message-ID


def test_a_redacted_complaint_is_named_by_the_verp_address() -> None:
    [report] = classify(sample("yahoo_arf_redacted.eml"), DOMAIN)  # type: ignore[misc]
    assert report.kind == BounceKind.COMPLAINT
    assert report.verp == SAMPLE_VERP


def test_not_a_complaint_feedback_type_asks_for_nothing() -> None:
    raw = sample("aol_arf.eml").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    assert classify(raw, DOMAIN) == []


def test_a_success_dsn_asks_for_nothing() -> None:
    raw = sample("postfix_hard_511.eml").replace(b"Action: failed", b"Action: delivered")
    raw = raw.replace(b"Status: 5.1.1", b"Status: 2.0.0")
    assert classify(raw, DOMAIN) == []


def test_verp_of_another_domain_is_not_ours() -> None:
    [report] = classify(sample("postfix_hard_511.eml"), "other.example")  # type: ignore[misc]
    assert report.verp is None
    [report] = classify(sample("postfix_hard_511.eml"), None)  # type: ignore[misc]
    assert report.verp is None


@pytest.mark.parametrize("name", ["human_reply.eml", "garbage.bin"])
def test_unreadable(name: str) -> None:
    assert isinstance(classify(sample(name), DOMAIN), Unreadable)


def test_the_same_message_gives_the_same_keys_and_another_message_other_keys() -> None:
    first = classify(sample("postfix_hard_511.eml"), DOMAIN)
    again = classify(sample("postfix_hard_511.eml"), DOMAIN)
    other = classify(sample("postfix_soft_422.eml"), DOMAIN)
    assert isinstance(first, list)
    assert isinstance(again, list)
    assert isinstance(other, list)
    assert [r.dedupe_key for r in first] == [r.dedupe_key for r in again]
    assert {r.dedupe_key for r in first}.isdisjoint(r.dedupe_key for r in other)


# --- classify: hostile input -------------------------------------------------------------

HEADERS = st.sampled_from(
    [
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n",
        b"Content-Type: message/delivery-status\r\n",
        b"Auto-Submitted: auto-replied\r\n",
        b"Message-ID: <\x00\xff\xfe@x>\r\n",
        b"From: \xed\xa0\x80@\r\n",
        b"Date: Mon, 99 Foo 99999 99:99:99 +9999\r\n",
    ]
)
BODY = st.sampled_from(
    [
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n\r\n"
        b"Final-Recipient: rfc822; \x00a@b\r\nStatus: 5.1.1\r\n--b--\r\n",
        b"--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
        b"Original-Rcpt-To: <\xed\xb2\x80@x>\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
        b"To: \r\n--b--",
        b"--b\r\n" * 200,
        b"\r\n" * 1000,
    ]
)


def _assert_clean(result: object) -> None:
    if isinstance(result, Unreadable):
        return
    assert isinstance(result, list)
    for report in result:
        for text in (report.recipient, report.verp, report.dedupe_key, report.diagnostic):
            if text is not None:
                text.encode("utf-8")  # no lone surrogate: a database takes it
                assert "\x00" not in text
                assert "\r" not in text
                assert "\n" not in text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_classify_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    _assert_clean(classify(raw, DOMAIN))


@settings(max_examples=300, deadline=None)
@given(st.lists(HEADERS, max_size=5), BODY, st.binary(max_size=200))
def test_classify_never_raises_on_broken_reports(
    headers: list[bytes], body: bytes, noise: bytes
) -> None:
    _assert_clean(classify(b"".join(headers) + b"\r\n" + body + noise, DOMAIN))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_classify_never_raises_on_text_with_surrogates(text: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    _assert_clean(classify(b"Content-Type: multipart/report; boundary=x\r\n\r\n" + raw, DOMAIN))


def test_classify_reads_a_huge_message() -> None:
    raw = sample("postfix_hard_511.eml") + b"x" * 5_000_000
    assert reports_of(raw) == [("hard", SAMPLE_RECIPIENT)]


# --- the IMAP URL ---------------------------------------------------------------------


def test_imap_urls() -> None:
    tls = parse_url("imaps://bounce%40example.org:p%3Ass@imap.example.org/Bounces%20In")
    assert (tls.host, tls.port, tls.user, tls.password, tls.folder, tls.security) == (
        "imap.example.org",
        993,
        "bounce@example.org",
        "p:ss",
        "Bounces In",
        "tls",
    )
    assert "p:ss" not in repr(tls)
    starttls = parse_url("imap://u:p@imap.example.org")
    assert (starttls.port, starttls.folder, starttls.security) == (143, "INBOX", "starttls")
    assert parse_url("imap://u:p@127.0.0.1:1143/?starttls=no").security == "none"
    for bad in (
        "imap://u:p@imap.example.org/?starttls=no",  # the password in clear over a network
        "pop3://u:p@host/",
        "imaps://host/",
        "imaps://u:p@host:99999/",
        "imap://u:p@host/?starttls=maybe",
    ):
        with pytest.raises(MailboxError) as caught:
            parse_url(bad)
        assert "p@" not in str(caught.value)


def test_folder_names_are_quoted_in_modified_utf7() -> None:
    assert quote_mailbox("Processed") == '"Processed"'
    assert quote_mailbox('a"b\\c') == '"a\\"b\\\\c"'
    assert quote_mailbox("Behandlet & læst") == '"Behandlet &- l&AOY-st"'  # RFC 3501 5.1.3


# --- end to end: Dovecot -> `newsletter bounces fetch` -> the database -------------------


@pytest.fixture
def reader(
    app: Flask, default_list: MailingList, subscribed: Callable[..., EmailMessage]
) -> Subscriber:
    subscribed(ADDRESS)
    subscriber = db.session.scalar(select(Subscriber).where(Subscriber.email_key == ADDRESS))
    assert subscriber is not None
    return subscriber


@pytest.fixture
def mailbox(app: Flask, dovecot: DovecotMailbox) -> DovecotMailbox:  # noqa: F811
    app.config["BOUNCE_DOMAIN"] = DOMAIN
    app.config["BOUNCE_IMAP_URL"] = dovecot.url()
    return dovecot


def delivery_verp(subject: str = "December news") -> str:
    """The VERP address of the reader's delivery of a new campaign."""
    campaign = create_campaign("nyhedsbrev", subject, "Hej {{ name }}\n")
    start_campaign(campaign.id)
    db.session.commit()
    delivery_id = db.session.scalar(select(Delivery.id).where(Delivery.campaign_id == campaign.id))
    assert delivery_id is not None
    verp = envelope_sender("d", delivery_id)
    assert verp is not None
    db.session.commit()
    return verp


def addressed(name: str, verp: str, recipient: str = ADDRESS, message_id: str = "") -> bytes:
    raw = sample(name).replace(SAMPLE_VERP.encode(), verp.encode())
    raw = raw.replace(SAMPLE_RECIPIENT.encode(), recipient.encode())
    if message_id:
        msg = email.message_from_bytes(raw)
        old = msg["Message-ID"]
        assert old
        raw = raw.replace(old.encode(), message_id.encode())
    return raw


def fetch(runner: FlaskCliRunner) -> dict[str, int]:
    result = runner.invoke(args=["bounces", "fetch", "--json"])
    assert result.exit_code == 0, result.output
    counts: dict[str, int] = json.loads(result.output)
    db.session.commit()
    return counts


def status_of(subscriber_id: int) -> set[str]:
    db.session.commit()
    return {
        str(s)
        for s in db.session.scalars(
            select(Subscription.status).where(Subscription.subscriber_id == subscriber_id)
        )
    }


def suppression_reason() -> str | None:
    return db.session.scalar(
        select(Suppression.reason).where(Suppression.email_digest == email_digest(ADDRESS))
    )


def test_a_hard_bounce_from_the_mailbox_suppresses_and_is_moved(
    reader: Subscriber, mailbox: DovecotMailbox, runner: FlaskCliRunner
) -> None:
    verp = delivery_verp()
    mailbox.append(addressed("postfix_hard_511.eml", verp))

    counts = fetch(runner)

    assert (counts["messages"], counts["recorded"], counts["moved"]) == (1, 1, 1)
    assert suppression_reason() == "bounce"
    assert status_of(reader.id) == {str(SubscriptionStatus.BOUNCED)}
    row = db.session.scalars(select(BounceReport)).one()
    assert (row.kind, row.source, row.subscriber_id) == ("hard", "imap", reader.id)
    assert row.delivery_id is not None
    assert ADDRESS not in row.diagnostic
    assert mailbox.messages("INBOX") == []
    [(flags, moved)] = mailbox.messages("Processed")
    assert moved.replace(b"\r\n", b"\n") == addressed("postfix_hard_511.eml", verp).replace(
        b"\r\n", b"\n"
    )
    assert b"\\Seen" not in flags  # read with PEEK

    # The same message again (a copy put back): counted once, still moved.
    mailbox.append(addressed("postfix_hard_511.eml", verp))
    again = fetch(runner)
    assert (again["messages"], again["recorded"], again["duplicates"], again["moved"]) == (
        1,
        0,
        1,
        1,
    )
    assert db.session.scalars(select(BounceReport)).all() == [row]
    assert len(mailbox.messages("Processed")) == 2


def test_soft_bounces_become_hard_at_the_limit(
    app: Flask, reader: Subscriber, mailbox: DovecotMailbox, runner: FlaskCliRunner
) -> None:
    app.config["BOUNCE_SOFT_LIMIT"] = 3
    verp = delivery_verp()
    for n in range(2):
        mailbox.append(addressed("postfix_soft_422.eml", verp, message_id=f"<soft{n}@mx>"))
    counts = fetch(runner)
    assert (counts["recorded"], counts["moved"]) == (2, 2)
    assert suppression_reason() is None
    assert status_of(reader.id) == {str(SubscriptionStatus.ACTIVE)}

    mailbox.append(addressed("postfix_soft_422.eml", verp, message_id="<soft2@mx>"))
    fetch(runner)
    assert suppression_reason() == "bounce"
    assert status_of(reader.id) == {str(SubscriptionStatus.BOUNCED)}
    actions = db.session.scalars(select(BounceReport.action).order_by(BounceReport.id)).all()
    assert actions == ["counted", "counted", "soft_limit"]


def test_a_complaint_unsubscribes_and_suppresses(
    reader: Subscriber, mailbox: DovecotMailbox, runner: FlaskCliRunner
) -> None:
    verp = delivery_verp()
    # Yahoo redacts the recipient: the VERP address alone names the person.
    mailbox.append(addressed("yahoo_arf_redacted.eml", verp))

    counts = fetch(runner)

    assert (counts["recorded"], counts["moved"]) == (1, 1)
    assert suppression_reason() == "complaint"
    assert status_of(reader.id) == {str(SubscriptionStatus.UNSUBSCRIBED)}
    channels = db.session.scalars(
        select(ConsentEvent.channel).where(ConsentEvent.email_digest == email_digest(ADDRESS))
    ).all()
    assert Channel.COMPLAINT in channels


def test_an_unreadable_message_stays_and_is_counted_once(
    reader: Subscriber, mailbox: DovecotMailbox, runner: FlaskCliRunner
) -> None:
    verp = delivery_verp()
    mailbox.append(sample("human_reply.eml"))
    mailbox.append(addressed("gmail_vacation.eml", verp))

    counts = fetch(runner)

    assert (counts["messages"], counts["unreadable"], counts["unreadable_waiting"]) == (2, 1, 1)
    assert counts["moved"] == 1  # the auto-reply: recorded, nothing done
    [(flags, kept)] = mailbox.messages("INBOX")
    assert b"Thanks, nice newsletter!" in kept
    assert b"NewsletterUnreadable" in flags
    assert status_of(reader.id) == {str(SubscriptionStatus.ACTIVE)}
    assert db.session.scalars(select(BounceReport.action)).all() == ["ignored"]

    later = fetch(runner)
    assert (later["messages"], later["unreadable"], later["unreadable_waiting"]) == (0, 0, 1)


def test_processed_messages_are_deleted_when_the_folder_setting_is_empty(
    app: Flask, reader: Subscriber, mailbox: DovecotMailbox, runner: FlaskCliRunner
) -> None:
    app.config["BOUNCE_IMAP_PROCESSED_FOLDER"] = ""
    mailbox.append(addressed("postfix_hard_511.eml", delivery_verp()))
    counts = fetch(runner)
    assert (counts["recorded"], counts["deleted"], counts["moved"]) == (1, 1, 0)
    assert mailbox.messages("INBOX") == []
    assert mailbox.messages("Processed") == []


def test_a_wrong_password_is_a_clean_error_without_the_password(
    app: Flask, mailbox: DovecotMailbox, runner: FlaskCliRunner
) -> None:
    app.config["BOUNCE_IMAP_URL"] = mailbox.url().replace(mailbox.password, "wrong-secret")
    result = runner.invoke(args=["bounces", "fetch"])
    assert result.exit_code == 1
    assert "refused the login" in result.output
    assert "wrong-secret" not in result.output


def test_the_worker_task_runs_once_an_interval_and_never_raises(
    app: Flask, reader: Subscriber, mailbox: DovecotMailbox
) -> None:
    app.config["BOUNCE_FETCH_INTERVAL"] = 300
    start = utcnow()
    verp = delivery_verp()
    mailbox.append(addressed("postfix_soft_422.eml", verp, message_id="<one@mx>"))
    first = fetch_due(app, now=start)
    assert first is not None
    assert first.recorded == 1
    mailbox.append(addressed("postfix_soft_422.eml", verp, message_id="<two@mx>"))
    assert fetch_due(app, now=start + timedelta(seconds=100)) is None  # within the interval
    # Another worker (a process of its own) asks the database, which says the same.
    app.extensions.pop("newsletter.bounce_fetch_last")
    assert fetch_due(app, now=start + timedelta(seconds=200)) is None
    later = fetch_due(app, now=start + timedelta(seconds=500))
    assert later is not None
    assert later.recorded == 1
    app.config["BOUNCE_IMAP_URL"] = "imap://u:p@127.0.0.1:1/?starttls=no"  # nothing listens
    assert fetch_due(app, now=start + timedelta(seconds=900)) is None
    app.config["BOUNCE_IMAP_URL"] = ""
    assert fetch_due(app, now=start + timedelta(seconds=1800)) is None


# --- TLS: imaps:// and STARTTLS against Dovecot with a certificate of a private CA -------


@pytest.fixture(scope="module")
def tls_dovecot(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DovecotServer, TLSFiles]]:
    home = tmp_path_factory.mktemp("dovecot-tls")
    tls = make_tls_files(home)
    with running_dovecot(home, tls) as server:
        yield server, tls


def test_imaps_and_starttls_read_the_mailbox_with_the_private_ca(
    app: Flask,
    reader: Subscriber,
    tls_dovecot: tuple[DovecotServer, TLSFiles],
    runner: FlaskCliRunner,
) -> None:
    server, tls = tls_dovecot
    box = DovecotMailbox(server, "tlsuser", server.password)
    app.config["BOUNCE_DOMAIN"] = DOMAIN
    verp = delivery_verp()
    for scheme, port, message_id in (
        ("imaps", server.tls_port, "<tls@mx>"),
        ("imap", server.port, "<starttls@mx>"),
    ):
        box.append(addressed("postfix_soft_422.eml", verp, message_id=message_id))
        app.config["BOUNCE_IMAP_URL"] = (
            f"{scheme}://tlsuser:{server.password}@127.0.0.1:{port}/INBOX?cafile={tls.ca}"
        )
        counts = fetch(runner)
        assert (counts["recorded"], counts["moved"]) == (1, 1), scheme
    assert len(box.messages("Processed")) == 2


def test_a_certificate_the_system_does_not_trust_is_refused(
    tls_dovecot: tuple[DovecotServer, TLSFiles],
) -> None:
    server, _ = tls_dovecot
    for url in (
        f"imaps://u:{server.password}@127.0.0.1:{server.tls_port}/",
        f"imap://u:{server.password}@127.0.0.1:{server.port}/",
    ):
        with pytest.raises(MailboxError, match="cannot connect") as caught:
            Mailbox(parse_url(url), timeout=10).open()
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        assert server.password not in str(caught.value)


def test_a_missing_ca_file_is_a_clean_error(tmp_path: Path) -> None:
    url = f"imaps://u:p@127.0.0.1:1/?cafile={tmp_path / 'none.pem'}"
    with pytest.raises(MailboxError, match="cannot read the CA file"):
        Mailbox(parse_url(url), timeout=10).open()


def test_starttls_is_required_unless_turned_off(dovecot: DovecotMailbox) -> None:  # noqa: F811
    url = dovecot.url().replace("?starttls=no", "")
    with pytest.raises(MailboxError, match="TLS not supported"):
        Mailbox(parse_url(url), timeout=10).open()
    with Mailbox(parse_url(dovecot.url()), timeout=10) as plain:
        assert plain.uids() == []


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parse_url_rejects_cleanly(text: str) -> None:
    for url in (text, f"imaps://{text}", f"imap://u:p@{text}/"):
        try:
            parsed = parse_url(url)
        except MailboxError:
            continue
        assert parsed.security in {"tls", "starttls", "none"}
        assert 0 <= parsed.port <= 65535
        assert parsed.host


def test_two_workers_reading_the_mailbox_at_once_record_and_move_each_message_once(
    app: Flask,
    reader: Subscriber,
    mailbox: DovecotMailbox,
) -> None:
    verp = delivery_verp()
    for n in range(6):
        mailbox.append(addressed("gmail_vacation.eml", verp, message_id=f"<away{n}@mx>"))
    db.session.commit()
    results: list[FetchCounts] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    busy: list[MailboxBusy] = []

    def work() -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=30)
                results.append(fetch_bounces())
        except MailboxBusy as exc:  # the other one holds the mailbox
            busy.append(exc)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) + len(busy) == 2
    assert sum(r.recorded for r in results) == 6
    assert sum(r.failed for r in results) == 0
    assert db.session.scalar(select(func.count()).select_from(BounceReport)) == 6
    assert mailbox.messages("INBOX") == []
    assert len(mailbox.messages("Processed")) == 6


@pytest.mark.parametrize(
    ("header", "auto"),
    [
        (b"Auto-Submitted: auto-replied", True),
        (b"Auto-Submitted: auto-generated", True),
        (b"Auto-Submitted: no", False),
        (b"X-Autoreply: yes", True),
        (b"X-Autorespond: vacation", True),
        (b"Precedence: auto_reply", True),
        (b"Precedence: bulk", False),
    ],
)
def test_auto_reply_headers(header: bytes, auto: bool) -> None:
    raw = header + b"\r\n" + sample("human_reply.eml")
    result = classify(raw, DOMAIN)
    if auto:
        assert reports_of(raw) == [("auto_reply", SAMPLE_RECIPIENT)]
    else:
        assert isinstance(result, Unreadable)


def test_a_message_naming_thousands_of_recipients_gives_at_most_max_reports() -> None:
    head, _, tail = sample("postfix_hard_511.eml").partition(b"Final-Recipient")
    block = tail.partition(b"\n\n")[0]
    blocks = b"".join(
        b"\n\nFinal-Recipient" + block.replace(b"alice@", f"user{n}@".encode()) for n in range(500)
    )
    raw = head.rstrip(b"\n") + blocks + b"\n\n" + tail.partition(b"\n\n")[2]
    result = classify(raw, DOMAIN)
    assert isinstance(result, list)
    assert len(result) == MAX_REPORTS


def test_a_message_over_the_size_limit_is_not_read_and_stays(
    app: Flask,
    reader: Subscriber,
    mailbox: DovecotMailbox,
    runner: FlaskCliRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fetch_module, "MAX_MESSAGE_BYTES", 2000)
    raw = addressed("postfix_hard_511.eml", delivery_verp())
    assert len(raw) > 2000
    mailbox.append(raw)
    counts = fetch(runner)
    assert (counts["messages"], counts["unreadable"], counts["recorded"]) == (1, 1, 0)
    assert len(mailbox.messages("INBOX")) == 1
    assert suppression_reason() is None


def test_the_command_without_a_mailbox_says_so(app: Flask, runner: FlaskCliRunner) -> None:
    app.config["BOUNCE_IMAP_URL"] = ""
    result = runner.invoke(args=["bounces", "fetch"])
    assert result.exit_code == 1
    assert "BOUNCE_IMAP_URL is not set" in result.output


def test_the_command_prints_what_it_did(
    reader: Subscriber, mailbox: DovecotMailbox, runner: FlaskCliRunner
) -> None:
    mailbox.append(addressed("postfix_hard_511.eml", delivery_verp()))
    mailbox.append(sample("human_reply.eml"))
    result = runner.invoke(args=["bounces", "fetch"])
    assert result.exit_code == 0, result.output
    assert "2 message(s) read, 1 report(s): 1 new" in result.output
    assert "1 moved" in result.output
    assert "1 unreadable (1 waiting in the mailbox)" in result.output
    assert ADDRESS not in result.output


def test_classify_leaves_no_detector_noise_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    assert isinstance(classify(b"Subject: no From\r\n\r\nhello\r\n", DOMAIN), Unreadable)
    assert reports_of(sample("postfix_hard_511.eml")) == [("hard", SAMPLE_RECIPIENT)]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("flufl")] == []


def test_a_processed_folder_with_a_non_ascii_name(
    app: Flask, reader: Subscriber, mailbox: DovecotMailbox, runner: FlaskCliRunner
) -> None:
    app.config["BOUNCE_IMAP_PROCESSED_FOLDER"] = "Behandlet & læst"
    mailbox.append(addressed("postfix_hard_511.eml", delivery_verp()))
    assert fetch(runner)["moved"] == 1
    assert len(mailbox.messages("Behandlet &- l&AOY-st")) == 1  # modified UTF-7 on the wire
    assert mailbox.messages("INBOX") == []


@pytest.mark.parametrize(
    ("folder", "processed", "error"),
    [
        ("Nope", "Processed", "refused SELECT: Mailbox doesn't exist: Nope"),
        ("INBOX", "inbox", "is the folder read"),
    ],
)
def test_folder_mistakes_are_clean_errors(
    app: Flask,
    mailbox: DovecotMailbox,
    runner: FlaskCliRunner,
    folder: str,
    processed: str,
    error: str,
) -> None:
    app.config["BOUNCE_IMAP_URL"] = mailbox.url(folder)
    app.config["BOUNCE_IMAP_PROCESSED_FOLDER"] = processed
    result = runner.invoke(args=["bounces", "fetch"])
    assert result.exit_code == 1
    assert error in result.output
