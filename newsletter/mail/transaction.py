"""One SMTP mail transaction (MAIL, RCPT, DATA) for one recipient, faster than
``smtplib.SMTP.sendmail`` and with the same outcome.

``sendmail`` waits for the reply to each command in turn (four round trips a
message) and dot-stuffs every message with a regular expression. Here:

- when the server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go out in
  one write and their three replies are read afterwards: two round trips;
- dot-stuffing is two C-level byte searches, and a copy only when a line
  starts with a dot.

Every reply is still read and judged on its own, in order, and each outcome
raises exactly the exception ``sendmail`` raises for it (sender refused,
recipient refused with its code, data refused, connection lost), so
``transport.classify`` decides retries, failures and hard bounces unchanged.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
from collections.abc import Sequence

CRLF = b"\r\n"
# A plain addr-spec (dot-atom local part and domain): what parseaddr returns it
# as unchanged, so smtplib.quoteaddr would give "<address>".
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_PLAIN_ADDRESS = re.compile(rf"{_DOT_ATOM}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def send_transaction(
    host: smtplib.SMTP, sender: str, recipient: str, data: bytes, options: Sequence[str] = ()
) -> None:
    """``host.sendmail(sender, [recipient], data, mail_options=options)``, pipelined
    when the server allows it; raises what ``sendmail`` raises."""
    host.ehlo_or_helo_if_needed()
    if any(option.lower() == "smtputf8" for option in options):
        # Rare (a non-ASCII local part), and smtplib switches the command
        # encoding to UTF-8 for it: leave that to smtplib.
        host.sendmail(sender, [recipient], data, mail_options=list(options))
        return
    esmtp: list[str] = []
    if host.does_esmtp:  # sendmail sends no option to a server that only says HELO
        esmtp = [f"size={len(data)}"] if host.has_extn("size") else []
        esmtp += options
    mail = _command(host, "mail", f"from:{quote_address(sender)}", esmtp)
    rcpt = _command(host, "rcpt", f"to:{quote_address(recipient)}", [])
    if host.does_esmtp and host.has_extn("pipelining"):
        host.send(mail + rcpt + b"data\r\n")
        mail_reply = _read(host)
        # After a 421 the server has closed the connection: nothing more to read.
        rcpt_reply = _read(host) if host.sock else None
        data_reply = _read(host) if host.sock else None
        if mail_reply[0] != 250 or rcpt_reply is None or rcpt_reply[0] not in (250, 251):
            if data_reply is not None and data_reply[0] == 354:
                # DATA accepted despite the refusal. With no recipient taken,
                # ending the empty message is harmless (RFC 2920 says so); a
                # server that took the recipient after refusing the sender could
                # deliver it, so then hang up instead: nothing is sent.
                if rcpt_reply is not None and rcpt_reply[0] in (250, 251):
                    host.close()
                else:
                    host.send(b"." + CRLF)
                    host.getreply()
            _refused(host, sender, recipient, mail_reply, rcpt_reply)
    else:
        host.send(mail)
        mail_reply = _read(host)
        if mail_reply[0] != 250:
            _refused(host, sender, recipient, mail_reply, None)
        host.send(rcpt)
        rcpt_reply = _read(host)
        if rcpt_reply[0] not in (250, 251):
            _refused(host, sender, recipient, mail_reply, rcpt_reply)
        host.send(b"data\r\n")
        data_reply = _read(host)
    assert data_reply is not None
    if data_reply[0] != 354:
        raise smtplib.SMTPDataError(*data_reply)  # as smtplib.SMTP.data, no RSET
    host.send(terminated(data))
    code, text = _read(host)
    if code != 250:
        _reset(host)
        raise smtplib.SMTPDataError(code, text)


def quote_address(address: str) -> str:
    """``smtplib.quoteaddr`` (the address in angle brackets) without running the
    email package's address parser on a plain address, which it does twice per
    message."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def terminated(data: bytes) -> bytes:
    """The message as DATA sends it: dot-stuffed, CRLF-ended, then "." CRLF.

    The same bytes as smtplib's ``re.sub(rb"(?m)^\\.", b"..", data)``: a dot at
    the very start or after any LF is doubled. A message without such a line
    (nearly all: quoted-printable lines rarely start with a dot) is not copied.
    """
    if data.startswith(b"."):
        data = b"." + data
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    if not data.endswith(CRLF):
        data += CRLF
    return data + b"." + CRLF


def _command(host: smtplib.SMTP, verb: str, argument: str, options: Sequence[str]) -> bytes:
    """One command line as ``smtplib.SMTP.putcmd`` would send it."""
    line = f"{verb} {argument}" + (" " + " ".join(options) if options else "")
    if "\r" in line or "\n" in line:
        # putcmd's guard: no address or option may smuggle in a command.
        raise ValueError("command and arguments contain prohibited newline characters")
    return line.encode(host.command_encoding) + CRLF


def _read(host: smtplib.SMTP) -> tuple[int, bytes]:
    """Read one reply; on 421 (the server is closing the session) close our end,
    as sendmail does."""
    code, text = host.getreply()
    if code == 421:
        host.close()
    return code, text


def _refused(
    host: smtplib.SMTP,
    sender: str,
    recipient: str,
    mail_reply: tuple[int, bytes],
    rcpt_reply: tuple[int, bytes] | None,
) -> None:
    """Reset the transaction and raise sendmail's exception: the sender's refusal
    first (lock-step, RCPT is then never sent), else the recipient's."""
    _reset(host)
    if mail_reply[0] != 250:
        raise smtplib.SMTPSenderRefused(*mail_reply, sender)
    assert rcpt_reply is not None
    raise smtplib.SMTPRecipientsRefused({recipient: rcpt_reply})


def _reset(host: smtplib.SMTP) -> None:
    """RSET after a refusal, unless a 421 closed the session (sendmail's ``_rset``:
    a connection that died shows on the next mail)."""
    if host.sock is not None:
        with contextlib.suppress(smtplib.SMTPServerDisconnected):
            host.rset()
