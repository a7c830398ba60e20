"""URL parameters: row ids in paths; page, cursor, date and text query arguments.

A URL is text anyone can write, and the obvious parsing has traps:

- ``str.isdigit()`` is True for "²" (``int()`` then raises) and for "١٢"
  (Arabic-Indic digits, which ``int()`` reads as 12): only ASCII digits count;
- every row id is an INTEGER column: PostgreSQL refuses a value above 2**31 - 1,
  SQLite one above 2**63 - 1, and ``int()`` refuses more than 4300 digits;
- ``datetime`` ends at 9999-12-31, so "the day after" the last date overflows;
- PostgreSQL text cannot hold NUL.

So an id in a path that breaks a rule matches no route (404), and a query
argument that breaks one is answered 400 with a translated sentence naming it.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, overload

from flask import request
from flask_babel import gettext as _
from werkzeug.exceptions import BadRequest
from werkzeug.routing import BaseConverter, ValidationError

from ..validation import CONTROL_CHARACTERS

ID_MAX = 2**31 - 1  # PostgreSQL's INTEGER, the type of every row id
NUMBER = re.compile(r"[0-9]{1,10}")  # ASCII only: [0-9] is not \d
ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
FIRST_DAY = date(1, 1, 1)
LAST_DAY = date(9999, 12, 30)  # its end, the next midnight, is still a datetime


class RowIdConverter(BaseConverter):
    """``<id:name>`` in a route: a row id from 1 to ID_MAX in ASCII digits, no leading zero.

    Anything else (a sign, another script's digits, a number too large for the
    column) matches no route, so the request is a 404 before any query is made.
    """

    regex = r"[1-9][0-9]{0,9}"
    weight = 50  # as Werkzeug's int converter

    def to_python(self, value: str) -> int:
        """The id, or no match when it is above ID_MAX."""
        number = int(value)
        if number > ID_MAX:
            raise ValidationError()
        return number

    def to_url(self, value: Any) -> str:
        """An id as URL text."""
        return str(int(value))


@overload
def query_number(name: str, maximum: int, default: int) -> int: ...
@overload
def query_number(name: str, maximum: int, default: None = None) -> int | None: ...
def query_number(name: str, maximum: int, default: int | None = None) -> int | None:
    """``?name=`` as a whole number from 1 to ``maximum`` in ASCII digits.

    Absent or empty gives ``default``; anything else is a 400.
    """
    raw = request.args.get(name, "")
    if raw == "":
        return default
    if not NUMBER.fullmatch(raw) or not 1 <= int(raw) <= maximum:
        raise BadRequest(
            _("%(name)s must be a whole number from 1 to %(max)s.", name=name, max=maximum)
        )
    return int(raw)


def query_day(name: str, *, end: bool = False) -> datetime | None:
    """``?name=YYYY-MM-DD`` as a timezone-aware UTC instant, or None when absent or empty.

    The instant is the day's first moment, or with ``end`` the next day's first
    moment (an exclusive end). Days from FIRST_DAY to LAST_DAY, in ASCII
    digits, are accepted; anything else is a 400.
    """
    raw = request.args.get(name, "").strip()
    if raw == "":
        return None
    try:
        day = date.fromisoformat(raw) if ISO_DAY.fullmatch(raw) else None
    except ValueError:
        day = None
    if day is None or not FIRST_DAY <= day <= LAST_DAY:
        raise BadRequest(
            _(
                "The date in %(name)s must be written YYYY-MM-DD, between %(first)s and %(last)s.",
                name=name,
                first=FIRST_DAY.isoformat(),
                last=LAST_DAY.isoformat(),
            )
        )
    start = datetime.combine(day, time(), UTC)
    return start + timedelta(days=1) if end else start


def query_text(name: str, max_length: int) -> str:
    """``?name=`` trimmed: at most ``max_length`` characters, no control characters
    (NUL, CR, LF ...); otherwise a 400."""
    raw = request.args.get(name, "")
    if CONTROL_CHARACTERS.search(raw):
        raise BadRequest(_("%(name)s contains control characters.", name=name))
    value = raw.strip()
    if len(value) > max_length:
        raise BadRequest(
            _("%(name)s is longer than %(max)s characters.", name=name, max=max_length)
        )
    return value
