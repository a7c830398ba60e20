"""The bounce mailbox over IMAP (RFC 3501, with MOVE and UIDPLUS where offered).

BOUNCE_IMAP_URL names the mailbox:

- ``imaps://user:password@host[:993]/Folder``: TLS from the first byte;
- ``imap://user:password@host[:143]/Folder``: STARTTLS, required (a server that
  does not offer it is refused, so the password never crosses in clear);
- ``imap://...?starttls=no``: no TLS at all, for a server on a loopback
  address only (a test server, a local Dovecot).

The folder defaults to INBOX; user and password are percent-decoded.
``?cafile=/path/ca.pem`` trusts that CA (a private server's own certificate)
besides the system's. Certificates and host names are always checked.

Every message is named by its UID; nothing here marks a message read (BODY.PEEK).
No error message carries the password.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import ipaddress
import re
import ssl
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_PORTS = {"imaps": 993, "imap": 143}
DEFAULT_FOLDER = "INBOX"
# A keyword set on a message that could not be read: it stays in the folder for
# a person to look at, and later runs pass it by.
UNREADABLE_KEYWORD = "NewsletterUnreadable"
FETCH_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class MailboxError(Exception):
    """The mailbox cannot be used: a bad URL, a refused login, a server that
    fails a command. The message says which, never with the password."""


class MessageGone(MailboxError):
    """The message was expunged meanwhile (another reader moved it): RFC 5530's
    EXPUNGEISSUED or NONEXISTENT."""


GONE_CODES = ("[EXPUNGEISSUED]", "[NONEXISTENT]")


@dataclass(frozen=True)
class MailboxSettings:
    """What BOUNCE_IMAP_URL says."""

    host: str
    port: int
    user: str
    password: str
    folder: str
    security: str  # "tls" | "starttls" | "none"
    cafile: str | None = None

    def __repr__(self) -> str:  # never the password, in a log or a traceback
        return (
            f"MailboxSettings(host={self.host!r}, port={self.port}, user={self.user!r}, "
            f"folder={self.folder!r}, security={self.security!r})"
        )


def parse_url(url: str) -> MailboxSettings:
    """``url`` as mailbox settings; MailboxError says what is wrong with it."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise MailboxError("BOUNCE_IMAP_URL is not a valid URL.") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise MailboxError("BOUNCE_IMAP_URL must start with imaps:// or imap://.")
    if not parts.hostname or parts.username is None or parts.password is None:
        raise MailboxError("BOUNCE_IMAP_URL must name a user, a password and a host.")
    query = parse_qs(parts.query)
    starttls = (query.get("starttls") or ["yes"])[-1].lower()
    if starttls not in {"yes", "no"}:
        raise MailboxError("BOUNCE_IMAP_URL: starttls must be yes or no.")
    security = "tls" if scheme == "imaps" else ("starttls" if starttls == "yes" else "none")
    if security == "none" and not _is_loopback(parts.hostname):
        raise MailboxError(
            "BOUNCE_IMAP_URL: starttls=no sends the password in clear; it is allowed "
            "for a server on a loopback address only. Use imaps:// or STARTTLS."
        )
    folder = unquote(parts.path.lstrip("/")) or DEFAULT_FOLDER
    return MailboxSettings(
        host=parts.hostname,
        port=port or DEFAULT_PORTS[scheme],
        user=unquote(parts.username),
        password=unquote(parts.password),
        folder=folder,
        security=security,
        cafile=query["cafile"][-1] if query.get("cafile") else None,
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def quote_mailbox(name: str) -> str:
    """A folder name as an IMAP quoted string, in modified UTF-7 (RFC 3501,
    section 5.1.3) when it is not plain ASCII."""
    encoded = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            encoded.append("&" + data.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            encoded.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    text = "".join(encoded).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


class Mailbox:
    """A logged-in IMAP session on one folder (a context manager)."""

    def __init__(self, settings: MailboxSettings, timeout: float = 30.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._imap: imaplib.IMAP4 | None = None
        self.capabilities: frozenset[str] = frozenset()

    def __enter__(self) -> Mailbox:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def imap(self) -> imaplib.IMAP4:
        if self._imap is None:
            raise MailboxError("the mailbox is not open")
        return self._imap

    def open(self) -> None:
        """Connect, secure, log in and select the folder."""
        s = self.settings
        where = f"{s.host}:{s.port}"
        try:
            context = ssl.create_default_context(cafile=s.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise MailboxError(f"cannot read the CA file {s.cafile!r}: {exc}") from None
        try:
            if s.security == "tls":
                self._imap = imaplib.IMAP4_SSL(
                    s.host, s.port, ssl_context=context, timeout=self.timeout
                )
            else:
                self._imap = imaplib.IMAP4(s.host, s.port, timeout=self.timeout)
                if s.security == "starttls":
                    self._imap.starttls(ssl_context=context)
        except (OSError, imaplib.IMAP4.error) as exc:
            self.close()
            raise MailboxError(f"cannot connect to the IMAP server {where}: {exc}") from None
        try:
            self.imap.login(s.user, s.password)
        except (imaplib.IMAP4.error, UnicodeError):
            self.close()
            raise MailboxError(f"the IMAP server {where} refused the login of {s.user!r}") from None
        try:
            self.capabilities = frozenset(
                word.upper()
                for word in self._ok(self.imap.capability(), "CAPABILITY")[0].decode().split()
            )
            self._ok(self.imap.select(quote_mailbox(s.folder)), "SELECT")
        except MailboxError:
            self.close()
            raise
        except (imaplib.IMAP4.error, OSError, UnicodeError) as exc:
            self.close()
            raise MailboxError(f"cannot open the folder {s.folder!r} on {where}: {exc}") from None

    def close(self) -> None:
        """Log out (expunging nothing that was not asked for)."""
        imap, self._imap = self._imap, None
        if imap is None:
            return
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            imap.logout()

    def uids(self) -> list[int]:
        """The messages of the folder not marked deleted or unreadable, oldest first."""
        data = self._ok(
            self.imap.uid("SEARCH", "UNDELETED", "UNKEYWORD", UNREADABLE_KEYWORD), "SEARCH"
        )
        return sorted(int(word) for word in (data[0] or b"").split())

    def unreadable_count(self) -> int:
        """How many messages wait in the folder marked unreadable."""
        data = self._ok(
            self.imap.uid("SEARCH", "UNDELETED", "KEYWORD", UNREADABLE_KEYWORD), "SEARCH"
        )
        return len((data[0] or b"").split())

    def size(self, uid: int) -> int | None:
        """The message's size in bytes (None when it is gone)."""
        data = self._ok(self.imap.uid("FETCH", str(uid), "(RFC822.SIZE)"), "FETCH")
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if isinstance(line, bytes) and (found := FETCH_SIZE.search(line)):
                return int(found.group(1))
        return None

    def fetch(self, uid: int) -> bytes | None:
        """The raw message (None when it is gone), without setting \\Seen."""
        data = self._ok(self.imap.uid("FETCH", str(uid), "(BODY.PEEK[])"), "FETCH")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                return item[1]
        return None

    def ensure_folder(self, name: str) -> None:
        """Create the folder ``name`` unless it exists."""
        quoted = quote_mailbox(name)
        listed = self._ok(self.imap.list('""', quoted), "LIST")
        if any(item for item in listed if item):
            return
        typ, data = self.imap.create(quoted)
        if typ != "OK" and b"ALREADYEXISTS" not in b" ".join(d or b"" for d in data).upper():
            raise MailboxError(f"cannot create the folder {name!r}: {data!r}")
        self.imap.subscribe(quoted)

    def move(self, uid: int, folder: str) -> None:
        """Move the message to ``folder`` (MOVE, else COPY and delete)."""
        quoted = quote_mailbox(folder)
        if "MOVE" in self.capabilities:
            self._ok(self.imap.uid("MOVE", str(uid), quoted), "MOVE")
            return
        self._ok(self.imap.uid("COPY", str(uid), quoted), "COPY")
        self.delete(uid)

    def delete(self, uid: int) -> None:
        """Delete the message for good (just this one where UIDPLUS allows)."""
        self._ok(self.imap.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)"), "STORE")
        if "UIDPLUS" in self.capabilities:
            self._ok(self.imap.uid("EXPUNGE", str(uid)), "EXPUNGE")
        else:
            self._ok(self.imap.expunge(), "EXPUNGE")

    def mark_unreadable(self, uid: int) -> None:
        """Keep the message, marked so that later runs pass it by."""
        self._ok(
            self.imap.uid("STORE", str(uid), "+FLAGS.SILENT", f"({UNREADABLE_KEYWORD})"), "STORE"
        )

    @staticmethod
    def _ok(response: tuple[str, list], command: str) -> list:
        typ, data = response
        if typ != "OK":
            detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("ascii", "replace")
            if detail.upper().startswith(GONE_CODES):
                raise MessageGone(f"{command}: the message is gone")
            raise MailboxError(f"the IMAP server refused {command}: {detail[:200]}")
        return data
