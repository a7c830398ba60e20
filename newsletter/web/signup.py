"""GET/POST /subscribe: the hosted form and the static site's cross-origin POST."""

from __future__ import annotations

import logging

from flask import abort, current_app, redirect, render_template, request
from flask.typing import ResponseReturnValue
from flask_babel import get_locale

from ..extensions import limiter
from ..ledger import evidence_from_request
from ..models import Channel
from ..subscriptions.intake import SignupRequest, accept_signup, signal_arrival
from ..subscriptions.lists import open_lists
from ..validation import InvalidInput
from .forms import SignupForm
from .origin import origin_allowed, safe_next
from .public import bp

log = logging.getLogger(__name__)


def signup_rate_limit() -> str:
    """The per-client limit on public signups (SIGNUP_RATE_LIMIT)."""
    return str(current_app.config["SIGNUP_RATE_LIMIT"])


def _form(form: SignupForm | None = None) -> SignupForm:
    """A signup form whose list choices are the open lists."""
    form = form or SignupForm()
    form.list.choices = [(m.slug, m.name) for m in open_lists()]
    return form


@bp.get("/subscribe")
def subscribe_form() -> ResponseReturnValue:
    """The hosted signup form; ``?list=SLUG`` preselects a list."""
    form = _form(SignupForm(request.args))
    if not form.list.data and form.list.choices:
        form.list.data = [form.list.choices[0][0]]
    return render_template("public/subscribe.html", form=form)


@bp.post("/subscribe")
@limiter.limit(signup_rate_limit)
def subscribe() -> ResponseReturnValue:
    """Accept a signup. The answer is the same whether the address was known or not."""
    if not origin_allowed():
        abort(403, description="This form may only be sent from this site or an allowed site.")
    # The list choices are loaded only to show the form again: the service
    # checks the slugs against the open lists it keeps (subscriptions/terms.py).
    form = SignupForm(request.form)
    if form.website.data:
        log.info("signup honeypot filled; ignored")
        return _accepted(form)
    if not form.validate():
        return render_template("public/subscribe.html", form=_form(form)), 400
    try:
        accept_signup(
            SignupRequest(
                email=form.email.data or "",
                name=form.name.data,
                list_slugs=list(form.list.data or []),
                # The language of the page the visitor signed up on (the switch's
                # ?lang=, else Accept-Language): their mails come in it.
                locale=str(get_locale()),
                channel=Channel.FORM,
                evidence=evidence_from_request(request),
            )
        )
    except InvalidInput as exc:
        field = getattr(form, exc.field, form.email)
        field.errors = [*field.errors, exc.message]
        return render_template("public/subscribe.html", form=_form(form)), 400
    signal_arrival()
    return _accepted(form)


def _accepted(form: SignupForm) -> ResponseReturnValue:
    """Back to the static site's thank-you page, or our own."""
    target = safe_next(form.next.data)
    if target:
        return redirect(target, code=303)
    return _thanks_page()


# The thank-you page is the same for every signup: it depends only on the
# language and the query string (the language switch's links). Rendering it
# costs a signup about a fifth of its time, so each process keeps the few
# versions it is asked for.
_THANKS = "newsletter.thanks_pages"
_THANKS_KEPT = 16


def _thanks_page() -> str:
    """The rendered thank-you page for this request's language and query string."""
    pages: dict[tuple[str, bytes], str] = current_app.extensions.setdefault(_THANKS, {})
    key = (str(get_locale()), request.query_string)
    page = pages.get(key)
    if page is None:
        page = render_template("public/thanks.html")
        if len(pages) < _THANKS_KEPT:
            pages[key] = page
    return page
