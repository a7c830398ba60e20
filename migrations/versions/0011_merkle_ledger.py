"""The consent ledger becomes a signed Merkle tree; the keyed hash chain is retired.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

Reviewed by hand. Before anything changes, the old chain is verified once,
with the code that wrote it frozen below (row hashes, links, personal
digests, attribution, the head; a missing head row reads as the genesis
head): a broken chain is refused, naming the first event that fails or the
head, before any schema change, so the database is left as it was. Then:

- every event gets a random salt and the salted commitment to its personal
  fields (events already erased get neither: there is nothing to commit to);
- consent texts and policy versions get the SHA-256 of their text;
- the tables of the tree (nodes, the tree row, checkpoints, signing keys) are
  created empty: the worker's first seal (or ``newsletter ledger seal``) makes
  the existing events the first leaves, in ``seq`` order;
- the chain's columns (prev_hash, row_hash, personal_digest, the head's hash)
  are dropped.

Stop the workers and web processes of the previous release first: they
write chain columns this migration drops (docs/deploy.md). On a large
ledger the commitment step takes time: one UPDATE per event with personal
fields. Events are read and written ``BATCH`` at a time, so memory stays
flat.

Downgrade rebuilds the chain from the rows under the current ledger key
(erased events get the digest of their empty fields), so that the old
verification accepts it, drops the tree, and leaves the chain columns as
0010 made them (NOT NULL, no default; SQLite rebuilds the two tables for
it). It does not verify the tree first: run ``newsletter ledger verify``
before downgrading, since the rebuilt chain vouches for the rows as they are.
"""

import hashlib
import hmac
import json
import secrets
from datetime import UTC

import rfc8785
import sqlalchemy as sa
from alembic import context, op
from flask import current_app

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

PERSONAL = ("email", "ip", "user_agent", "source_url")
GENESIS = "0" * 64
BATCH = 5000  # event rows read and updated at a time

events = sa.table(
    "consent_events",
    sa.column("id", sa.Integer),
    sa.column("seq", sa.Integer),
    sa.column("occurred_at", sa.DateTime),  # naive UTC, as the models store it
    sa.column("event", sa.String),
    sa.column("channel", sa.String),
    sa.column("subscriber_id", sa.Integer),
    sa.column("list_id", sa.Integer),
    sa.column("consent_text_id", sa.Integer),
    sa.column("policy_version_id", sa.Integer),
    sa.column("email_digest", sa.String),
    sa.column("email", sa.String),
    sa.column("ip", sa.String),
    sa.column("user_agent", sa.String),
    sa.column("source_url", sa.Text),
    sa.column("details", sa.JSON),
    sa.column("personal_digest", sa.String),
    sa.column("prev_hash", sa.String),
    sa.column("row_hash", sa.String),
    sa.column("salt", sa.String),
    sa.column("personal_commitment", sa.String),
)
CHAIN_COLUMNS = [c for c in events.c if c.key not in ("salt", "personal_commitment")]


# --- the retired chain, frozen as ce08206 wrote it -------------------------


def _keys():
    config = current_app.config
    if config.get("LEDGER_KEY"):
        return [str(config["LEDGER_KEY"]).encode()]
    secrets_ = [config["SECRET_KEY"], *reversed(config.get("SECRET_KEY_FALLBACKS") or [])]
    return [
        hmac.new(str(s).encode(), b"newsletter.ledger-key", hashlib.sha256).digest()
        for s in secrets_
    ]


def _digest(key, value):
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _personal_digest(row, key):
    return _digest(key, "personal:" + _canonical({name: row[name] for name in PERSONAL}))


def _utc(moment):
    """A stored (naive UTC) or aware instant, in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _row_hash(row, key, personal_digest=None, prev_hash=None):
    content = {
        "seq": row["seq"],
        "occurred_at": _utc(row["occurred_at"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "event": row["event"],
        "channel": row["channel"],
        "list_id": row["list_id"],
        "consent_text_id": row["consent_text_id"],
        "email_digest": row["email_digest"],
        "details": row["details"] or {},
        "personal_digest": personal_digest or row["personal_digest"],
        "prev_hash": prev_hash or row["prev_hash"],
    }
    if row["policy_version_id"] is not None:
        content["policy_version_id"] = row["policy_version_id"]
    return _digest(key, "row:" + _canonical(content))


def _batches(bind, *columns, where=None):
    """Event rows (``columns`` include ``seq``) in ``seq`` order, ``BATCH`` at a
    time: a keyset walk, so memory stays flat and no cursor stays open while
    the rows are updated. Every row, whatever its ``seq`` (none is skipped
    for being below 1)."""
    last = None
    while True:
        query = sa.select(*columns)
        if last is not None:
            query = query.where(events.c.seq > last)
        if where is not None:
            query = query.where(where)
        rows = bind.execute(query.order_by(events.c.seq).limit(BATCH)).mappings().all()
        if not rows:
            return
        yield rows
        last = rows[-1]["seq"]


def _first_break(bind):
    """Where the old chain fails, as a sentence, or None when it holds."""
    keys = _keys()
    email_keys = dict(bind.execute(sa.text("SELECT id, email_key FROM subscribers")).all())
    expected_prev, expected_seq = GENESIS, 1
    for row in (row for rows in _batches(bind, *CHAIN_COLUMNS) for row in rows):
        where = f"event #{row['seq']}"
        if row["seq"] > expected_seq:
            return f"event #{expected_seq} is missing"
        if row["seq"] != expected_seq:
            return f"{where} is out of place (event #{expected_seq} comes first)"
        if row["prev_hash"] != expected_prev:
            return f"{where} does not follow the event before it"
        if row["row_hash"] not in {_row_hash(row, key) for key in keys}:
            return f"{where}: its content does not match its hash"
        if any(row[name] is not None for name in PERSONAL) and row["personal_digest"] not in {
            _personal_digest(row, key) for key in keys
        }:
            return f"{where}: its personal fields do not match their digest"
        email_key = email_keys.get(row["subscriber_id"])
        if email_key is not None and row["email_digest"] not in {
            _digest(key, "email:" + email_key) for key in keys
        }:
            return f"{where} is attributed to another subscriber"
        expected_prev, expected_seq = row["row_hash"], expected_seq + 1
    # No head row reads as the genesis head, as the old verification read it:
    # deleting the row is no way around the head check.
    head = bind.execute(sa.text("SELECT seq, row_hash FROM ledger_head WHERE id = 1")).first()
    head_seq, head_hash = (head.seq, head.row_hash) if head is not None else (0, GENESIS)
    if (head_seq, head_hash) != (expected_seq - 1, expected_prev):
        if head is None:
            return f"the ledger head is missing, though the chain ends at event #{expected_seq - 1}"
        return f"the ledger head names event #{head_seq}, which is missing or changed"
    return None


# --- upgrade ----------------------------------------------------------------


def upgrade():
    if context.is_offline_mode():
        raise RuntimeError("0011 verifies the ledger and computes commitments: run it online")
    bind = op.get_bind()
    broken = _first_break(bind)
    if broken is not None:
        raise RuntimeError(
            f"The consent ledger's hash chain is broken ({broken}), so it is not migrated. "
            "Restore the ledger from a backup, or find out what changed it, before upgrading."
        )
    op.add_column("consent_events", sa.Column("salt", sa.String(length=64), nullable=True))
    op.add_column(
        "consent_events", sa.Column("personal_commitment", sa.String(length=64), nullable=True)
    )
    op.add_column("consent_texts", sa.Column("sha256", sa.String(length=64), nullable=True))
    op.add_column("privacy_policies", sa.Column("text_sha256", sa.String(length=64), nullable=True))
    _create_tree_tables()
    _hash_texts(bind)
    _commit_personal_fields(bind)
    op.drop_column("consent_events", "personal_digest")
    op.drop_column("consent_events", "prev_hash")
    op.drop_column("consent_events", "row_hash")
    op.drop_column("ledger_head", "row_hash")


def _create_tree_tables():
    op.create_table(
        "ledger_tree",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(length=200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("sealed_at", sa.DateTime(), nullable=True),
        sa.Column("verified_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_tree")),
    )
    op.create_table(
        "ledger_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_ledger_nodes")),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("signed_at", sa.DateTime(), nullable=False),
        sa.Column("logged_at", sa.DateTime(), nullable=True),
        sa.Column("mailed_on", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_checkpoints")),
        sa.UniqueConstraint("size", name=op.f("uq_ledger_checkpoints_size")),
    )
    op.create_index(op.f("ix_ledger_checkpoints_signed_at"), "ledger_checkpoints", ["signed_at"])
    op.create_table(
        "ledger_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vkey", sa.String(length=400), nullable=False),
        sa.Column("first_used_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_keys")),
        sa.UniqueConstraint("vkey", name=op.f("uq_ledger_keys_vkey")),
    )


def _hash_texts(bind):
    for table, column, text in (
        ("consent_texts", "sha256", "text"),
        ("privacy_policies", "text_sha256", "body_markdown"),
    ):
        rows = bind.execute(sa.text(f"SELECT id, {text} FROM {table}")).all()  # noqa: S608
        for row_id, body in rows:
            bind.execute(
                sa.text(f"UPDATE {table} SET {column} = :sha WHERE id = :id"),  # noqa: S608
                {"sha": hashlib.sha256(body.encode()).hexdigest(), "id": row_id},
            )


def _commit_personal_fields(bind):
    """A fresh salt and commitment for every event that still has personal fields."""
    update = (
        events.update()
        .where(events.c.id == sa.bindparam("row_id"))
        .values(salt=sa.bindparam("salt"), personal_commitment=sa.bindparam("commitment"))
    )
    present = sa.or_(*[events.c[name].is_not(None) for name in PERSONAL])
    columns = [events.c.id, events.c.seq, *[events.c[name] for name in PERSONAL]]
    for rows in _batches(bind, *columns, where=present):
        values = []
        for row in rows:
            salt = secrets.token_bytes(32)
            personal = {name: row[name] for name in PERSONAL}
            values.append(
                {
                    "row_id": row["id"],
                    "salt": salt.hex(),
                    "commitment": hashlib.sha256(salt + rfc8785.dumps(personal)).hexdigest(),
                }
            )
        bind.execute(update, values)


# --- downgrade --------------------------------------------------------------


def downgrade():
    bind = op.get_bind()
    # Added nullable, filled, then made NOT NULL: the columns end exactly as
    # 0010 made them (no server default left behind).
    for name in ("personal_digest", "prev_hash", "row_hash"):
        op.add_column("consent_events", sa.Column(name, sa.String(length=64), nullable=True))
    op.add_column("ledger_head", sa.Column("row_hash", sa.String(length=64), nullable=True))
    _rebuild_chain(bind)
    op.drop_table("ledger_keys")
    op.drop_index(op.f("ix_ledger_checkpoints_signed_at"), table_name="ledger_checkpoints")
    op.drop_table("ledger_checkpoints")
    op.drop_table("ledger_nodes")
    op.drop_table("ledger_tree")
    op.drop_column("privacy_policies", "text_sha256")
    op.drop_column("consent_texts", "sha256")
    # One batch per table: SQLite rebuilds each table once for NOT NULL.
    with op.batch_alter_table("consent_events") as batch:
        batch.drop_column("personal_commitment")
        batch.drop_column("salt")
        for name in ("personal_digest", "prev_hash", "row_hash"):
            batch.alter_column(name, existing_type=sa.String(length=64), nullable=False)
    with op.batch_alter_table("ledger_head") as batch:
        batch.alter_column("row_hash", existing_type=sa.String(length=64), nullable=False)


def _rebuild_chain(bind):
    """Chain every event under the current ledger key, as the old code did, and
    point the head at the last; returns the last row hash."""
    key = _keys()[0]
    update = (
        events.update()
        .where(events.c.id == sa.bindparam("row_id"))
        .values(
            personal_digest=sa.bindparam("pd"),
            prev_hash=sa.bindparam("prev"),
            row_hash=sa.bindparam("rh"),
        )
    )
    previous = GENESIS
    for rows in _batches(bind, *CHAIN_COLUMNS):
        values = []
        for row in rows:
            personal = _personal_digest(row, key)
            row_hash = _row_hash(row, key, personal_digest=personal, prev_hash=previous)
            values.append({"row_id": row["id"], "pd": personal, "prev": previous, "rh": row_hash})
            previous = row_hash
        bind.execute(update, values)
    bind.execute(sa.text("UPDATE ledger_head SET row_hash = :h WHERE id = 1"), {"h": previous})
    return previous
