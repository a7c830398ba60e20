"""Forms of the console's campaign pages. Each carries a CSRF token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, SelectField, StringField, TextAreaField, ValidationError
from wtforms.validators import DataRequired, Length, Optional

from ..campaigns.service import MAX_BODY, MAX_SENDER, MAX_SUBJECT
from ..models import utcnow

# The furthest ahead a campaign can be scheduled: a typo in the year should
# not park a campaign for a decade.
MAX_SCHEDULE_AHEAD = timedelta(days=366)


class CampaignForm(FlaskForm):
    """List, subject, sender and the Markdown body of a draft."""

    list_slug = SelectField(_l("List"), validators=[DataRequired()])
    subject = StringField(_l("Subject"), validators=[DataRequired(), Length(max=MAX_SUBJECT)])
    sender = StringField(_l("Sender"), validators=[DataRequired(), Length(max=MAX_SENDER)])
    body = TextAreaField(_l("Body (Markdown)"), validators=[DataRequired(), Length(max=MAX_BODY)])


class PreviewForm(CampaignForm):
    """The same fields while typing: a half-written draft still has a preview."""

    subject = StringField(_l("Subject"), validators=[Optional(), Length(max=MAX_SUBJECT)])
    sender = StringField(_l("Sender"), validators=[Optional(), Length(max=MAX_SENDER)])
    body = TextAreaField(_l("Body (Markdown)"), validators=[Optional(), Length(max=MAX_BODY)])


class ScheduleForm(FlaskForm):
    """A start time in UTC; empty means "now"."""

    at = DateTimeLocalField(
        _l("Send at (UTC)"), format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"], validators=[Optional()]
    )

    def validate_at(self, field: DateTimeLocalField) -> None:
        """A schedule lies in the future, and not too far in it.

        A time that has passed is refused rather than taken as "now": it is
        most likely a local time typed where UTC was asked for.
        """
        if field.data is None:
            return
        at = field.data.replace(tzinfo=UTC)
        now = utcnow()
        if at <= now:
            raise ValidationError(
                _l("That time has passed: it is %(now)s UTC now.", now=now.strftime("%H:%M"))
            )
        if at - now > MAX_SCHEDULE_AHEAD:
            raise ValidationError(_l("Schedule at most a year ahead."))

    def when(self) -> datetime | None:
        """The validated time as an aware UTC datetime, or None for "now"."""
        return self.at.data.replace(tzinfo=UTC) if self.at.data else None
