"""Building outgoing mail as bytes, ready for the wire.

The standard library's ``EmailMessage`` builds the message (Flask-Mail's
``Message`` cannot carry an address with a non-ASCII local part, and it
generates with a 78-column policy that turns List-Unsubscribe's long URL into
an RFC 2047 encoded word, which receivers no longer read as a URL). Flask-Mail
still provides the settings and the SMTP connection (see transport.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from email_validator import EmailNotValidError, validate_email

from .dkim import sign_message

# RFC 5322 allows 998 characters a line; 78 is only a recommendation.
MAIL_POLICY = policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True)
class OutgoingMail:
    """A complete message and its envelope."""

    sender: str  # envelope sender (addr-spec)
    recipient: str  # envelope recipient (addr-spec, ASCII unless SMTPUTF8)
    data: bytes

    @property
    def needs_smtputf8(self) -> bool:
        """An address that cannot be written in ASCII needs the SMTPUTF8 extension."""
        return not (self.sender.isascii() and self.recipient.isascii())


def safe_display_name(name: str) -> str:
    """A display name that no mail parser can turn into another header.

    The email package decodes RFC 2047 encoded words even inside a quoted
    display name when it parses a header it is given, so a name typed as
    ``=?utf-8?q?=0D=0ABcc:_x@example.org?=`` would come out as a line break and
    a Bcc header (CPython 3.11.7 here; CVE-2024-6923 family). Breaking the
    ``=?`` opener keeps such a name literal; no real name contains it.
    Control characters are dropped for the same reason.
    """
    cleaned = "".join(ch for ch in name if ch.isprintable())
    return cleaned.replace("=?", "= ?")


def wire_address(address: str) -> str:
    """The ASCII form of an address where one exists (IDN domain -> punycode).

    An address with a non-ASCII local part has no ASCII form and stays as it
    is; it is sent with SMTPUTF8.
    """
    if address.isascii():
        return address
    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return address
    return result.ascii_email or result.normalized


def compose_mail(
    *,
    sender: str,
    to_address: str,
    to_name: str,
    subject: str,
    text: str,
    html: str,
    domain: str,
    headers: dict[str, str] | None = None,
) -> OutgoingMail:
    """A multipart/alternative mail (text + HTML, quoted-printable) as bytes.

    Header values with CR or LF are refused by the email package (ValueError),
    so no input can inject a header.
    """
    recipient = wire_address(to_address)
    username, _, host = recipient.rpartition("@")
    message = EmailMessage(policy=MAIL_POLICY)
    message["From"] = sender
    message["To"] = Address(display_name=safe_display_name(to_name), username=username, domain=host)
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=domain)
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(text, cte="quoted-printable")
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    mail = OutgoingMail(sender=parseaddr(sender)[1], recipient=recipient, data=b"")
    data = message.as_bytes(policy=MAIL_POLICY.clone(utf8=mail.needs_smtputf8))
    return OutgoingMail(sender=mail.sender, recipient=recipient, data=sign_message(data))
