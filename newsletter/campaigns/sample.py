"""A campaign as one recipient would get it, for someone who is not one: the
console's preview and the test mail to a staff member."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_babel import get_locale

from ..extensions import db
from ..mail.message import OutgoingMail, compose_mail
from ..mail.render import NothingToSend
from ..models import Campaign, MailingList, StaffUser
from ..urls import external_url, mail_domain
from .compose import layout_locale, personalise, stored_rendering
from .service import render_in_mail_language


def neutral_link(mailing_list: MailingList) -> str:
    """Where the personal links point in previews, test mails and the archive: the
    list's public signup page. It is harmless to open, and no token is made for
    someone who is not a subscriber."""
    return external_url("public.subscribe_form", list=mailing_list.slug)


def campaign_sample(
    campaign: Campaign, *, name: str, link: str, locale: str | None = None
) -> tuple[str, str]:
    """A campaign's HTML and text exactly as a recipient who reads ``locale``
    gets them, with ``name`` and ``link`` in place of the personal parts
    (previews and test mails).

    ``locale`` defaults to the current language: in the console, the staff
    member's; elsewhere the default. Once sending has started this is the
    frozen rendering that was sent to readers of that language (the main one
    when none of the recipients read it).
    """
    code = layout_locale(locale or str(get_locale() or ""))
    if campaign.rendered_html is not None:
        html, text = stored_rendering(campaign, code)
    else:
        rendered = render_in_mail_language(campaign, code)
        html, text = rendered.html, rendered.text
    values = {"name": name, "unsubscribe_url": link, "manage_url": link}
    return personalise(html, is_html=True, **values), personalise(text, is_html=False, **values)


def campaign_test_mail(staff: StaffUser, payload: dict[str, Any]) -> OutgoingMail:
    """A campaign's test mail to the staff member who asked for it.

    The content is the campaign's, rendered now (a draft may have changed since
    the test was asked for), greeting the staff member by name. Its layout is in
    the language of the console the test was asked from (the payload's
    ``locale``, as the preview shows it), else the default language. The subject is
    prefixed "[Test]". It carries no List-Unsubscribe, List-Unsubscribe-Post or
    List-Id: the staff member is not on the list, so a one-click header would
    offer an unsubscribe that cannot do anything, and filters keyed on List-Id
    would file the test with the real issues. The unsubscribe and preference
    links in the body lead to the list's public signup page instead.
    """
    campaign = db.session.get(Campaign, int(payload.get("campaign", 0)))
    if campaign is None:
        raise NothingToSend("campaign deleted")
    html, text = campaign_sample(
        campaign,
        name=staff.name,
        link=neutral_link(campaign.mailing_list),
        locale=_configured(payload.get("locale")),
    )
    return compose_mail(
        sender=campaign.sender,
        to_address=staff.email,
        to_name=staff.name,
        subject=f"[Test] {campaign.subject}",
        text=text,
        html=html,
        domain=mail_domain(),
    )


def _configured(locale: object) -> str:
    """``locale`` when it is one of LANGUAGES, else the default language."""
    if isinstance(locale, str) and locale in current_app.config["LANGUAGES"]:
        return locale
    return str(current_app.config["BABEL_DEFAULT_LOCALE"])
