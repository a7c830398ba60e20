"""Forms of the console's own pages (login, account, staff). Each carries a CSRF token."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from ..models import Role
from ..staff.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH


def _password_length() -> Length:
    """The password rule as a form validator (the service checks it again)."""
    return Length(
        min=MIN_PASSWORD_LENGTH,
        max=MAX_PASSWORD_LENGTH,
        message=_l("The password must be %(min)d to %(max)d characters long."),
    )


ROLE_CHOICES = [
    SelectChoice(Role.VIEWER.value, _l("Viewer: read only")),
    SelectChoice(Role.EDITOR.value, _l("Editor: campaigns, lists, subscribers")),
    SelectChoice(Role.OWNER.value, _l("Owner: everything, including staff and settings")),
]


class LoginForm(FlaskForm):
    """Step one: address and password."""

    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=320)])
    password = PasswordField(
        _l("Password"), validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)]
    )
    next = HiddenField()


class CodeForm(FlaskForm):
    """Step two, or enrolment: a six-digit code from the authenticator app."""

    code = StringField(_l("Six-digit code"), validators=[DataRequired(), Length(min=6, max=8)])


class TwoFactorOffForm(FlaskForm):
    """Turn one's own two-factor login off: the password again (the service
    says what is missing or wrong)."""

    password = PasswordField(_l("Current password"), validators=[Length(max=MAX_PASSWORD_LENGTH)])


class PasswordForm(FlaskForm):
    """Change one's own password."""

    current_password = PasswordField(
        _l("Current password"), validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)]
    )
    new_password = PasswordField(
        _l("New password"),
        validators=[DataRequired(), _password_length()],
    )
    repeat = PasswordField(
        _l("Repeat the new password"),
        validators=[DataRequired(), EqualTo("new_password", message=_l("The passwords differ."))],
    )


class StaffCreateForm(FlaskForm):
    """An owner creates an account; an empty password means "generate one"."""

    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=320)])
    name = StringField(_l("Name"), validators=[Optional(), Length(max=200)])
    role = SelectField(_l("Role"), choices=ROLE_CHOICES, default=Role.EDITOR.value)
    password = PasswordField(
        _l("Password (leave empty to generate one)"),
        validators=[Optional(), _password_length()],
    )


class StaffEditForm(FlaskForm):
    """An owner changes an account's name, role or status."""

    name = StringField(_l("Name"), validators=[Optional(), Length(max=200)])
    role = SelectField(_l("Role"), choices=ROLE_CHOICES)
    is_active = BooleanField(_l("Active (may log in)"))


class SettingsForm(FlaskForm):
    """Console-wide settings."""

    require_two_factor = BooleanField(_l("Require two-factor login for every account"))


class ConfirmForm(FlaskForm):
    """A bare POST button (logout, reset two-factor): only the CSRF token."""
