"""Public forms. No CSRF field: public pages set no cookie (see origin.py)."""

from __future__ import annotations

from wtforms import Form, HiddenField, SelectMultipleField, StringField
from wtforms.validators import InputRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget

from ..validation import MAX_EMAIL, MAX_NAME


class SignupForm(Form):
    """The hosted signup form, also what the static site's plain form posts."""

    email = StringField(
        "E-mail address",
        validators=[InputRequired("Enter your e-mail address."), Length(max=MAX_EMAIL)],
        render_kw={"autocomplete": "email", "type": "email", "maxlength": MAX_EMAIL},
    )
    name = StringField(
        "Name (optional)",
        validators=[Length(max=MAX_NAME)],
        render_kw={"autocomplete": "name", "maxlength": MAX_NAME},
    )
    list = SelectMultipleField(
        "Lists",
        choices=[],
        validate_choice=False,  # the service checks slugs against open lists
        option_widget=CheckboxInput(),
        widget=ListWidget(prefix_label=False),
    )
    # Honeypot: hidden from people by CSS and aria-hidden; bots fill it in.
    website = StringField("Leave this field empty", render_kw={"autocomplete": "off"})
    # No validators: a return URL that is too long or not allowed is ignored
    # (see origin.safe_next) rather than failing a signup over a hidden field.
    next = HiddenField()


class ManageForm(Form):
    """The preference page."""

    lists = SelectMultipleField(
        "Lists",
        choices=[],
        coerce=int,
        validate_choice=False,
        option_widget=CheckboxInput(),
        widget=ListWidget(prefix_label=False),
    )
    locale = StringField("Language")
    action = HiddenField()
