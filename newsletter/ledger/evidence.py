"""What a request proves about a consent event: address, agent, page.

The page is kept as scheme, host and path, never a capability: the links in
mails carry signed tokens that work for months (``/manage/<token>`` never
expires), and the ledger is shown to every staff member. ``page_of`` is the
one rule that turns a URL (Referer or request URL) into that evidence.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from flask import Request, current_app

MAX_USER_AGENT = 512
MAX_SOURCE_URL = 512

# The first path segment of every public route whose next segment is a link
# token (web/links.py, web/privacy.py); tests check it against the URL map.
TOKEN_ROUTES = frozenset({"confirm", "unsubscribe", "manage", "data"})
# What stands in for a token: ``/manage/<token>/erase`` is kept as ``/manage/…/erase``.
REDACTED = "…"
# Characters a path segment keeps unescaped (RFC 3986 pchar).
_PCHAR = "!$&'()*+,;=:@-._~"
_RUN = re.compile(r"[^\W_]+")  # letters and digits, in any script
_WORD = re.compile(r"\d{0,4}([^\W\d_]+)\d{0,4}|\d{1,12}")
_HOST = re.compile(r"[\w.-]{1,253}|[0-9A-Fa-f:.]{2,45}")
_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)


@dataclass(frozen=True)
class Evidence:
    """The circumstances of an event, already minimised per IP_LOGGING."""

    ip: str | None = None
    user_agent: str | None = None
    source_url: str | None = None


def minimise_ip(address: str | None, mode: str) -> str | None:
    """Apply IP_LOGGING: ``full``, ``truncated`` (IPv4 /24, IPv6 /48) or ``none``."""
    if not address or mode == "none":
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # An IPv4 client seen through a dual-stack socket (::ffff:a.b.c.d): its
        # /48 would be ::/48, the same for every IPv4 client on earth.
        ip = ip.ipv4_mapped
    if mode == "full":
        return str(ip)
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def page_of(url: str | None) -> str | None:
    """The page a URL names, as evidence that holds no secret; None if it names none.

    The rule, on any host (ours is not reliably known behind a proxy, and
    another site's links are secrets too):

    - only ``http`` and ``https`` URLs with a host name a page; anything else
      (``android-app:``, ``null``, a bare path) gives None;
    - kept: scheme, host and port, and the path, percent-decoded once (as the
      router reads it) and escaped again per segment;
    - when the path starts with a token route (``TOKEN_ROUTES``, in any letter
      case: ours are at the root, BASE_URL being an origin), the segment after
      it is replaced by ``…``: ``/manage/<token>/erase`` becomes ``/manage/…/erase``;
    - any other segment that looks like a secret is replaced by ``…`` as well
      (``looks_secret``: 16 characters or more that are not words);
    - dropped: user name and password, the query string and the fragment,
      whatever they hold. We cannot tell a harmless parameter from a session
      id, an address or another site's token, and the page is named without;
    - at most ``MAX_SOURCE_URL`` characters.
    """
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a bad port or an unbalanced IPv6 bracket
        return None
    host = parts.hostname
    if parts.scheme.lower() not in {"http", "https"} or not host or not _HOST.fullmatch(host):
        return None
    if ":" in host:
        host = f"[{host}]"
    segments = unquote(parts.path).split("/")
    named = [i for i, segment in enumerate(segments) if segment]
    token_at = named[1] if len(named) > 1 and segments[named[0]].casefold() in TOKEN_ROUTES else -1
    path = "/".join(
        REDACTED if i == token_at or looks_secret(s) else quote(s, safe=_PCHAR)
        for i, s in enumerate(segments)
    )
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{path or '/'}"[:MAX_SOURCE_URL]


def pages_in(text: str) -> str:
    """Free text with every http(s) URL in it reduced to its page (``page_of``),
    or to ``…`` where it names none: for evidence that arrives as text."""
    return _URL_IN_TEXT.sub(lambda url: page_of(url.group()) or REDACTED, text)


def looks_secret(segment: str) -> bool:
    """True when a path segment looks like a key rather than words.

    A segment of 16 characters or more is a key unless every run of letters
    and digits in it is a word: letters in one case (small, CAPITALS,
    Capitalised, or a script without case) with at most four digits before or
    after (``covid19``, ``2nd``), or a number of at most 12 digits. So
    ``hvorfor-nyhedsbrev``, ``2024-03-01-udgave-nr-12`` and
    ``Annual_Report_2024.pdf`` stay, while signed tokens, random keys
    (``secrets.token_urlsafe``), hex digests, UUIDs and JWTs do not.
    """
    if len(segment) < 16:
        return False
    for run in _RUN.findall(segment):
        word = _WORD.fullmatch(run)
        if word is None:
            return True
        letters = word.group(1) or ""
        if letters not in {letters.lower(), letters.upper()} and not letters.istitle():
            return True
    return False


def evidence_from_request(request: Request, source_url: str | None = None) -> Evidence:
    """Evidence for the current request; the page is ``source_url``, else the
    Referer, else the request's own URL, the first that names a page (``page_of``).
    The request's own URL is named on BASE_URL: its Host is the client's to choose."""
    base = urlsplit(str(current_app.config.get("BASE_URL") or ""))
    own = urlunsplit(urlsplit(request.url)._replace(scheme=base.scheme, netloc=base.netloc))
    page = page_of(source_url) or page_of(request.headers.get("Referer")) or page_of(own)
    return Evidence(
        ip=minimise_ip(request.remote_addr, current_app.config["IP_LOGGING"]),
        user_agent=(request.headers.get("User-Agent") or "")[:MAX_USER_AGENT] or None,
        source_url=page,
    )
