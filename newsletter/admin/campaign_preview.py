"""The live preview: a campaign exactly as recipients see it, HTML and text.

The HTML is served as its own document for a sandboxed iframe on the compose
page. It keeps the mail's inlined styles, so it gets its own CSP: no script,
no plugin, no form, nothing from another origin, styles only inline, framing
by our own pages only (the console's pages may not be framed at all).
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlsplit

from flask import Response, jsonify, make_response, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from ..extensions import db
from ..models import Campaign, MailingList, Role
from ..urls import base_url
from . import bp
from .access import requires
from .campaign_forms import PreviewForm
from .campaigns import loaded, staff_sample


def preview_csp() -> str:
    """The preview document's policy: images from our own origins, inline styles."""
    parts = urlsplit(base_url())
    own = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
    return (
        f"default-src 'none'; img-src 'self' {own}; style-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox"
    ).replace("  ", " ")


def html_document(markup: str, status: int = 200) -> Response:
    """A preview document with its own framing rules, never cached."""
    response = make_response(markup, status)
    response.headers["Content-Security-Policy"] = preview_csp()
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/campaigns/<id:campaign_id>/preview")
@requires(Role.VIEWER)
def campaign_preview(campaign_id: int) -> ResponseReturnValue:
    """The saved campaign's HTML (once sending started: exactly what was sent)."""
    return html_document(staff_sample(loaded(campaign_id))[0])


@bp.route("/campaigns/preview", methods=["POST"])
@requires(Role.EDITOR)
def campaign_preview_draft() -> ResponseReturnValue:
    """Preview the posted, unsaved draft: ``?part=html`` (a document for the
    iframe) or ``?part=text`` (JSON for the script). Nothing is stored."""
    part = "text" if request.args.get("part") == "text" else "html"
    form = PreviewForm()
    lists = db.session.scalars(select(MailingList).order_by(MailingList.id)).all()
    form.list_slug.choices = [(m.slug, m.name) for m in lists]
    if not form.validate():
        message = " ".join(
            f"{form[name].label.text}: {' '.join(errors)}" for name, errors in form.errors.items()
        )
        if part == "text":
            return jsonify(error=message), 400
        return html_document(f"<!doctype html><title>-</title><p>{escape(message)}</p>", 400)
    mailing_list = next(m for m in lists if m.slug == form.list_slug.data)
    # A transient object: it is never added to the session, so never saved.
    draft = Campaign(
        subject=form.subject.data or "",
        sender=form.sender.data or "",
        body_markdown=(form.body.data or "").replace("\r\n", "\n"),
        mailing_list=mailing_list,
    )
    html, text = staff_sample(draft)
    if part == "text":
        response = jsonify(text=text, subject=draft.subject)
        response.headers["Cache-Control"] = "no-store"
        return response
    return html_document(html)
