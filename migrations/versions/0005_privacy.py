"""Privacy-policy versions; consent events name the policy in force.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

Reviewed by hand. ``privacy_policies`` holds immutable versions (unique
version number, unique content digest so a re-import is a no-op). Consent
events gain a nullable ``policy_version_id``: events written before this
migration keep NULL, and their row hashes, computed without the field, stay
valid (ledger.chain.row_hash adds the field to the hashed content only when it
is set). No index on it: nothing looks events up by policy.
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('privacy_policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('effective_on', sa.Date(), nullable=False),
    sa.Column('body_markdown', sa.Text(), nullable=False),
    sa.Column('content_digest', sa.String(length=64), nullable=False),
    sa.Column('imported_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_privacy_policies')),
    sa.UniqueConstraint('content_digest', name=op.f('uq_privacy_policies_content_digest')),
    sa.UniqueConstraint('version', name=op.f('uq_privacy_policies_version'))
    )
    with op.batch_alter_table('privacy_policies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_privacy_policies_effective_on'), ['effective_on'], unique=False)

    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('policy_version_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_consent_events_policy_version_id_privacy_policies'), 'privacy_policies', ['policy_version_id'], ['id'])


def downgrade():
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_consent_events_policy_version_id_privacy_policies'), type_='foreignkey')
        batch_op.drop_column('policy_version_id')

    with op.batch_alter_table('privacy_policies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_privacy_policies_effective_on'))

    op.drop_table('privacy_policies')
