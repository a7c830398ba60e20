"""Ledger events no longer hold the capability links they were written from.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Reviewed by hand. No schema change. Until now an event's ``source_url`` was
the Referer or the request URL as sent, so events written from a link in a
mail kept the whole link: ``/confirm/<token>``, ``/unsubscribe/<token>``,
``/manage/<token>`` (which never expires and can erase the subscriber), and
the subscriber page and proof of consent showed it to every staff member,
the lowest role included. New events keep only the page (scheme, host and
path, with tokens replaced by ``…``: ``ledger.evidence.page_of``).

This migration removes the links already stored. A ``source_url`` enters the
row hash only through ``personal_digest``, a keyed digest of all four
personal fields (email, ip, user_agent, source_url) together. Rewriting it
would change that digest and with it every row hash after it, which no one
without the ledger key can do and no one should. So such an event is treated
as erasure treats every event of an erased address: its four personal fields
are set to NULL, which ``newsletter ledger verify`` accepts (the digest then
stands for them), and everything else stays: seq, time, event, channel,
list, consent text, policy, details, the keyed ``email_digest`` (which still
matches the address for a proof), the subscriber and all hashes. The event
thereby also loses its address copy, network and browser: that is the price
of keeping the chain verifiable.

An event is redacted when its stored ``source_url`` holds, after one
percent-decoding, a path that starts with ``confirm``, ``unsubscribe``,
``manage`` or ``data`` followed by a non-empty segment (our token routes, in
any letter case, on any host), or anywhere in its path, query, fragment or
user part a piece of 16 characters or more that is not made of words, by the
rule of ``ledger.evidence.looks_secret`` (copied below as it stood at this
revision: a migration does not import application code). Harmless leftovers
of the old form, such as a ``?utm=`` parameter, stay as they are: new events
drop the query string, old ones are not worth their evidence for it. The
other evidence fields are never built from a URL and are not examined.

Rows are read in batches of ``BATCH`` by id, so memory stays flat on a large
ledger; the updates run in the migration's transaction on SQLite and
PostgreSQL alike.

Downgrade: nothing to restore. The removed values are gone on purpose and
the schema is unchanged, so downgrading only moves the revision back.
"""

import re
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BATCH = 1000
TOKEN_ROUTE = re.compile(r"/*(?:confirm|unsubscribe|manage|data)/+[^/]", re.IGNORECASE)
RUN = re.compile(r"[^\W_]+")
WORD = re.compile(r"\d{0,4}([^\W\d_]+)\d{0,4}|\d{1,12}")
# Where parts of a URL end, for judging each part on its own.
SEPARATORS = re.compile(r"[/?#&=;:@]")

events = sa.table(
    "consent_events",
    sa.column("id", sa.Integer),
    sa.column("email", sa.String),
    sa.column("ip", sa.String),
    sa.column("user_agent", sa.String),
    sa.column("source_url", sa.Text),
)


def looks_secret(part):
    """16 characters or more, not all words (ledger.evidence.looks_secret at 0007)."""
    if len(part) < 16:
        return False
    for run in RUN.findall(part):
        word = WORD.fullmatch(run)
        if word is None:
            return True
        letters = word.group(1) or ""
        if letters not in {letters.lower(), letters.upper()} and not letters.istitle():
            return True
    return False


def carries_token(url):
    """True when a stored source_url holds a link token or another key."""
    try:
        parts = urlsplit(url)
        user = parts.netloc.rpartition("@")[0]
    except ValueError:  # an unbalanced IPv6 bracket, say: judge the whole text
        text = unquote(url)
        return bool(TOKEN_ROUTE.search(text)) or any(map(looks_secret, SEPARATORS.split(text)))
    path, rest = unquote(parts.path), (parts.query, parts.fragment, user)
    if TOKEN_ROUTE.match(path):
        return True
    pieces = path.split("/") + [p for r in rest for p in SEPARATORS.split(unquote(r))]
    return any(looks_secret(piece) for piece in pieces)


def upgrade():
    bind = op.get_bind()
    last_id = 0
    while True:
        rows = bind.execute(
            sa.select(events.c.id, events.c.source_url)
            .where(events.c.id > last_id, events.c.source_url.is_not(None))
            .order_by(events.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        last_id = rows[-1].id
        redact = [row.id for row in rows if carries_token(row.source_url)]
        if redact:
            bind.execute(
                sa.update(events)
                .where(events.c.id.in_(redact))
                .values(email=None, ip=None, user_agent=None, source_url=None)
            )


def downgrade():
    # Nothing to restore: the links are gone on purpose, and no column changed.
    pass
