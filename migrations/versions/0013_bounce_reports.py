"""Bounce and complaint reports: every one received, once, with what was done.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

Reviewed by hand. A new table only, so the previous release keeps running
while this one is rolled out (it never names the table). ``dedupe_digest`` is
unique: a DSN or webhook event received twice is recorded once. The person is
named by the keyed digest, as on the suppression list; the foreign keys are
SET NULL, so erasure and retention delete subscribers and deliveries without
losing the counts the compliance report needs.

Downgrade drops the table and with it the bounce history (suppressions stay).
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "bounce_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("dedupe_digest", sa.String(length=64), nullable=False),
        sa.Column("email_digest", sa.String(length=64), nullable=True),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column(
            "delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("diagnostic", sa.String(length=300), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_bounce_reports_subscriber_id_subscribers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_bounce_reports_campaign_id_campaigns"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_bounce_reports_delivery_id_deliveries"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bounce_reports")),
        sa.UniqueConstraint("dedupe_digest", name=op.f("uq_bounce_reports_dedupe_digest")),
    )
    op.create_index(op.f("ix_bounce_reports_received_at"), "bounce_reports", ["received_at"])
    op.create_index(op.f("ix_bounce_reports_campaign_id"), "bounce_reports", ["campaign_id"])
    op.create_index(
        "ix_bounce_reports_email_kind", "bounce_reports", ["email_digest", "kind", "received_at"]
    )


def downgrade():
    op.drop_index("ix_bounce_reports_email_kind", table_name="bounce_reports")
    op.drop_index(op.f("ix_bounce_reports_campaign_id"), table_name="bounce_reports")
    op.drop_index(op.f("ix_bounce_reports_received_at"), table_name="bounce_reports")
    op.drop_table("bounce_reports")
