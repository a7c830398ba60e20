"""Subscriber search: trigram indexes for address and name, a list/status index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Reviewed by hand. The staff console searches subscribers by a fragment of
their address or name and must answer within 200 ms at a million rows
(benchmarks/subscriber_search.py). A b-tree cannot serve ``LIKE '%frag%'``;
PostgreSQL's pg_trgm GIN index can (LIKE on the case-folded ``email_key``,
ILIKE on ``name``). pg_trgm is a trusted extension since PostgreSQL 13, so the
database owner may create it; ``IF NOT EXISTS`` leaves an existing one alone
and the downgrade does not drop it (other objects may use it).

SQLite has no trigram index. The two indexes are created there under the same
names as plain b-trees, which keeps the migrated schema identical to the
models on both backends (the drift check in tests/test_migrations.py); at the
sizes SQLite is meant for, a search scans the table anyway.

``ix_subscriptions_list_status_subscriber`` (list_id, status, subscriber_id)
lets a list+status filter walk one list's subscribers newest first and stop
after a page (keyset pagination), and makes counts per list and status an
index-only scan. Building these on a large existing PostgreSQL table takes a
while and locks writes to the table; run it in a quiet hour.
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.create_index('ix_subscribers_email_key_trgm', ['email_key'], unique=False, postgresql_using='gin', postgresql_ops={'email_key': 'gin_trgm_ops'})
        batch_op.create_index('ix_subscribers_name_trgm', ['name'], unique=False, postgresql_using='gin', postgresql_ops={'name': 'gin_trgm_ops'})
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.create_index('ix_subscriptions_list_status_subscriber', ['list_id', 'status', 'subscriber_id'], unique=False)


def downgrade():
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_index('ix_subscriptions_list_status_subscriber')
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.drop_index('ix_subscribers_name_trgm', postgresql_using='gin', postgresql_ops={'name': 'gin_trgm_ops'})
        batch_op.drop_index('ix_subscribers_email_key_trgm', postgresql_using='gin', postgresql_ops={'email_key': 'gin_trgm_ops'})
