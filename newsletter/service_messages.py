"""The language of the messages services raise (invalid input, refusals, import errors).

A service does not know who reads its message: a staff member on a Danish or an
English page, an operator at the command line, the worker, a log. So:

- :func:`page_gettext` (imported as ``_`` at the raise site, which is how the
  extraction finds the msgid) translates into the page's language when there is
  a request, and returns the English text everywhere else. Commands, the worker
  and direct calls get English, as before: the operators' output stays English
  without any switch of locale around the commands.
- A message that is *stored* to be shown later (an import job's errors, written
  by the worker or in another staff member's request) is kept in English, marked
  with :func:`N_` for the catalogue, and put into the language of the page that
  shows it by :func:`in_page_language`. So are the shared input rules' messages
  (validation.py), which stay English for the signup page to
  translate in its template.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache

from flask import has_request_context
from flask_babel import gettext

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def page_gettext(msgid: str, **params: object) -> str:
    """``msgid`` with ``%(name)s`` placeholders filled: in the page's language
    during a request, in English (the msgid itself) otherwise."""
    if has_request_context():
        return gettext(msgid, **params)
    return msgid % params if params else msgid


def N_(msgid: str) -> str:
    """Mark an English message for the catalogue (``N_`` is a keyword the
    extraction knows) without translating it now."""
    return msgid


@cache
def _pattern(msgid: str) -> re.Pattern[str]:
    """A regular expression matching ``msgid`` with any text for each placeholder."""
    parts = _PLACEHOLDER.split(msgid)  # literal, name, literal, name, ..., literal
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>.*?)" for i, part in enumerate(parts)
    )
    return re.compile(regex, re.DOTALL)


def in_page_language(text: str, templates: Iterable[str] = ()) -> str:
    """An English message made earlier or elsewhere, in the page's language.

    A fixed message is its own msgid. A message made from one of ``templates``
    (msgids with ``%(name)s`` placeholders) is matched against them to recover
    its values, which are kept as they were. Anything else (say, a message
    stored before it was translatable) is shown as stored.
    """
    if not has_request_context():
        return text
    translated = gettext(text)
    if translated != text:
        return translated
    for msgid in templates:
        match = _pattern(msgid).fullmatch(text)
        if match:
            return gettext(msgid, **match.groupdict())
    return text
