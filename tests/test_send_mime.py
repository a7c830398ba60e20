"""Quoted-printable once per campaign (campaigns/mime.py, EncodedBody): the static
parts of a body are encoded once, only the personal values per recipient, joined
by soft line breaks. What a mail client decodes must be exactly the template
with the values filled in, as the per-recipient encoding of the whole body gave.
"""

from __future__ import annotations

import quopri
import random

import pytest

from newsletter.campaigns.compose import MANAGE_URL, NAME, UNSUBSCRIBE_URL, personalise
from newsletter.campaigns.mime import EncodedBody, continued, quoted_printable
from newsletter.campaigns.personal import encode_template

SLOTS = [NAME, UNSUBSCRIBE_URL, MANAGE_URL]
# Pieces chosen for the edges: spaces and tabs before a value or a line end,
# "=", dots, non-ASCII, lines near and over 76 characters, every kind of line end.
TEMPLATE_PIECES = [
    "a", " ", "\t", "=", ".", "\n", "\r\n", "\r", " \n", "æ", "ø", "😀", "-", "==",
    "x" * 30, "y" * 73, "y" * 74, "y" * 75, "y" * 80,
]  # fmt: skip
# Values are single-line: names have no control characters, URLs none.
VALUE_PIECES = ["a", " ", "\t", "=", ".", "æ", "😀", "-", "x" * 30, "y" * 74, "y" * 75, "z" * 100]


def decoded(body: bytes) -> str:
    """What a mail client reads from a quoted-printable body."""
    assert b"\n" not in body.replace(b"\r\n", b""), "a bare LF on the wire"
    return quopri.decodestring(body.replace(b"\r\n", b"\n")).decode("utf-8")


def assert_well_formed(body: bytes) -> None:
    """No line longer than 76, no line ending in white space (RFC 2045).

    binascii.b2a_qp itself lets a line that ends in an encoded space or tab
    ("=20", "=09") reach 77 or 78 characters; that is its doing, not the joins'.
    """
    for line in body.split(b"\r\n"):
        assert len(line) <= 76 or line.endswith((b"=20", b"=09")), line
        assert not line.endswith((b" ", b"\t")), line


def test_random_templates_decode_to_the_template_with_the_values_filled_in() -> None:
    rng = random.Random(3)
    for _ in range(20000):
        template = "".join(rng.choice(TEMPLATE_PIECES + SLOTS) for _ in range(rng.randint(0, 30)))
        values = {
            slot: "".join(rng.choice(VALUE_PIECES) for _ in range(rng.randint(0, 6)))
            for slot in SLOTS
        }
        body = encode_template(template).fill(values)

        # Line ends are read before the placeholders are filled in (a CR before an
        # empty value and an LF after it are two line ends, not one CRLF).
        lines = template.replace("\r\n", "\n").replace("\r", "\n")
        expected = personalise(
            lines,
            name=values[NAME],
            unsubscribe_url=values[UNSUBSCRIBE_URL],
            manage_url=values[MANAGE_URL],
            is_html=False,
        )
        assert decoded(body) == expected, template
        assert_well_formed(body)


def test_a_real_campaign_body_decodes_as_the_whole_body_encoded_at_once() -> None:
    template = (
        "Kære NLPH7f3aNAME,\n\nTak fordi du følger med. " + "Lang linje uden ende. " * 12
        + "\n\nAfmeld: NLPH7f3aUNSUBSCRIBE\nIndstillinger: NLPH7f3aMANAGE\n"
    )  # fmt: skip
    values = {
        NAME: "Søren Ærø",
        UNSUBSCRIBE_URL: "https://news.example/unsubscribe/" + "Ab-_." * 30,
        MANAGE_URL: "https://news.example/manage/" + "Cd-_." * 30,
    }
    whole = quoted_printable(
        personalise(
            template,
            name=values[NAME],
            unsubscribe_url=values[UNSUBSCRIBE_URL],
            manage_url=values[MANAGE_URL],
            is_html=False,
        )
    )

    body = encode_template(template).fill(values)

    assert decoded(body) == decoded(whole)
    assert_well_formed(body)


def test_a_value_is_encoded_on_its_own_and_a_placeholder_in_it_stays_as_written() -> None:
    encoded = EncodedBody.encode(["Hej ", "!"], [NAME])

    body = encoded.fill({NAME: f"{UNSUBSCRIBE_URL} = x"})

    assert decoded(body) == f"Hej {UNSUBSCRIBE_URL} = x!"
    assert encoded.parts[0] == b"Hej=20=\r\n"  # the space before a soft break is encoded


@pytest.mark.parametrize("length", range(70, 80))
@pytest.mark.parametrize("tail", [b"", b"=C3=A6", b"x=3D", b"=3Dx"])
def test_continued_never_makes_a_line_longer_than_76_or_splits_an_escape(
    length: int, tail: bytes
) -> None:
    chunk = b"y" * (length - len(tail)) + tail

    result = continued(b"first line\r\n" + chunk)

    assert result.endswith(b"=\r\n")
    lines = result.split(b"\r\n")
    assert all(len(line) <= 76 for line in lines)
    joined = b"".join(line[:-1] if line.endswith(b"=") else line for line in lines[1:])
    assert joined == chunk  # only soft breaks were added, none inside "=XX"
