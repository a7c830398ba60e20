"""The fast SMTP send path (mail/transaction.py): pipelined MAIL/RCPT/DATA and cheap
dot-stuffing, with every outcome still classified per recipient exactly as
``smtplib.sendmail`` and ``transport.classify`` do.

Two servers: the real aiosmtpd loopback server, once as it is (no PIPELINING:
commands in lock-step) and once advertising PIPELINING, and a scripted server
that answers MAIL, RCPT and DATA only after all three have arrived, so a client
that waited for each reply would hang: it proves the commands are pipelined.
The campaign-level bounce tests run again below with PIPELINING on.
"""

from __future__ import annotations

import random
import re
import smtplib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from newsletter.mail.message import OutgoingMail
from newsletter.mail.transaction import quote_address, send_transaction, terminated
from newsletter.mail.transport import (
    PermanentFailure,
    ServerUnavailable,
    TemporaryFailure,
    classify,
    open_transport,
)

from . import test_bounces as bounce_tests
from .fixtures.smtp import SMTPServer

# The campaign-level bounce tests again, with the server advertising PIPELINING
# (see _pipelining_for_imported_tests).
test_pipelined_hard_bounce = (
    bounce_tests.test_a_permanent_refusal_fails_the_delivery_suppresses_the_address_and_is_ledgered
)
test_pipelined_soft_refusal = (
    bounce_tests.test_a_temporary_refusal_backs_off_and_is_delivered_once_accepted
)
test_pipelined_refusal_kinds = (
    bounce_tests.test_only_a_refusal_that_says_the_address_is_bad_suppresses_it
)
test_pipelined_refused_sender = (
    bounce_tests.test_a_refused_sender_keeps_the_deliveries_queued_and_suppresses_nobody
)

SENDER = "news@example.org"
DOTTED = (
    b"Subject: dots\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nmiddle . dot\r\n"
    b"\r\n.\r\n.last line has no CRLF"
)


@pytest.fixture(params=["lock-step", "pipelining"])
def mode(request: pytest.FixtureRequest, smtp_server: SMTPServer) -> str:
    """The loopback server as it is, and advertising PIPELINING (RFC 2920)."""
    if request.param == "pipelining":
        _advertise_pipelining(smtp_server, request.getfixturevalue("monkeypatch"))
    return str(request.param)


@pytest.fixture(autouse=True)
def _pipelining_for_imported_tests(
    request: pytest.FixtureRequest, smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bounce tests imported from test_bounces run here with PIPELINING on."""
    if request.function.__module__ == bounce_tests.__name__:
        _advertise_pipelining(smtp_server, monkeypatch)


def _advertise_pipelining(smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    original = smtp_server.recorder.handle_EHLO

    async def handle_EHLO(  # aiosmtpd's hook name and signature
        server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        responses = await original(server, session, envelope, hostname, responses)
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    monkeypatch.setattr(smtp_server.recorder, "handle_EHLO", handle_EHLO, raising=False)


def _send(app: Flask, *mails: OutgoingMail) -> list[BaseException | None]:
    """Send over one connection; what each send raised (None: accepted)."""
    outcomes: list[BaseException | None] = []
    with app.app_context(), open_transport(app) as transport:
        for mail in mails:
            try:
                transport.send(mail)
            except (TemporaryFailure, PermanentFailure) as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
    return outcomes


def test_the_loopback_server_offers_pipelining_only_in_that_mode(app: Flask, mode: str) -> None:
    with app.app_context(), open_transport(app) as transport:
        host = transport._connection.host  # type: ignore[attr-defined]
        host.ehlo_or_helo_if_needed()
        assert host.has_extn("pipelining") == (mode == "pipelining")


@pytest.mark.handmade_mail  # raw bytes, not our mail's shape
def test_lines_starting_with_a_dot_arrive_intact(
    app: Flask, smtp_server: SMTPServer, mode: str
) -> None:
    first = OutgoingMail(SENDER, "a@example.org", DOTTED)
    second = OutgoingMail(SENDER, "b@example.org", b"Subject: plain\r\n\r\nno dots here\r\n")

    assert _send(app, first, second) == [None, None]

    received = smtp_server.recorder.received
    assert [r.rcpt_tos for r in received] == [["a@example.org"], ["b@example.org"]]
    assert received[0].raw == DOTTED + b"\r\n"  # the server adds the missing line end
    assert received[1].raw == second.data
    assert smtp_server.recorder.connections == 1


@pytest.mark.handmade_mail  # raw bytes, not our mail's shape
def test_each_refusal_is_classified_per_recipient_and_the_connection_goes_on(
    app: Flask, smtp_server: SMTPServer, mode: str
) -> None:
    refuse = smtp_server.recorder.refuse
    refuse["gone@example.org"] = "550 5.1.1 no such user"
    refuse["full@example.org"] = "552 5.2.2 mailbox full"
    refuse["later@example.org"] = "451 4.3.0 try later"
    refuse["policy@example.org"] = "554 5.7.1 policy"
    addresses = [
        "ok1@example.org",
        "gone@example.org",
        "full@example.org",
        "later@example.org",
        "policy@example.org",
        "ok2@example.org",
    ]
    mails = [OutgoingMail(SENDER, a, b"Subject: x\r\n\r\nbody\r\n") for a in addresses]

    outcomes = _send(app, *mails)

    ok1, gone, full, later, policy, ok2 = outcomes
    assert ok1 is None
    assert ok2 is None
    assert isinstance(gone, PermanentFailure)
    assert gone.hard_bounce
    assert "550 5.1.1 no such user" in str(gone)
    assert isinstance(full, PermanentFailure)
    assert not full.hard_bounce
    assert isinstance(policy, PermanentFailure)
    assert not policy.hard_bounce
    assert type(later) is TemporaryFailure  # about the recipient, not an outage
    assert "451" in str(later)
    # Only the accepted ones were delivered, all over the one connection.
    assert [r.rcpt_tos for r in smtp_server.recorder.received] == [
        ["ok1@example.org"],
        ["ok2@example.org"],
    ]
    assert smtp_server.recorder.connections == 1


@pytest.mark.handmade_mail  # raw bytes, not our mail's shape
def test_a_refused_sender_is_an_outage_and_a_refused_message_is_classified(
    app: Flask, smtp_server: SMTPServer, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def handle_MAIL(
        server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address == "bad@example.org":
            return "553 5.7.1 sender rejected"
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(server: Any, session: Any, envelope: Any) -> str:
        if envelope.rcpt_tos == ["spam@example.org"]:
            return "554 5.6.0 content rejected"
        if envelope.rcpt_tos == ["busy@example.org"]:
            return "452 4.3.1 insufficient storage"
        return "250 OK"

    recorder = smtp_server.recorder
    monkeypatch.setattr(recorder, "handle_MAIL", handle_MAIL, raising=False)
    monkeypatch.setattr(recorder, "handle_DATA", handle_DATA)
    body = b"Subject: x\r\n\r\nbody\r\n"

    sender, spam, busy, fine = _send(
        app,
        OutgoingMail("bad@example.org", "r@example.org", body),
        OutgoingMail(SENDER, "spam@example.org", body),
        OutgoingMail(SENDER, "busy@example.org", body),
        OutgoingMail(SENDER, "fine@example.org", body),
    )

    assert isinstance(sender, ServerUnavailable)
    assert "sender refused: 553" in str(sender)
    assert isinstance(spam, PermanentFailure)
    assert not spam.hard_bounce
    assert "554 5.6.0" in str(spam)
    assert type(busy) is TemporaryFailure
    assert fine is None


# --- the scripted server: replies only to a whole pipelined group ----------------------


class GroupServer:
    """One SMTP session on loopback that answers MAIL, RCPT and DATA only once all
    three have arrived. ``replies`` gives the three replies; after a 354 it reads
    the data and answers ``end``. Everything it reads is kept in ``log``."""

    def __init__(self, replies: tuple[bytes, bytes, bytes], end: bytes = b"250 queued") -> None:
        self.replies, self.end = replies, end
        self.log: list[bytes] = []
        self.data: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        with connection, connection.makefile("rb") as reader:
            connection.sendall(b"220 scripted ESMTP\r\n")
            group: list[bytes] = []
            for line in reader:
                self.log.append(line)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    connection.sendall(b"250-scripted\r\n250-PIPELINING\r\n250 SIZE 100000\r\n")
                elif verb in (b"MAIL", b"RCPT", b"DATA"):
                    group.append(verb)
                    if len(group) == 3:
                        if self.replies[0].startswith(b"421"):
                            connection.sendall(self.replies[0] + b"\r\n")
                            return  # closing, as a server does after 421
                        connection.sendall(b"".join(r + b"\r\n" for r in self.replies))
                        if self.replies[2].startswith(b"354"):
                            data = _read_data(reader)
                            if data is None:
                                return  # the client hung up during DATA
                            self.data.append(data)
                            connection.sendall(self.end + b"\r\n")
                        group = []
                elif verb == b"RSET":
                    connection.sendall(b"250 reset\r\n")
                elif verb == b"QUIT":
                    connection.sendall(b"221 bye\r\n")
                    return

    def close(self) -> None:
        """Stop listening."""
        self._listener.close()
        self._thread.join(timeout=5)


def _read_data(reader: Any) -> bytes | None:
    """The message up to the lone dot; None when the client hung up first."""
    lines = []
    for line in reader:
        if line == b".\r\n":
            return b"".join(lines)
        lines.append(line)
    return None


ACCEPT = (b"250 ok", b"250 ok", b"354 go on")


@pytest.fixture
def group_server(request: pytest.FixtureRequest) -> Iterator[GroupServer]:
    """A scripted server; indirect parameters give (replies, reply after the data)."""
    replies, end = getattr(request, "param", (ACCEPT, b"250 queued"))
    server = GroupServer(replies, end)
    yield server
    server.close()


def _session(server: GroupServer) -> smtplib.SMTP:
    # A lock-step client would wait here for the reply to MAIL, which never comes alone.
    return smtplib.SMTP("127.0.0.1", server.port, timeout=3)


def test_mail_rcpt_and_data_are_pipelined_and_dots_stuffed(group_server: GroupServer) -> None:
    with _session(group_server) as host:
        send_transaction(host, SENDER, "r@example.org", DOTTED)

    assert group_server.log[1].startswith(b"mail from:<news@example.org> size=")
    assert group_server.log[2] == b"rcpt to:<r@example.org>\r\n"
    assert group_server.log[3] == b"data\r\n"
    stuffed = group_server.data[0]
    assert stuffed == re.sub(rb"(?m)^\.", b"..", DOTTED) + b"\r\n"


@pytest.mark.parametrize(
    "group_server",
    [((b"250 ok", b"550 5.1.1 no such user", b"354 go on anyway"), b"250 queued")],
    indirect=True,
)
def test_data_accepted_after_a_refused_recipient_is_ended_empty_and_refused(
    group_server: GroupServer,
) -> None:
    """RFC 2920: a server may say 354 although every recipient was refused. The
    client ends that empty message at once and reports the recipient's refusal."""
    with _session(group_server) as host:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
            send_transaction(host, SENDER, "gone@example.org", b"Subject: x\r\n\r\nbody\r\n")
        failure = classify(caught.value)

    assert caught.value.recipients == {"gone@example.org": (550, b"5.1.1 no such user")}
    assert isinstance(failure, PermanentFailure)
    assert failure.hard_bounce
    assert group_server.data == [b""]  # nothing of the message went out
    assert b"RSET\r\n" in [line.upper() for line in group_server.log]


@pytest.mark.parametrize(
    "group_server",
    [((b"553 5.7.1 sender rejected", b"250 ok", b"354 go on anyway"), b"250 queued")],
    indirect=True,
)
def test_data_accepted_after_a_refused_sender_hangs_up_and_sends_nothing(
    group_server: GroupServer,
) -> None:
    """A broken server took the recipient and the data after refusing the sender:
    ending that message could deliver an empty mail, so the client hangs up."""
    host = _session(group_server)
    with pytest.raises(smtplib.SMTPSenderRefused) as caught:
        send_transaction(host, SENDER, "r@example.org", b"Subject: x\r\n\r\nbody\r\n")

    assert host.sock is None
    assert isinstance(classify(caught.value), ServerUnavailable)
    group_server.close()
    assert group_server.data == []


@pytest.mark.parametrize(
    "group_server", [((b"421 4.3.2 shutting down", b"", b""), b"")], indirect=True
)
def test_a_421_to_mail_closes_the_session_and_is_an_outage(group_server: GroupServer) -> None:
    host = _session(group_server)
    with pytest.raises(smtplib.SMTPSenderRefused) as caught:
        send_transaction(host, SENDER, "r@example.org", b"Subject: x\r\n\r\nbody\r\n")

    assert caught.value.smtp_code == 421
    assert host.sock is None  # closed, as sendmail does
    assert isinstance(classify(caught.value), ServerUnavailable)


@pytest.mark.parametrize("group_server", [(ACCEPT, b"554 5.6.0 rejected")], indirect=True)
def test_a_refusal_after_the_data_is_a_data_error(group_server: GroupServer) -> None:
    with _session(group_server) as host, pytest.raises(smtplib.SMTPDataError) as caught:
        send_transaction(host, SENDER, "r@example.org", b"Subject: x\r\n\r\nbody\r\n")

    failure = classify(caught.value)
    assert isinstance(failure, PermanentFailure)
    assert not failure.hard_bounce


# --- the pieces, against smtplib's own ------------------------------------------------


def test_dot_stuffing_equals_smtplibs_regex_on_random_data() -> None:
    rng = random.Random(7)
    pieces = [b".", b"..", b"\r\n", b"\n", b"\r", b"a", b" ", b"\r\n.", b".\r\n"]
    for _ in range(5000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        expected = re.sub(rb"(?m)^\.", b"..", data)
        if expected[-2:] != b"\r\n":
            expected += b"\r\n"
        assert terminated(data) == expected + b".\r\n", data


@pytest.mark.parametrize(
    "address",
    [
        "reader@example.org",
        "first.last+tag@sub.example.co.uk",
        "o'brien@example.org",
        "x!#$%&'*+/=?^_`{|}~-@example.org",
        "xn--bcher-kva@xn--bcher-kva.example",
        "Name <name@example.org>",
        '"quoted local"@example.org',
        "no-at-sign",
        "",
        "<already@example.org>",
        "a..b@example.org",
        "user@[127.0.0.1]",
    ],
)
def test_quote_address_equals_smtplibs(address: str) -> None:
    assert quote_address(address) == smtplib.quoteaddr(address)
