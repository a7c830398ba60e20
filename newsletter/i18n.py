"""Language selection for pages and mails.

Danish is the default (BABEL_DEFAULT_LOCALE) and English is available. Public
pages set no cookie, so a visitor's choice cannot live in a session: the
language switch on every public page links to the same page with ``?lang=``,
and the forms on those pages post back to a URL that keeps it.
"""

from __future__ import annotations

from flask import current_app, g, has_request_context, request
from flask_babel import lazy_gettext as _l


def select_locale() -> str:
    """The page's language: an explicit ``?lang=``, then the subscriber's own
    language when a page knows it, then Accept-Language, then the default.

    ``?lang=`` wins over the stored preference because it is what the visitor
    chose on this very page (the switch); it changes nothing stored. Only the
    query string is read, never the body: reading a form here could fail on
    a malformed or oversized body while an error page is being rendered.
    """
    languages: list[str] = current_app.config["LANGUAGES"]
    if has_request_context():
        requested = request.args.get("lang")
        if requested in languages:
            return str(requested)
    chosen = getattr(g, "locale", None)
    if chosen in languages:
        return str(chosen)
    if has_request_context():
        best = request.accept_languages.best_match(languages)
        if best:
            return best
    return str(current_app.config["BABEL_DEFAULT_LOCALE"])


# Messages that reach `_()` as variables rather than literals, so extraction
# cannot see them where they are made: form labels (web/forms.py), input errors
# shown on the signup form (validation.py, with their limits filled
# in) and the error page's HTTP names and descriptions (Werkzeug's own words).
# Only fixed texts belong here: Jinja's _() marks its result safe and %-formats it,
# so a message holding user input must never pass through _() in a template.
# Listed here, they are extracted into the catalogues; tests/test_translations.py
# renders the pages in Danish and fails on any message missing from the catalogue.
RUNTIME_MESSAGES = (
    _l("E-mail address"),
    _l("Name (optional)"),
    _l("Leave this field empty"),
    _l("Enter your e-mail address."),
    _l("The address is longer than 254 characters."),
    _l("This is not a valid e-mail address."),
    _l("Field cannot be longer than 254 characters."),
    _l("Field cannot be longer than 200 characters."),
    _l("The name contains control characters."),
    _l("The name is longer than 200 characters."),
    _l("At most 20 lists at a time."),
    _l("A list name is malformed."),
    _l("Unknown list."),
    _l("Choose your lists with the boxes on this page."),
    _l("This form may only be sent from this site or an allowed site."),
    _l("Bad Request"),
    _l("The browser (or proxy) sent a request that this server could not understand."),
    _l("Forbidden"),
    _l(
        "You don't have the permission to access the requested resource. It is either "
        "read-protected or not readable by the server."
    ),
    _l("Not Found"),
    _l(
        "The requested URL was not found on the server. If you entered the URL manually "
        "please check your spelling and try again."
    ),
    _l("Method Not Allowed"),
    _l("The method is not allowed for the requested URL."),
    _l("Gone"),
    _l("Request Entity Too Large"),
    _l("The data value transmitted exceeds the capacity limit."),
    _l("Too Many Requests"),
    _l("Internal Server Error"),
    _l(
        "The server encountered an internal error and was unable to complete your request. "
        "Either the server is overloaded or there is an error in the application."
    ),
)
