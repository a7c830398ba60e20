"""Campaigns say why they paused themselves.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

Reviewed by hand. Additive only, so workers of the previous release keep
sending while this one is rolled out: they never name the new column.
``campaigns.pause_reason`` (JSON, nullable) holds the rule that paused a
campaign automatically (complaint rate or hard-bounce rate over its line),
the rate and the counts behind it; NULL for every existing campaign, none of
which paused itself. A nullable column without a default changes no row on
PostgreSQL or SQLite.

Downgrade drops the column; the reasons are lost with it (the audit trail
keeps each automatic pause).
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("campaigns", sa.Column("pause_reason", sa.JSON(), nullable=True))


def downgrade():
    # Not in batch mode: on SQLite that copies the table and drops the old one,
    # and dropping ``campaigns`` with foreign keys on would cascade to every
    # delivery. SQLite (3.35 or later) and PostgreSQL drop a plain column in place.
    op.drop_column("campaigns", "pause_reason")
