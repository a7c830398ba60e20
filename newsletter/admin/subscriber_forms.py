"""Forms of the subscriber pages. Each carries a CSRF token."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, SelectField
from wtforms.validators import DataRequired, Length, Optional

ALL_LISTS = "all"


class UnsubscribeForm(FlaskForm):
    """Withdraw consent for one list or all of them (the choices are the person's lists)."""

    list = SelectField(_l("From which list"), choices=[], validators=[DataRequired()])


class EraseForm(FlaskForm):
    """The confirm step of erasure: nothing happens without the box ticked."""

    confirm = BooleanField(
        _l("I understand that this erases the person's data for good and cannot be undone."),
        validators=[DataRequired(message=_l("Tick the box to confirm."))],
    )


class ExportForm(FlaskForm):
    """The export button: the filters of the page it sits on, as hidden fields."""

    q = HiddenField(validators=[Optional(), Length(max=254)])
    list = HiddenField(validators=[Optional(), Length(max=64)])
    status = HiddenField(validators=[Optional(), Length(max=16)])
