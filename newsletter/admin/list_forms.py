"""Forms of the console's list pages. Each carries a CSRF token."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from ..subscriptions.lists import MAX_CONSENT_TEXT, MAX_DESCRIPTION, MAX_NAME
from ..validation import SLUG_PATTERN


class ListEditForm(FlaskForm):
    """Name, description, default flag and the consent text of a list."""

    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=MAX_NAME)])
    description = TextAreaField(
        _l("Description"), validators=[Optional(), Length(max=MAX_DESCRIPTION)]
    )
    is_default = BooleanField(_l("Default list (preselected on the signup form)"))
    consent_text = TextAreaField(
        _l("Consent text"), validators=[DataRequired(), Length(max=MAX_CONSENT_TEXT)]
    )


class ListCreateForm(ListEditForm):
    """A new list also needs its slug, which never changes (it is in List-Id and URLs)."""

    slug = StringField(
        _l("Short name (slug)"),
        validators=[
            DataRequired(),
            Length(max=64),
            Regexp(SLUG_PATTERN, message=_l("Use lower-case letters, digits and hyphens.")),
        ],
    )
