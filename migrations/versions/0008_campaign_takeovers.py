"""Campaigns count the deliveries taken over from a lost worker.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

Reviewed by hand. Additive only, so workers of the previous release keep
sending while this one is rolled out: they never name the new columns, and
the server default fills them on every campaign they or anyone else create.
``campaigns.taken_over`` counts deliveries a worker claimed after another
worker's lease on them had run out; ``campaigns.possibly_duplicated`` is the
upper bound of those the lost worker may have sent without recording it (one
fence chunk per lost lease at most, or the rows taken over when fewer). Both
are NOT NULL integers with server default 0: on PostgreSQL adding a column
with a constant default changes no row (the default is kept in the catalogue),
and SQLite adds it in place too. Campaigns from before this migration start at
0: takeovers before it were never recorded, which is what the 0 says.

Downgrade drops the two columns; the counts are lost with them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column(
        "campaigns",
        sa.Column("taken_over", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "campaigns",
        sa.Column("possibly_duplicated", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )


def downgrade():
    # Not in batch mode: on SQLite that copies the table and drops the old one,
    # and dropping ``campaigns`` with foreign keys on would cascade to every
    # delivery. SQLite (3.35 or later) and PostgreSQL drop a plain column in place.
    op.drop_column("campaigns", "possibly_duplicated")
    op.drop_column("campaigns", "taken_over")
