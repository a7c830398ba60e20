"""The ledger's canonical JSON is byte for byte what the rfc8785 package writes."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.ledger.jcs import canonical

# Everything JSON can hold, and then some: non-ASCII and astral keys (sorted by
# UTF-16 in RFC 8785), lone surrogates, floats, integers past 2**53.
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def outcome(encode: Any, value: Any) -> Any:
    """What an encoder makes of a value: its bytes, or the kind of error."""
    try:
        return encode(value)
    except Exception as exc:
        return type(exc).__name__


@settings(max_examples=400)
@given(VALUES)
def test_canonical_equals_the_rfc8785_package(value: Any) -> None:
    assert outcome(canonical, value) == outcome(rfc8785.dumps, value)


@pytest.mark.parametrize(
    "value",
    [
        {"\U0001f600": 1, "\ufb01": 2, "a": 3},  # UTF-16 order differs from code points
        {"n": 2**53},
        {"n": 1.5},
        {"s": "\ud800"},
        {"s": '\x00\x1f\x7f\u2028"\\/'},
    ],
)
def test_the_values_the_plain_encoder_leaves_to_rfc8785(value: Any) -> None:
    assert outcome(canonical, value) == outcome(rfc8785.dumps, value)
