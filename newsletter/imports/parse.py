"""Reading an uploaded CSV file: encoding, delimiter, header and records.

Only UTF-8 is accepted (with or without a byte-order mark): it is what every
spreadsheet offers as "CSV UTF-8", and guessing between legacy code pages
(cp1252, latin-1 ...) silently garbles "ø" and "å" in names. Anything else is
refused with a message that says how to save the file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from flask_babel import lazy_gettext as _l

from ..service_messages import N_
from ..service_messages import page_gettext as _

# The largest file the console and the command accept. At 60-100 bytes a row
# this is 200,000-350,000 rows, and it bounds the memory one import needs.
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_COLUMNS = 50
MAX_HEADER_LENGTH = 200
# Python's csv refuses fields longer than its field_size_limit (128 KiB); every
# field we use is far shorter and is checked per row (validate.py).
DELIMITERS = (",", ";", "\t")
# Named on the mapping page, in its language.
DELIMITER_NAMES = {",": _l("comma"), ";": _l("semicolon"), "\t": _l("tab")}


class FileProblem(ValueError):
    """The file as a whole cannot be read; the message says why and what to do."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class Table:
    """A decoded CSV file: its delimiter, header, and text to read records from."""

    text: str
    delimiter: str
    header: list[str]


def decode(data: bytes) -> str:
    """The file's text if it is UTF-8 (a BOM is dropped); FileProblem otherwise."""
    if len(data) > MAX_FILE_BYTES:
        raise FileProblem(
            _("The file is larger than %(mb)s MB.", mb=MAX_FILE_BYTES // (1024 * 1024))
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FileProblem(
            _("The file is UTF-16. Save it as \u201cCSV UTF-8\u201d and upload it again.")
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FileProblem(
            _(
                "The file is not UTF-8 (it may be Windows-1252 or Latin-1). "
                "Save it as \u201cCSV UTF-8\u201d and upload it again."
            ),
            line=line,
        ) from exc
    if not text.strip():
        raise FileProblem(_("The file is empty."))
    return text


def sniff_delimiter(text: str) -> str:
    """Comma, semicolon or tab: the one that splits the header line into most columns.

    csv.Sniffer guesses from the whole sample and is easily fooled by commas
    inside names; a header line is short and plain, so counting there (outside
    quotes) is predictable. Ties and a one-column header fall back to comma.
    """
    first_line = text.split("\n", 1)[0]
    unquoted = "".join(part for i, part in enumerate(first_line.split('"')) if i % 2 == 0)
    counts = {delimiter: unquoted.count(delimiter) for delimiter in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def read_table(text: str) -> Table:
    """Decode the header and check the file's shape (not its rows)."""
    delimiter = sniff_delimiter(text)
    records = iter_records(text, delimiter)
    first = next(records, None)
    if first is None:
        raise FileProblem(_("The file is empty."))
    _line, header = first
    header = [cell.strip() for cell in header]
    if len(header) > MAX_COLUMNS:
        raise FileProblem(_("The file has more than %(max)s columns.", max=MAX_COLUMNS), line=1)
    if any(len(cell) > MAX_HEADER_LENGTH for cell in header):
        raise FileProblem(_("A column heading is too long: is the first line a header?"), line=1)
    return Table(text=text, delimiter=delimiter, header=header)


def iter_records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Every record with the line it starts on (line 1 is the header).

    Blank lines are skipped. A quoted field may span lines, so the line of a
    record is where it starts, not ``reader.line_num`` (where it ends).
    Malformed quoting stops the reading with a FileProblem naming the line.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    previous_end = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise FileProblem(_(_csv_problem(exc)), previous_end + 1) from exc
        start, previous_end = previous_end + 1, reader.line_num
        if cells and any(cell.strip() for cell in cells):
            yield start, cells


# csv's own reasons are English and technical; each kind it has gets a sentence
# of ours, fixed (no values in it), so that a message stored by the worker is
# shown in the reader's language too.
CSV_QUOTING = N_(
    "The file cannot be read as CSV: a quoted field is not closed, or a quotation mark inside"
    " one is not doubled."
)
CSV_FIELD_TOO_LONG = N_(
    "The file cannot be read as CSV: a field is longer than 131,072 characters."
)
CSV_UNREADABLE = N_("The file cannot be read as CSV.")


def _csv_problem(exc: csv.Error) -> str:
    """Which of our sentences says what ``exc`` means."""
    reason = str(exc)
    if "expected after" in reason or "unexpected end of data" in reason:
        return CSV_QUOTING
    if "field larger than field limit" in reason:
        return CSV_FIELD_TOO_LONG
    return CSV_UNREADABLE


def data_records(table: Table) -> Iterator[tuple[int, list[str]]]:
    """The records after the header."""
    return islice(iter_records(table.text, table.delimiter), 1, None)


def preview(table: Table, rows: int = 10) -> list[tuple[int, list[str]]]:
    """The first data records, for the mapping page."""
    return list(islice(data_records(table), rows))


def count_records(table: Table) -> int:
    """How many data records the file has (reads it all once)."""
    return sum(1 for _record in data_records(table))
