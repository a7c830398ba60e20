"""Language selection for pages and mails."""

from __future__ import annotations

from flask import current_app, g, request


def select_locale() -> str:
    """The subscriber's own language when a page knows it, then Accept-Language."""
    chosen = getattr(g, "locale", None)
    languages: list[str] = current_app.config["LANGUAGES"]
    if chosen in languages:
        return str(chosen)
    if request:
        requested = request.args.get("lang")
        if requested in languages:
            return str(requested)
        best = request.accept_languages.best_match(languages)
        if best:
            return best
    return str(current_app.config["BABEL_DEFAULT_LOCALE"])
