"""Staff console: accounts, audit trail, console settings and CSV import jobs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

Reviewed by hand: staff e-mail is unique; audit entries keep the actor's
address as a copy and lose only the foreign key when an account is deleted
(SET NULL), so the trail outlives accounts; the audit indexes serve the
owner's filters (time, actor, action, object). Import jobs hold the CSV
itself so any worker on any host can run them.

The outbox learns two kinds (a campaign's test mail to a staff member, and the
data-export link) and a staff recipient: subscriber_id becomes nullable, and a
CHECK makes sure every row still has exactly one recipient. The kind CHECK is
replaced by name (ck_outbox_kind, from the naming convention).
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_KINDS = "'confirm', 'welcome'"
NEW_KINDS = "'confirm', 'welcome', 'campaign_test', 'data_export'"
ONE_RECIPIENT = "(subscriber_id IS NULL) <> (staff_user_id IS NULL)"


def upgrade():
    op.create_table('console_settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_console_settings'))
    )
    op.create_table('staff_users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.Enum('viewer', 'editor', 'owner', name='role', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('totp_secret', sa.String(length=64), nullable=True),
    sa.Column('totp_last_step', sa.Integer(), nullable=True),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('session_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_login_at', sa.DateTime(), nullable=True),
    sa.Column('password_changed_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_users')),
    sa.UniqueConstraint('email', name=op.f('uq_staff_users_email'))
    )
    op.create_table('audit_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('occurred_at', sa.DateTime(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('actor_email', sa.String(length=320), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('object_type', sa.String(length=32), nullable=False),
    sa.Column('object_id', sa.String(length=64), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['staff_users.id'], name=op.f('fk_audit_entries_actor_id_staff_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_entries'))
    )
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_entries_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entries_actor_id'), ['actor_id'], unique=False)
        batch_op.create_index('ix_audit_entries_object', ['object_type', 'object_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entries_occurred_at'), ['occurred_at'], unique=False)

    op.create_table('import_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('list_id', sa.Integer(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('content', sa.Text(), nullable=True),
    sa.Column('mapping', sa.JSON(), nullable=True),
    sa.Column('status', sa.Enum('uploaded', 'queued', 'running', 'done', 'failed', name='status', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('total_rows', sa.Integer(), nullable=False),
    sa.Column('processed_rows', sa.Integer(), nullable=False),
    sa.Column('imported_active', sa.Integer(), nullable=False),
    sa.Column('imported_pending', sa.Integer(), nullable=False),
    sa.Column('unchanged', sa.Integer(), nullable=False),
    sa.Column('errors', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('lease_until', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['staff_users.id'], name=op.f('fk_import_jobs_created_by_id_staff_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['list_id'], ['lists.id'], name=op.f('fk_import_jobs_list_id_lists')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_import_jobs'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('staff_user_id', sa.Integer(), nullable=True))
        batch_op.alter_column('subscriber_id', existing_type=sa.INTEGER(), nullable=True)
        batch_op.create_foreign_key(batch_op.f('fk_outbox_staff_user_id_staff_users'), 'staff_users', ['staff_user_id'], ['id'], ondelete='CASCADE')
        batch_op.drop_constraint(op.f('ck_outbox_kind'), type_='check')
        batch_op.create_check_constraint('kind', sa.text(f"kind IN ({NEW_KINDS})"))
        batch_op.create_check_constraint('one_recipient', sa.text(ONE_RECIPIENT))


def downgrade():
    op.execute("DELETE FROM outbox WHERE subscriber_id IS NULL OR kind NOT IN ('confirm', 'welcome')")
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_outbox_one_recipient'), type_='check')
        batch_op.drop_constraint(op.f('ck_outbox_kind'), type_='check')
        batch_op.create_check_constraint('kind', sa.text(f"kind IN ({OLD_KINDS})"))
        batch_op.drop_constraint(batch_op.f('fk_outbox_staff_user_id_staff_users'), type_='foreignkey')
        batch_op.alter_column('subscriber_id', existing_type=sa.INTEGER(), nullable=False)
        batch_op.drop_column('staff_user_id')
    op.drop_table('import_jobs')
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_entries_occurred_at'))
        batch_op.drop_index('ix_audit_entries_object')
        batch_op.drop_index(batch_op.f('ix_audit_entries_actor_id'))
        batch_op.drop_index(batch_op.f('ix_audit_entries_action'))

    op.drop_table('audit_entries')
    op.drop_table('staff_users')
    op.drop_table('console_settings')
