"""The public archive of campaigns marked public: /archive, web views, Atom feed.

Only campaigns that were sent (sending or done) and are marked public appear.
The web view carries no personal data: it is the campaign's Markdown rendered
through the same sanitiser as the mail, with ``{{ name }}`` left empty (as for
a subscriber without a name), and without the mail's footer, whose links are
personal; the page offers the list's signup page instead. Like every public
page, these set no cookie and load nothing from another origin.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from xml.etree import ElementTree as ET

from flask import Blueprint, Response, abort, current_app, render_template, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import Select, select
from sqlalchemy.orm import joinedload

from ..campaigns.compose import NAME_TAG, markdown_to_safe_html
from ..extensions import db
from ..models import Campaign, CampaignStatus, utcnow
from ..urls import base_url
from .params import query_number

bp = Blueprint("archive", __name__)

SENT = (CampaignStatus.SENDING, CampaignStatus.DONE)
PAGE_SIZE = 30
MAX_PAGE = 1000
FEED_ENTRIES = 50
ATOM = "http://www.w3.org/2005/Atom"


def _public() -> Select[Campaign]:
    """Public, sent campaigns, newest first."""
    return (
        select(Campaign)
        .options(joinedload(Campaign.mailing_list))
        .where(
            Campaign.is_public.is_(True),
            Campaign.status.in_(SENT),
            Campaign.started_at.is_not(None),
        )
        .order_by(Campaign.started_at.desc(), Campaign.id.desc())
    )


def public_html(campaign: Campaign) -> str:
    """The campaign's body as sanitised HTML with no personal part in it."""
    return markdown_to_safe_html(NAME_TAG.sub("", campaign.body_markdown))


@bp.get("/archive")
def index() -> ResponseReturnValue:
    """Every public campaign that was sent, newest first, a page at a time."""
    page = query_number("page", MAX_PAGE, default=1)
    rows = db.session.scalars(_public().offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)).all()
    return render_template(
        "public/archive.html",
        campaigns=rows[:PAGE_SIZE],
        page=page,
        has_next=len(rows) > PAGE_SIZE and page < MAX_PAGE,
    )


@bp.get("/archive/<id:campaign_id>")
def issue(campaign_id: int) -> ResponseReturnValue:
    """One campaign's web view; 404 unless it is public and was sent."""
    campaign = db.session.scalar(_public().where(Campaign.id == campaign_id)) or abort(404)
    return render_template(
        "public/archive_issue.html", campaign=campaign, body=public_html(campaign)
    )


def _stamp(moment: datetime) -> str:
    """An RFC 3339 time in UTC, as Atom wants it."""
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _url(endpoint: str, **values: Any) -> str:
    """An absolute URL on BASE_URL (the public origin, also behind a proxy)."""
    return base_url() + url_for(endpoint, **values)


@bp.get("/archive/feed.atom")
def feed() -> ResponseReturnValue:
    """An Atom 1.0 feed of the newest public campaigns, content as HTML."""
    campaigns = db.session.scalars(_public().limit(FEED_ENTRIES)).all()
    organization = str(current_app.config["ORGANIZATION_NAME"])
    root = ET.Element("feed", xmlns=ATOM)
    ET.SubElement(root, "id").text = _url("archive.index")
    ET.SubElement(root, "title").text = f"{organization}: newsletter archive"
    newest = max((_updated(c) for c in campaigns), default=utcnow())
    ET.SubElement(root, "updated").text = _stamp(newest)
    ET.SubElement(root, "link", rel="self", type="application/atom+xml", href=_url("archive.feed"))
    ET.SubElement(root, "link", rel="alternate", type="text/html", href=_url("archive.index"))
    ET.SubElement(ET.SubElement(root, "author"), "name").text = organization
    for campaign in campaigns:
        entry = ET.SubElement(root, "entry")
        link = _url("archive.issue", campaign_id=campaign.id)
        ET.SubElement(entry, "id").text = link
        ET.SubElement(entry, "title").text = campaign.subject
        ET.SubElement(entry, "link", rel="alternate", type="text/html", href=link)
        assert campaign.started_at is not None  # guaranteed by _public()
        ET.SubElement(entry, "published").text = _stamp(campaign.started_at)
        ET.SubElement(entry, "updated").text = _stamp(_updated(campaign))
        ET.SubElement(entry, "content", type="html").text = public_html(campaign)
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return Response(body, content_type="application/atom+xml; charset=utf-8")


def _updated(campaign: Campaign) -> datetime:
    """When a campaign's entry last changed: when it finished sending, or started."""
    moment = campaign.finished_at or campaign.started_at
    assert moment is not None
    return moment
