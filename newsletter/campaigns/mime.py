"""Per-recipient MIME assembly for campaign mail, built for the send loop.

``email.message`` builds a tree and runs a policy-driven generator for every
message, which costs more than the whole SMTP exchange with a local relay.
Campaign mail has one fixed shape (multipart/alternative, text + HTML, UTF-8,
quoted-printable), so the invariant headers are written once per campaign
(by ``mail.headers.header_line``, which writes every header we send) and each
recipient costs a few header lines, the personal values' quoted-printable and
a join (``mail.message.alternative``, shared with transactional mail). The
output is checked against the ``email`` parser in the tests, and DKIM-signed
by dkimpy when configured.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from email.utils import formatdate

from ..mail.headers import Mailbox, header_line
from ..mail.message import CRLF, alternative, quoted_printable


@dataclass(frozen=True)
class CampaignEnvelope:
    """What is the same in every mail of a campaign, already encoded."""

    sender: bytes  # the From: line
    subject: bytes  # the Subject: line
    list_id: bytes  # the List-Id: line
    domain: str  # for Message-ID
    extra_unsubscribe: str = ""  # ", <mailto:...>" when configured
    feedback_id: bytes = b""  # the Feedback-ID: line, when there is one


def make_envelope(
    sender: str,
    subject: str,
    list_id: str | Mailbox,
    domain: str,
    mailto: str = "",
    feedback_id: str = "",
) -> CampaignEnvelope:
    """Encode the invariant headers once for a campaign (by header_line, as every
    header; ``list_id`` is the list's name and identifier; ``feedback_id`` the
    bulk-mail Feedback-ID, see mail.render.feedback_id)."""
    from_box = Mailbox.parse(sender)
    return CampaignEnvelope(
        # A non-ASCII sender address goes out with SMTPUTF8 (OutgoingMail.needs_smtputf8).
        sender=header_line("From", from_box, utf8=not from_box.address.isascii()),
        subject=header_line("Subject", subject),
        list_id=header_line("List-Id", list_id),
        domain=domain,
        extra_unsubscribe=f", <mailto:{mailto}?subject=unsubscribe>" if mailto else "",
        feedback_id=header_line("Feedback-ID", feedback_id) if feedback_id else b"",
    )


def build_message(
    envelope: CampaignEnvelope,
    *,
    to_address: str,
    to_name: str,
    unsubscribe_url: str,
    text: str,
    html: str,
) -> bytes:
    """The complete message for one recipient, CRLF line ends, ready for DATA."""
    return build_encoded(
        envelope,
        to_address=to_address,
        to_name=to_name,
        unsubscribe_url=unsubscribe_url,
        text=quoted_printable(text),
        html=quoted_printable(html),
    )


def build_encoded(
    envelope: CampaignEnvelope,
    *,
    to_address: str,
    to_name: str,
    unsubscribe_url: str,
    text: bytes,
    html: bytes,
) -> bytes:
    """:func:`build_message` with both bodies already quoted-printable (CRLF).

    The To line is written by header_line like every other, raw UTF-8 only
    for an address that needs SMTPUTF8; an address it cannot write safely
    raises UnsafeHeader.
    """
    unsubscribe = f"<{unsubscribe_url}>{envelope.extra_unsubscribe}"
    headers = [
        envelope.sender,
        header_line("To", Mailbox(to_name, to_address), utf8=not to_address.isascii()),
        envelope.subject,
        header_line("Date", formatdate(usegmt=True)),
        header_line("Message-ID", f"<{secrets.token_hex(16)}@{envelope.domain}>"),
        envelope.list_id,
        header_line("List-Unsubscribe", unsubscribe),
        header_line("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    if envelope.feedback_id:
        headers.append(envelope.feedback_id)
    return alternative(headers, text, html)


SOFT_BREAK = b"=" + CRLF
MAX_QP_LINE = 76  # RFC 2045, not counting the CRLF
EQUALS = ord("=")


@dataclass(frozen=True)
class EncodedBody:
    """A body template, quoted-printable-encoded once per campaign, with slots.

    The template's line ends must be normalised already, and the values must
    be single-line (names have no control characters; URLs none): a CR at
    the end of one piece and an LF at the start of the next would otherwise be
    read as two line ends instead of one.

    Quoted-printable was most of what building a message cost, for the same
    body in every mail (docs/performance.md). Here only the personal values are
    encoded per recipient, each on lines of its own between soft line breaks ("=" CRLF),
    which decode to nothing: the decoded body is exactly the template with the
    values filled in, and no join makes a line longer than 76 characters.
    """

    parts: tuple[bytes, ...]  # encoded static parts, each ending where a value may start
    slots: tuple[str, ...]  # the placeholder between parts[i] and parts[i + 1]

    @classmethod
    def encode(cls, parts: list[str], slots: list[str]) -> EncodedBody:
        """Encode the static parts of a template split at its placeholders."""
        # Each part but the last is followed by a value on a line of its own.
        encoded = [continued(quoted_printable(part)) for part in parts[:-1]]
        return cls((*encoded, quoted_printable(parts[-1])), tuple(slots))

    def fill(self, values: dict[str, str]) -> bytes:
        """The encoded body with each slot's value (encoded here) filled in."""
        encoded = {slot: continued(quoted_printable(values[slot])) for slot in set(self.slots)}
        out = [self.parts[0]]
        for slot, part in zip(self.slots, self.parts[1:], strict=True):
            out += (encoded[slot], part)
        return b"".join(out)


def continued(chunk: bytes) -> bytes:
    """Encoded text followed by a soft line break, unless it is empty or ends a line.

    ``b2a_qp`` lets the last line of its output reach 76 characters, and the
    "=" would make it 77: such a line is split once more, never inside an
    "=XX" escape.
    """
    if not chunk or chunk.endswith(CRLF):
        return chunk
    start = chunk.rfind(CRLF)
    start = 0 if start < 0 else start + 2
    if len(chunk) - start < MAX_QP_LINE:
        return chunk + SOFT_BREAK
    cut = start + MAX_QP_LINE - 1
    if chunk[cut - 1] == EQUALS:
        cut -= 1
    elif chunk[cut - 2] == EQUALS:
        cut -= 2
    return chunk[:cut] + SOFT_BREAK + chunk[cut:] + SOFT_BREAK
