"""Where mail goes: an SMTP server (Flask-Mail's settings and connection), or,
in development only, the dev mailbox folder."""

from __future__ import annotations

import contextlib
import re
import secrets
import smtplib
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from flask import Flask, current_app
from flask_mail import Connection

from ..models import utcnow
from .message import OutgoingMail
from .transaction import send_transaction


class Transport(Protocol):
    """An open connection that sends messages; use it as a context manager."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def send(self, mail: OutgoingMail) -> None:
        """Send one message or raise TemporaryFailure / PermanentFailure."""


class TemporaryFailure(Exception):
    """Worth retrying later: a 4xx reply about this recipient or message."""


class ServerUnavailable(TemporaryFailure):
    """The server cannot take mail from us right now: unreachable, dropped the
    connection, refused our sender or our login, or none is configured.

    It says nothing about the recipient, so it never uses up their attempts:
    a delivery keeps being retried (with a capped backoff) for as long as the
    outage lasts, and goes out when it ends. Nothing is failed over an outage.
    """


class PermanentFailure(Exception):
    """Retrying will not help: a 5xx reply about this recipient or message."""

    def __init__(self, message: str, *, hard_bounce: bool = False) -> None:
        super().__init__(message)
        # The refusal says the address itself does not work: suppress it.
        self.hard_bounce = hard_bounce


class _TimeoutConnection(Connection):
    """Flask-Mail's connection with a socket timeout: a hung server must not hang a worker."""

    def configure_host(self) -> smtplib.SMTP | smtplib.SMTP_SSL:
        timeout = current_app.config["MAIL_TIMEOUT"]
        state = self.mail
        host: smtplib.SMTP | smtplib.SMTP_SSL
        if state.use_ssl:
            host = smtplib.SMTP_SSL(state.server, state.port, timeout=timeout)
        else:
            host = smtplib.SMTP(state.server, state.port, timeout=timeout)
        if state.use_tls:
            host.starttls()
        if state.username and state.password:
            host.login(state.username, state.password)
        return host


class SMTPTransport:
    """One SMTP connection reused for a whole batch."""

    def __init__(self, app: Flask) -> None:
        self._connection = _TimeoutConnection(app.extensions["mail"])

    def __enter__(self) -> Self:
        try:
            self._connection.__enter__()
        except (OSError, smtplib.SMTPException) as exc:
            # Connecting, STARTTLS or login failed: the server's side, or ours.
            raise ServerUnavailable(f"cannot open an SMTP session: {_describe(exc)}") from exc
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        host = self._connection.host
        try:
            if host is not None:
                host.quit()
        except (OSError, smtplib.SMTPException):
            host.close()  # type: ignore[union-attr]

    def send(self, mail: OutgoingMail) -> None:
        """Send over the open connection, translating errors into retry decisions."""
        host = self._connection.host
        assert host is not None, "use the transport as a context manager"
        options: list[str] = []
        if mail.needs_smtputf8:
            try:
                host.ehlo_or_helo_if_needed()  # smtplib greets lazily; we need the extensions
            except (OSError, smtplib.SMTPException) as exc:
                raise ServerUnavailable(f"connection: {_describe(exc)}") from exc
            if not host.has_extn("smtputf8"):
                raise PermanentFailure(
                    "the address needs SMTPUTF8, which the mail server does not offer"
                )
            options = ["SMTPUTF8"]
        try:
            send_transaction(host, mail.sender, mail.recipient, mail.data, options)
        except (OSError, smtplib.SMTPException) as exc:
            self._reset()
            raise classify(exc) from exc

    def _reset(self) -> None:
        """Abort a half-begun SMTP transaction so the connection serves the next mail."""
        host = self._connection.host
        if host is not None:
            # A dead connection shows on the next send, as a temporary failure.
            with contextlib.suppress(OSError, smtplib.SMTPException):
                host.rset()


def classify(exc: BaseException) -> TemporaryFailure | PermanentFailure:
    """Decide what an SMTP error means for the delivery (RFC 5321 reply classes).

    - a refusal of the recipient: 5xx permanent (a hard bounce if the enhanced
      code says the address is bad), 4xx temporary;
    - our sender refused, the connection lost or timed out: the server is
      unavailable to us, which is not the recipient's fault;
    - any other 5xx (the message at DATA) permanent, 4xx temporary.
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = list(exc.recipients.values())
        text = "; ".join(f"{code} {_text(message)}" for code, message in replies)
        if replies and all(code >= 500 for code, _ in replies):
            hard = all(is_hard_bounce(code, _text(message)) for code, message in replies)
            return PermanentFailure(f"recipient refused: {text}", hard_bounce=hard)
        return TemporaryFailure(f"recipient deferred: {text}")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return ServerUnavailable(
            f"sender refused: {exc.smtp_code} {_text(exc.smtp_error)} "
            "(check MAIL_DEFAULT_SENDER and the relay's settings)"
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        detail = f"{exc.smtp_code} {_text(exc.smtp_error)}"
        if 500 <= exc.smtp_code < 600:
            return PermanentFailure(detail)
        return TemporaryFailure(detail)
    return ServerUnavailable(f"connection: {_describe(exc)}")


ENHANCED_CODE = re.compile(r"^\s*(\d)\.(\d{1,3})\.(\d{1,3})\b")


def is_hard_bounce(code: int, message: str) -> bool:
    """Whether a 5xx refusal of a recipient says the *address* does not work.

    Yes with no enhanced status code (RFC 3463), or with 5.1.x (bad mailbox or
    domain) or 5.2.1 (mailbox disabled). No for 5.2.2 (mailbox full), 5.7.x
    (policy, relay denied) and the rest: suppressing on those would drop
    people over problems that are not theirs.
    """
    if not 500 <= code < 600:
        return False
    match = ENHANCED_CODE.match(message)
    if match is None:
        return True
    klass, subject, detail = match.groups()
    return klass == "5" and (subject == "1" or (subject, detail) == ("2", "1"))


def _text(message: bytes | str) -> str:
    """An SMTP reply text as str (smtplib gives bytes)."""
    if isinstance(message, bytes):
        return message.decode("utf-8", errors="replace")
    return message


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return str(exc) or type(exc).__name__


class MailboxTransport:
    """Development: each message becomes an .eml file in MAILBOX_DIR (see /dev/mailbox)."""

    def __init__(self, app: Flask) -> None:
        self._folder = Path(app.config["MAILBOX_DIR"])

    def __enter__(self) -> Self:
        self._folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def send(self, mail: OutgoingMail) -> None:
        """Store the message exactly as an SMTP server would have received it."""
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{secrets.randbelow(10**8):08d}.eml"
        (self._folder / name).write_bytes(mail.data)


class MailNotConfigured(ServerUnavailable):
    """No MAIL_SERVER outside development: keep the mail queued, never pretend to send."""


def open_transport(app: Flask) -> Transport:
    """SMTP when MAIL_SERVER is set; the dev mailbox only in debug or testing.

    In production a missing MAIL_SERVER must not turn into mail silently
    written to a folder and marked sent: it is a temporary failure, so the
    mail waits in the outbox until the setting is fixed.
    """
    if app.config.get("MAIL_SERVER"):
        return SMTPTransport(app)
    if app.debug or app.testing:
        return MailboxTransport(app)
    raise MailNotConfigured("NEWSLETTER_MAIL_SERVER is not set; mail stays queued")
