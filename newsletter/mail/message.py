"""Building outgoing mail as bytes, ready for the wire.

Every mail we send has one shape: our headers, then multipart/alternative
with a text and an HTML part, UTF-8, quoted-printable, CRLF line ends. Each
header line is written by :func:`headers.header_line` (the only place that
writes one); the body is assembled here. The ``email`` package does not
build our mail: it decodes and re-encodes header values as it goes, which is
how an encoded word in an address or a subject became a line break (see
headers.py). Flask-Mail provides the settings and the SMTP connection (see
transport.py).
"""

from __future__ import annotations

import binascii
import secrets
from dataclasses import dataclass
from email.utils import formatdate, make_msgid

from email_validator import EmailNotValidError, validate_email

from .dkim import sign_message
from .headers import Mailbox, header_line

CRLF = b"\r\n"
PART_HEADERS = {
    subtype: CRLF.join(
        [
            header_line("Content-Type", f'text/{subtype}; charset="utf-8"'),
            header_line("Content-Transfer-Encoding", "quoted-printable"),
        ]
    )
    for subtype in ("plain", "html")
}
MIME_VERSION = header_line("MIME-Version", "1.0")


@dataclass(frozen=True)
class OutgoingMail:
    """A complete message and its envelope."""

    sender: str  # envelope sender (addr-spec)
    recipient: str  # envelope recipient (addr-spec, ASCII unless SMTPUTF8)
    data: bytes

    @property
    def needs_smtputf8(self) -> bool:
        """An address that cannot be written in ASCII, in the envelope or in a
        header (a From that stays UTF-8 under a VERP envelope sender), needs the
        SMTPUTF8 extension. The rest of our mail is 7-bit: bodies are
        quoted-printable, other headers encoded words."""
        return not (self.sender.isascii() and self.recipient.isascii() and self.data.isascii())


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


MAX_QP_LINE = 76  # RFC 2045 6.7 (5): encoded lines, not counting the CRLF
EQUALS = ord("=")


def quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends, as RFC 2045 wants on the wire,
    no line longer than 76 characters.

    A lone CR (old Mac line ends) would go out raw, and RFC 5322 allows CR only
    in CRLF: like universal newlines, it is read as a line end.

    ``binascii.b2a_qp`` writes a line's trailing space or tab as "=20"/"=09"
    after it has already filled the line, which makes 77 or 78 characters
    (SpamAssassin: MIME_QP_LONG_LINE): such lines are broken once more here.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(lines.encode("utf-8"))
    if len(encoded) > MAX_QP_LINE and any(len(line) > MAX_QP_LINE for line in encoded.split(b"\n")):
        encoded = b"\n".join(map(_short_lines, encoded.split(b"\n")))
    return encoded.replace(b"\n", CRLF)


def _short_lines(line: bytes) -> bytes:
    """An encoded line as lines of at most 76 characters joined by soft line
    breaks ("=" and a line end, which decode to nothing), never cut inside an
    "=XX" escape. A trailing "=" (a soft break already) stays at the end."""
    if len(line) <= MAX_QP_LINE:
        return line
    pieces: list[bytes] = []
    start = 0
    while len(line) - start > MAX_QP_LINE:
        cut = start + MAX_QP_LINE - 1  # room for the "=" of the soft break
        if line[cut - 1] == EQUALS:
            cut -= 1
        elif line[cut - 2] == EQUALS:
            cut -= 2
        pieces.append(line[start:cut] + b"=")
        start = cut
    pieces.append(line[start:])
    return b"\n".join(pieces)


def alternative(headers: list[bytes], text: bytes, html: bytes) -> bytes:
    """A whole message: the header lines (from header_line), MIME-Version and a
    multipart/alternative body of the two quoted-printable parts (CRLF)."""
    boundary = "nl-" + secrets.token_hex(12)
    delimiter = b"--" + boundary.encode("ascii")
    content_type = f'multipart/alternative; boundary="{boundary}"'
    return CRLF.join(
        [
            *headers,
            MIME_VERSION,
            header_line("Content-Type", content_type),
            b"",
            delimiter,
            PART_HEADERS["plain"],
            b"",
            text,
            delimiter,
            PART_HEADERS["html"],
            b"",
            html,
            delimiter + b"--",
            b"",
        ]
    )


def compose_mail(
    *,
    sender: str,
    to_address: str,
    to_name: str,
    subject: str,
    text: str,
    html: str,
    domain: str,
    headers: dict[str, str | Mailbox] | None = None,
) -> OutgoingMail:
    """A multipart/alternative mail (text + HTML, quoted-printable) as bytes, signed.

    Every header goes through header_line: no input can add a header or a
    line break, and an address that cannot be written safely raises
    UnsafeHeader instead of being sent.
    """
    recipient = wire_address(to_address)
    from_box = Mailbox.parse(sender)
    utf8 = not (recipient.isascii() and from_box.address.isascii())
    lines = [
        header_line("From", from_box, utf8=utf8),
        header_line("To", Mailbox(to_name, recipient), utf8=utf8),
        header_line("Subject", subject),
        header_line("Date", formatdate(usegmt=True)),
        header_line("Message-ID", make_msgid(domain=domain)),
        *(header_line(name, value) for name, value in (headers or {}).items()),
    ]
    data = alternative(lines, quoted_printable(text), quoted_printable(html))
    return OutgoingMail(sender=from_box.address, recipient=recipient, data=sign_message(data))
