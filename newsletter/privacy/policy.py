"""Privacy-policy versions: import from Markdown with front matter, look up, render.

The input is the controller's own policy as published on their static site:
YAML front matter (``title``, maybe ``date``/``effective``, and site keys such
as ``layout`` that mean nothing here) and a Markdown body, in Danish often
with a "Dato for seneste opdatering: DD.MM.YYYY" line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime

import frontmatter
import yaml
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..campaigns.compose import markdown_to_safe_html
from ..extensions import db
from ..ledger.append import policy_in_force_id
from ..models import PolicyVersion, StaffUser, utcnow
from ..staff import audit
from ..transaction import transactional

MAX_POLICY_BYTES = 512 * 1024  # a policy is a few pages; this is generous
MAX_TITLE = 200
DEFAULT_TITLE = "Privacy policy"
# Front-matter keys that carry the effective date, in order of preference.
DATE_KEYS = ("effective", "date")
KNOWN_KEYS = frozenset({"title", *DATE_KEYS})
# "Dato for seneste opdatering: 30.10.2023" (Danish: date of the latest update).
BODY_DATE = re.compile(
    r"dato\s+for\s+seneste\s+opdatering\s*:\s*(\d{1,2})\.(\d{1,2})\.(\d{4})", re.IGNORECASE
)


class PolicyError(ValueError):
    """The file cannot be imported; the message says why, for the operator."""


@dataclass(frozen=True)
class ParsedPolicy:
    """What a policy file says, before it is stored."""

    title: str
    effective_on: date
    body_markdown: str
    ignored_keys: tuple[str, ...]

    @property
    def digest(self) -> str:
        """SHA-256 over title, date and body: the identity of this content."""
        content = [self.title, self.effective_on.isoformat(), self.body_markdown]
        return hashlib.sha256(
            json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        ).hexdigest()


@dataclass(frozen=True)
class ImportResult:
    """The stored version, and whether this import created it."""

    version: PolicyVersion
    created: bool
    ignored_keys: tuple[str, ...]


def parse_policy(raw: bytes) -> ParsedPolicy:
    """Parse a policy file; raise :class:`PolicyError` with a clear message."""
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"The file is larger than {MAX_POLICY_BYTES // 1024} KiB.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyError("The file is not UTF-8 text.") from exc
    try:
        post = frontmatter.loads(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"The front matter is not valid YAML: {exc}") from exc
    meta = post.metadata
    body = post.content.replace("\r\n", "\n").strip() + "\n"
    if not body.strip():
        raise PolicyError("The policy has no text after the front matter.")
    title = " ".join(str(meta.get("title") or DEFAULT_TITLE).split())[:MAX_TITLE]
    effective_on = _effective_date(meta, body)
    ignored = tuple(sorted(str(key) for key in meta if key not in KNOWN_KEYS))
    return ParsedPolicy(title, effective_on, body, ignored)


def _effective_date(meta: dict[str, object], body: str) -> date:
    """From an ``effective``/``date`` key, else from the body's Danish date line."""
    for key in DATE_KEYS:
        if meta.get(key) not in (None, ""):
            return _as_date(meta[key], key)
    match = BODY_DATE.search(body)
    if match is None:
        raise PolicyError(
            "The policy has no effective date. Add `effective: YYYY-MM-DD` (or `date:`) "
            'to the front matter, or a line "Dato for seneste opdatering: DD.MM.YYYY" '
            "to the text."
        )
    day, month, year = (int(part) for part in match.groups())
    try:
        return date(year, month, day)
    except ValueError as exc:
        raise PolicyError(f"The date line names no real day: {match.group(0)!r}.") from exc


def _as_date(value: object, key: str) -> date:
    """A front-matter date: YAML's own date, ISO ``YYYY-MM-DD`` or ``DD.MM.YYYY``."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    for pattern in ("%Y-%m-%d", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, pattern).date()  # noqa: DTZ007 - a date, no time
        except ValueError:
            continue
    raise PolicyError(f"`{key}: {text[:40]}` is not a date (use YYYY-MM-DD).")


@transactional
def import_policy(
    raw: bytes, *, actor: StaffUser | None = None, ip: str | None = None
) -> ImportResult:
    """Store the file as the next version, or find the identical one.

    A new version and its audit entry (``actor`` None: the command line) are
    one transaction. Versions are immutable and numbered in import order; the
    one in force on a day is the newest effective date not after it (see
    ledger.append).
    """
    parsed = parse_policy(raw)
    existing = db.session.scalar(
        select(PolicyVersion).where(PolicyVersion.content_digest == parsed.digest)
    )
    if existing is not None:
        return ImportResult(existing, False, parsed.ignored_keys)
    number = (db.session.scalar(select(func.max(PolicyVersion.version))) or 0) + 1
    version = PolicyVersion(
        version=number,
        title=parsed.title,
        effective_on=parsed.effective_on,
        body_markdown=parsed.body_markdown,
        content_digest=parsed.digest,
        imported_at=utcnow(),
    )
    db.session.add(version)
    try:
        db.session.flush()
    except IntegrityError as exc:
        # Two imports at once took the same number (or the same file): one wins.
        raise PolicyError("Another import ran at the same time; run this one again.") from exc
    audit.record(
        actor,
        "policy.import",
        "policy",
        version.version,
        details={"title": version.title, "effective_on": version.effective_on.isoformat()},
        ip=ip,
    )
    return ImportResult(version, True, parsed.ignored_keys)


def policy_in_force(today: date | None = None) -> PolicyVersion | None:
    """The version in force today (UTC), or None before the first import."""
    policy_id = policy_in_force_id(today or utcnow().date())
    return db.session.get(PolicyVersion, policy_id) if policy_id is not None else None


def policy_versions() -> list[PolicyVersion]:
    """Every version, the newest effective date first."""
    query = select(PolicyVersion).order_by(
        PolicyVersion.effective_on.desc(), PolicyVersion.version.desc()
    )
    return list(db.session.scalars(query))


def policy_by_version(number: int) -> PolicyVersion | None:
    """One version by its public number."""
    return db.session.scalar(select(PolicyVersion).where(PolicyVersion.version == number))


def render_policy(policy: PolicyVersion) -> str:
    """The body as safe HTML: no raw HTML, no script, no image from another origin."""
    return markdown_to_safe_html(policy.body_markdown)
