"""Signup intake: public signups wait here for a worker.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Reviewed by hand. A new table only, so the previous release keeps running
while this one is rolled out: its web processes never name the table and keep
signing people up directly; this release's web processes write here and its
workers drain it. Roll the workers out first, so that no row waits for a
worker that does not know the table.

No index but the primary key: a signup request inserts one row and must not
look anything up by address; workers claim rows in id order, and erasure and
the data export scan the (short) table. ``terms`` is JSON, not foreign keys:
the worker checks that each list still exists and marks the row failed with
the reason when one does not.

Downgrade drops the table. Rows still waiting are lost with it: drain the
intake first (``newsletter worker --once``).
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "signup_intake",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("email_key", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("locale", sa.String(length=16), nullable=True),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("policy_version_id", sa.Integer(), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("source_url", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("leased_by", sa.String(length=64), nullable=True),
        sa.Column("failed_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signup_intake")),
    )


def downgrade():
    op.drop_table("signup_intake")
