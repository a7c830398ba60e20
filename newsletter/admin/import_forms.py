"""Forms of the import pages: the upload, and the column mapping. Each carries a CSRF token."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import SelectField

from ..imports.mapping import FIELDS

FIELD_LABELS = {
    "email": _l("E-mail address (required)"),
    "name": _l("Name"),
    "consented_at": _l("Consent given at (date or time)"),
    "source": _l("Consent source (where and how)"),
}


class UploadForm(FlaskForm):
    """A CSV file and the list to import it into."""

    file = FileField(_l("CSV file (UTF-8)"), validators=[FileRequired()])
    list_id = SelectField(_l("Import into list"), coerce=int, choices=[])


class MappingForm(FlaskForm):
    """For each field, the column that holds it ("" = not in the file).

    The choices are checked by ``imports.mapping.build_mapping`` (a missing
    optional field means "not in the file"), not by WTForms.
    """

    email = SelectField(FIELD_LABELS["email"], choices=[], validate_choice=False)
    name = SelectField(FIELD_LABELS["name"], choices=[], validate_choice=False)
    consented_at = SelectField(FIELD_LABELS["consented_at"], choices=[], validate_choice=False)
    source = SelectField(FIELD_LABELS["source"], choices=[], validate_choice=False)

    def set_columns(self, header: list[str]) -> None:
        """Offer the file's columns (by position) in every select."""
        choices = [("", str(_l("(not in the file)")))] + [
            (str(i), f"{i + 1}: {heading or _l('(no heading)')}")
            for i, heading in enumerate(header)
        ]
        for name in FIELDS:
            getattr(self, name).choices = choices

    def choices(self) -> dict[str, str]:
        """Field -> chosen column position (or "")."""
        return {name: str(getattr(self, name).data or "") for name in FIELDS}
