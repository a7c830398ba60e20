"""Column mapping: which CSV column holds the address, the name and the evidence.

A mapping is stored on the job as ``{"0": "email", "1": "name", "2": None}``:
column position (as a string, JSON keys are strings) to field. Positions, not
headings, because a file may repeat a heading or leave one empty.
"""

from __future__ import annotations

import re
from typing import Any

from ..service_messages import page_gettext as _
from ..validation import InvalidInput

FIELDS = ("email", "name", "consented_at", "source")
REQUIRED = ("email",)

# Headings (lower-case, letters and digits only) each field is guessed from:
# English and Danish, as exported by common tools.
_SYNONYMS = {
    "email": {
        "email",
        "emailaddress",
        "mail",
        "mailaddress",
        "emailadresse",
        "mailadresse",
        "epost",
        "eposta",
    },
    "name": {"name", "fullname", "navn", "fuldenavn", "fuldtnavn", "displayname", "firstname"},
    "consented_at": {
        "consentedat",
        "consented",
        "consentdate",
        "consenttime",
        "consent",
        "optin",
        "optinat",
        "optindate",
        "optintime",
        "subscribedat",
        "signedupat",
        "samtykke",
        "samtykketidspunkt",
        "samtykkedato",
        "tilmeldt",
        "tilmeldingsdato",
    },
    "source": {
        "source",
        "consentsource",
        "signupsource",
        "origin",
        "kilde",
        "samtykkekilde",
        "tilmeldingskilde",
    },
}


def _normalise_heading(heading: str) -> str:
    return re.sub(r"[^0-9a-zæøå]", "", heading.casefold())


def guess_mapping(header: list[str]) -> dict[str, str | None]:
    """A first mapping from the headings: each field to at most one column."""
    mapping: dict[str, str | None] = {str(i): None for i in range(len(header))}
    taken: set[str] = set()
    for position, heading in enumerate(header):
        key = _normalise_heading(heading)
        for field in FIELDS:
            if field not in taken and key in _SYNONYMS[field]:
                mapping[str(position)] = field
                taken.add(field)
                break
    return mapping


def columns_of(mapping: dict[str, Any]) -> dict[str, int]:
    """The inverse: field -> column position, for the fields that are mapped."""
    return {str(field): int(position) for position, field in mapping.items() if field}


def build_mapping(choices: dict[str, str], columns: int) -> dict[str, str | None]:
    """A mapping from a form's choices (field -> column position or "").

    Raises InvalidInput naming the field when a required field is missing, a
    position is out of range, or two fields share one column.
    """
    mapping: dict[str, str | None] = {str(i): None for i in range(columns)}
    for field in FIELDS:
        raw = (choices.get(field) or "").strip()
        if not raw:
            if field in REQUIRED:
                raise InvalidInput(field, _("Choose the column that holds the e-mail address."))
            continue
        if not raw.isdigit() or int(raw) >= columns:
            raise InvalidInput(field, _("Choose one of the file's columns."))
        if mapping[raw] is not None:
            raise InvalidInput(
                field, _("That column is already used for %(field)s.", field=mapping[raw])
            )
        mapping[raw] = field
    return mapping


def check_mapping(mapping: dict[str, Any] | None, columns: int) -> dict[str, int]:
    """Validate a stored mapping; return field -> position."""
    if not mapping:
        raise InvalidInput("email", _("The column mapping is missing."))
    fields = columns_of(mapping)
    if "email" not in fields:
        raise InvalidInput("email", _("Choose the column that holds the e-mail address."))
    for field, position in fields.items():
        if field not in FIELDS or not 0 <= position < columns:
            raise InvalidInput(field, _("The column mapping does not fit the file."))
    if len(set(fields.values())) != len(fields):
        raise InvalidInput("email", _("Two fields share one column."))
    return fields
