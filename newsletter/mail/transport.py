"""Where mail goes: an SMTP server (Flask-Mail's settings and connection), or,
in development only, the dev mailbox folder."""

from __future__ import annotations

import contextlib
import secrets
import smtplib
import socket
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from flask import Flask, current_app
from flask_mail import Connection

from ..models import utcnow
from .message import OutgoingMail


class Transport(Protocol):
    """An open connection that sends messages; use it as a context manager."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def send(self, mail: OutgoingMail) -> None:
        """Send one message or raise TemporaryFailure / PermanentFailure."""


class TemporaryFailure(Exception):
    """Worth retrying later: 4xx replies, timeouts, refused or dropped connections."""


class PermanentFailure(Exception):
    """Retrying will not help: 5xx replies, malformed messages."""


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
            raise classify(exc) from exc
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
                raise classify(exc) from exc
            if not host.has_extn("smtputf8"):
                raise PermanentFailure(
                    "the address needs SMTPUTF8, which the mail server does not offer"
                )
            options = ["SMTPUTF8"]
        try:
            host.sendmail(mail.sender, [mail.recipient], mail.data, mail_options=options)
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
    """Decide whether an SMTP error is worth a retry (RFC 5321: 4xx yes, 5xx no)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        text = "; ".join(f"{code} {msg!r}" for code, msg in exc.recipients.values())
        if codes and all(code >= 500 for code in codes):
            return PermanentFailure(f"recipient refused: {text}")
        return TemporaryFailure(f"recipient deferred: {text}")
    if isinstance(exc, smtplib.SMTPResponseException):
        detail = f"{exc.smtp_code} {exc.smtp_error!r}"
        if 500 <= exc.smtp_code < 600:
            return PermanentFailure(detail)
        return TemporaryFailure(detail)
    if isinstance(exc, smtplib.SMTPServerDisconnected | socket.timeout | OSError):
        return TemporaryFailure(f"connection: {exc}")
    return TemporaryFailure(str(exc))


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


class MailNotConfigured(TemporaryFailure):
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
