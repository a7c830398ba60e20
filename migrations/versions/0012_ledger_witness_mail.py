"""The outbox can mail an address from the settings: the ledger's daily witness mail.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

Reviewed by hand. Once a day the worker mails the latest ledger checkpoint to
LEDGER_WITNESS_MAILTO (a witness outside the database). That recipient is
neither a subscriber nor a staff member, so the outbox gets a third kind of
recipient, a plain ``address``, and the CHECK "one_recipient" now wants
exactly one of subscriber_id, staff_user_id and address. The kind CHECK
learns ``ledger_checkpoint``, which is longer than the 16 characters the kind
column had: the column becomes VARCHAR(32).

On SQLite a CHECK constraint can only change by copying the table (Alembic's
batch mode: a new table, INSERT ... SELECT, DROP, RENAME). That is safe with
``PRAGMA foreign_keys = ON``, which every connection of the app sets (the
pragma cannot be changed inside the migration's transaction anyway): no table
references ``outbox``, so dropping the old copy deletes nothing elsewhere, and
the rows copied keep their subscriber and staff references, which are checked
as they are inserted. tests/test_ledger_witness.py migrates an outbox with rows
of every recipient kind down and up and compares every row.

On PostgreSQL this is ALTER TABLE in place: a new nullable column, a longer
VARCHAR (no rewrite) and two constraints checked against the existing rows.
The release before this one keeps working during the rollout (it never sets
``address`` and its kinds are still allowed).

Downgrade deletes the rows mailed to an address (the witness mails) and
restores the two constraints and the column length.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

OLD_KINDS = "'confirm', 'welcome', 'campaign_test', 'data_export'"
NEW_KINDS = OLD_KINDS + ", 'ledger_checkpoint'"
OLD_ONE_RECIPIENT = "(subscriber_id IS NULL) <> (staff_user_id IS NULL)"
NEW_ONE_RECIPIENT = (
    "(CASE WHEN subscriber_id IS NULL THEN 0 ELSE 1 END)"
    " + (CASE WHEN staff_user_id IS NULL THEN 0 ELSE 1 END)"
    " + (CASE WHEN address IS NULL THEN 0 ELSE 1 END) = 1"
)


def upgrade():
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address", sa.String(length=320), nullable=True))
        batch_op.drop_constraint(op.f("ck_outbox_one_recipient"), type_="check")
        batch_op.drop_constraint(op.f("ck_outbox_kind"), type_="check")
        batch_op.alter_column(
            "kind",
            existing_type=sa.String(length=16),
            type_=sa.String(length=32),
            existing_nullable=False,
        )
        batch_op.create_check_constraint("kind", sa.text(f"kind IN ({NEW_KINDS})"))
        batch_op.create_check_constraint("one_recipient", sa.text(NEW_ONE_RECIPIENT))


def downgrade():
    op.execute("DELETE FROM outbox WHERE address IS NOT NULL OR kind = 'ledger_checkpoint'")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_outbox_one_recipient"), type_="check")
        batch_op.drop_constraint(op.f("ck_outbox_kind"), type_="check")
        batch_op.alter_column(
            "kind",
            existing_type=sa.String(length=32),
            type_=sa.String(length=16),
            existing_nullable=False,
        )
        batch_op.create_check_constraint("kind", sa.text(f"kind IN ({OLD_KINDS})"))
        batch_op.create_check_constraint("one_recipient", sa.text(OLD_ONE_RECIPIENT))
        batch_op.drop_column("address")
