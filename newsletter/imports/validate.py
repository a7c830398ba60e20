"""Checking every row before anything is written: the file imports whole or not at all.

What a row must satisfy:
- ``email``: a valid address (the signup form's rules), at most once in the file.
- ``name``: optional, at most 200 characters.
- ``consented_at``: optional; ISO 8601 as ``datetime.fromisoformat`` reads it,
  e.g. ``2024-03-01``, ``2024-03-01 14:05``, ``2024-03-01T14:05:09Z`` or
  ``2024-03-01T14:05:09+01:00``. A date alone means midnight UTC; a time without
  an offset is taken as UTC. A time more than a day in the future is refused.
- ``source``: optional, at most 200 characters (where and how consent was given);
  a link in it is stored as its page only (``ledger.evidence.pages_in``).
- No mapped cell may hold CR, LF, NUL or another control character, and a row
  may not have more cells than the header (a sign of a wrong delimiter).
A row has consent evidence when it has both ``consented_at`` and ``source``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..ledger.evidence import pages_in
from ..service_messages import N_, in_page_language
from ..validation import CONTROL_CHARACTERS, InvalidInput, clean_name, normalise_email

MAX_SOURCE = 200
MAX_CONSENTED_AT = 40
# Errors kept for display; the count goes on beyond it.
MAX_ERRORS = 500
FUTURE_TOLERANCE = timedelta(days=1)
PROGRESS_EVERY = 2000

# A job's errors are stored on it in English (the worker finds most of them) and
# shown in the language of the page that lists them (shown_errors).
TOO_MANY_CELLS = N_("%(cells)s cells, but the header has %(columns)s.")
CONTROL_IN_CELL = N_("Contains a line break, NUL or other control character.")
TOO_LONG = N_("Longer than %(max)s characters.")
NOT_A_DATE = N_(
    "Not an ISO 8601 date or time (%(value)s); write e.g. 2024-03-01 or 2024-03-01T14:05:00+01:00."
)
IN_THE_FUTURE = N_("Lies in the future.")
SAME_ADDRESS = N_("The same address as line %(line)s.")
MORE_ERRORS = N_("... and %(n)s more errors.")
INTERNAL_ERROR = N_("Internal error: %(name)s")
# The stored messages with values in them, to find their msgid again.
TEMPLATES = (TOO_MANY_CELLS, TOO_LONG, NOT_A_DATE, SAME_ADDRESS, MORE_ERRORS, INTERNAL_ERROR)


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One valid row, normalised."""

    line: int
    email: str
    email_key: str
    name: str
    consented_at: datetime | None
    source: str

    @property
    def has_evidence(self) -> bool:
        """Both halves of the evidence: when consent was given, and where."""
        return self.consented_at is not None and bool(self.source)


@dataclass(frozen=True, slots=True)
class RowError:
    """What is wrong, on which line (None: the file as a whole) and in which field."""

    line: int | None
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        """The form stored in ImportJob.errors."""
        return {"line": self.line, "field": self.field, "message": self.message}


def shown_errors(stored: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A job's stored errors, each message in the language of the page showing them."""
    return [
        {**error, "message": in_page_language(str(error.get("message", "")), TEMPLATES)}
        for error in stored or []
    ]


@dataclass
class Validation:
    """The valid rows, and the errors (at most MAX_ERRORS kept, all counted)."""

    rows: list[ImportRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0

    def add_error(self, error: RowError) -> None:
        """Count an error and keep it if there is room."""
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(error)

    @property
    def ok(self) -> bool:
        """True when no row has an error."""
        return self.error_count == 0


def validate_rows(
    records: Iterable[tuple[int, list[str]]],
    columns: dict[str, int],
    header_width: int,
    *,
    now: datetime,
    on_progress: Callable[[int], None] | None = None,
) -> Validation:
    """Check every record; valid rows are kept only while no error has been seen."""
    result = Validation()
    first_line_of: dict[str, int] = {}
    seen = 0
    for line, cells in records:
        seen += 1
        if on_progress is not None and seen % PROGRESS_EVERY == 0:
            on_progress(seen)
        if len(cells) > header_width:
            counts = {"cells": len(cells), "columns": header_width}
            result.add_error(RowError(line, "row", TOO_MANY_CELLS % counts))
            continue
        try:
            row = _check_row(line, cells, columns, now)
        except InvalidInput as exc:
            result.add_error(RowError(line, exc.field, exc.message))
            continue
        earlier = first_line_of.setdefault(row.email_key, line)
        if earlier != line:
            result.add_error(RowError(line, "email", SAME_ADDRESS % {"line": earlier}))
            continue
        if result.ok:
            result.rows.append(row)
    if on_progress is not None:
        on_progress(seen)
    if not result.ok:
        result.rows.clear()  # nothing from a file with errors is ever imported
    return result


def _check_row(line: int, cells: list[str], columns: dict[str, int], now: datetime) -> ImportRow:
    """One row's fields, or InvalidInput naming the first bad one."""
    values = {name: cells[pos] if pos < len(cells) else "" for name, pos in columns.items()}
    for name, value in values.items():
        if CONTROL_CHARACTERS.search(value):
            raise InvalidInput(name, CONTROL_IN_CELL)
    email, email_key = normalise_email(values["email"])
    name = clean_name(values.get("name"))
    source = " ".join(values.get("source", "").split())
    if len(source) > MAX_SOURCE:
        raise InvalidInput("source", TOO_LONG % {"max": MAX_SOURCE})
    # The source is hashed into the ledger for good: a link in it keeps its page only.
    source = pages_in(source)[:MAX_SOURCE]
    consented_at = parse_consented_at(values.get("consented_at", ""), now)
    return ImportRow(line, email, email_key, name, consented_at, source)


def parse_consented_at(raw: str, now: datetime) -> datetime | None:
    """An ISO 8601 date or date-time as aware UTC; None when empty (see module docstring)."""
    value = raw.strip()
    if not value:
        return None
    if len(value) > MAX_CONSENTED_AT:
        raise InvalidInput("consented_at", TOO_LONG % {"max": MAX_CONSENTED_AT})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput("consented_at", NOT_A_DATE % {"value": repr(value)}) from exc
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if parsed > now + FUTURE_TOLERANCE:
        raise InvalidInput("consented_at", IN_THE_FUTURE)
    return parsed
