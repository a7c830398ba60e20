"""Input rules shared by the form, the JSON API, the CLI and imports."""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

from .service_messages import page_gettext as _

MAX_EMAIL = 254
MAX_NAME = 200
MAX_LISTS = 20
SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
# Control characters (CR, LF, NUL ...) never belong in a name that ends up in
# a mail header or a CSV cell.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# An RFC 2047 encoded word ("=?charset?b?...?=" or "?q?"), as the email
# package's decoders find one: in a header they decode it, even where RFC 2047
# forbids it, so "=?utf-8?q?=0D=0A...?=" would read as a line break. No name,
# subject or address needs one; header_line (mail/headers.py) also breaks any
# "=?" it is given, this refusal says so to the person who typed it.
ENCODED_WORD = re.compile(r"=\?[^?]*\?[bBqQ]\?.*?\?=", re.DOTALL)


class InvalidInput(ValueError):
    """Bad input, naming the field and saying what is wrong with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def normalise_email(raw: str) -> tuple[str, str]:
    """Validate an address; return (address to send to, key for uniqueness).

    The syntax is what a real mailbox can have: a dot-atom local part of at
    most 64 characters without "=?" (see ENCODED_WORD), and a domain name on
    the Internet. Internationalised addresses are accepted. The domain is
    lower-cased and Unicode is normalised by email-validator; the key also
    case-folds the local part, as virtually every mail provider treats it
    case-insensitively.
    No DNS lookup is made: deliverability shows when the confirmation arrives.
    """
    value = (raw or "").strip()
    if not value:
        raise InvalidInput("email", "Enter your e-mail address.")
    if len(value) > MAX_EMAIL:
        raise InvalidInput("email", f"The address is longer than {MAX_EMAIL} characters.")
    try:
        # Every option that widens the syntax spelled out (a module-level default
        # changed elsewhere must not widen it): no quoted local part, display
        # name, IP-address domain or empty local part, the RFC 5321
        # length limits, and a domain that can receive mail on the Internet.
        result = validate_email(
            value,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_empty_local=False,
            globally_deliverable=True,
            test_environment=False,
            strict=True,
        )
    except EmailNotValidError as exc:
        # One fixed sentence (not email-validator's English detail), so the signup
        # page can show it in the visitor's language.
        raise InvalidInput("email", "This is not a valid e-mail address.") from exc
    if "=?" in result.local_part:
        # Legal atext, but the email package decodes "=?...?=" even in a local
        # part: such an address wrote a line break into the To header.
        raise InvalidInput("email", "This is not a valid e-mail address.")
    return result.normalized, result.normalized.casefold()


def clean_name(raw: str | None) -> str:
    """An optional display name: trimmed, bounded, no control characters.

    Control characters are looked for before whitespace is collapsed: CR, LF
    and TAB count as whitespace for ``str.split``, so checking afterwards
    would never see them.
    """
    if CONTROL_CHARACTERS.search(raw or ""):
        raise InvalidInput("name", "The name contains control characters.")
    value = " ".join((raw or "").split())
    if len(value) > MAX_NAME:
        raise InvalidInput("name", f"The name is longer than {MAX_NAME} characters.")
    return value


def clean_slugs(raw: list[str], field: str = "list") -> list[str]:
    """List slugs as given: bounded in number and shape, duplicates dropped."""
    if len(raw) > MAX_LISTS:
        raise InvalidInput(field, f"At most {MAX_LISTS} lists at a time.")
    slugs: list[str] = []
    for slug in raw:
        if not isinstance(slug, str) or not SLUG_PATTERN.match(slug):
            raise InvalidInput(field, "A list name is malformed.")
        if slug not in slugs:
            slugs.append(slug)
    return slugs


def clean_locale(raw: str | None, languages: list[str]) -> str | None:
    """A supported language code, or None to keep the default."""
    if raw in (None, ""):
        return None
    if raw not in languages:
        # Made from the list of languages, so translated here, not by the page.
        choices = ", ".join(languages)
        raise InvalidInput("locale", _("Choose one of: %(choices)s.", choices=choices))
    return raw


def require_encodable(value: object, field: str) -> None:
    """Refuse text UTF-8 cannot encode: a string, or a string in a list, holding a
    lone surrogate (U+D800 to U+DFFF alone), which a JSON ``\\udXXX`` escape can
    carry but no database, mail or log can hold. Other values pass unchanged."""
    texts = value if isinstance(value, list) else [value]
    for text in texts:
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput(
                    field, "The text is not valid Unicode: it holds a lone surrogate."
                ) from None
