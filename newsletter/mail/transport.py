"""Where mail goes: an SMTP server (Flask-Mail), or the dev mailbox folder."""

from __future__ import annotations

import contextlib
import smtplib
import socket
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from flask import Flask, current_app
from flask_mail import BadHeaderError, Connection, Message

from ..extensions import mail
from ..models import utcnow


class Transport(Protocol):
    """An open connection that sends messages; use it as a context manager."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def send(self, message: Message) -> None:
        """Send one message or raise."""


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
        try:
            if self._connection.host is not None:
                self._connection.host.quit()
        except (OSError, smtplib.SMTPException):
            self._connection.host.close()  # type: ignore[union-attr]

    def send(self, message: Message) -> None:
        """Send over the open connection, translating errors into retry decisions."""
        try:
            self._connection.send(message)
        except (OSError, smtplib.SMTPException, BadHeaderError) as exc:
            raise classify(exc) from exc
        except ValueError as exc:  # incl. UnicodeError: the message cannot be encoded
            self._reset()
            raise unencodable(exc) from exc

    def _reset(self) -> None:
        """Abort a half-begun SMTP transaction so the connection serves the next mail."""
        host = self._connection.host
        if host is not None:
            # A dead connection shows on the next send, as a temporary failure.
            with contextlib.suppress(OSError, smtplib.SMTPException):
                host.rset()


def unencodable(exc: ValueError) -> PermanentFailure:
    """A message that cannot be put on the wire; retrying will not change that.

    The usual cause is an address with a non-ASCII local part (``søren@...``),
    which needs SMTPUTF8; Flask-Mail's message generation supports only ASCII
    addresses (with IDNA for the domain).
    """
    return PermanentFailure(f"message cannot be encoded (non-ASCII address?): {exc}")


def classify(exc: BaseException) -> TemporaryFailure | PermanentFailure:
    """Decide whether an SMTP error is worth a retry (RFC 5321: 4xx yes, 5xx no)."""
    if isinstance(exc, BadHeaderError):
        return PermanentFailure("message has a header with a line break")
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

    def send(self, message: Message) -> None:
        """Store the message as the SMTP server would have received it."""
        if message.has_bad_headers():
            raise PermanentFailure("message has a header with a line break")
        try:
            data = message.as_bytes()
        except ValueError as exc:
            raise unencodable(exc) from exc
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{abs(hash(message.msgId)) % 10**8:08d}.eml"
        (self._folder / name).write_bytes(data)


def open_transport(app: Flask) -> Transport:
    """SMTP when MAIL_SERVER is set, the dev mailbox otherwise."""
    if app.config.get("MAIL_SERVER"):
        return SMTPTransport(app)
    return MailboxTransport(app)


__all__ = ["MailboxTransport", "PermanentFailure", "SMTPTransport", "TemporaryFailure", "mail"]
