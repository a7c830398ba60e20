"""Campaign mails in the recipient's language: one rendering per language.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

Reviewed by hand. Additive only, so workers of the previous release keep
sending while this one is rolled out. ``campaigns.rendered_html`` and
``rendered_text`` stay the campaign's main rendering; the new nullable
``rendered_locale`` names its layout's language. Campaigns started before
this migration keep NULL there, which the code reads as "the default
language": that is what they were rendered in, so a campaign that is sending
during the upgrade goes on with exactly the content it started with.
``campaign_renderings`` holds the layout in each further language a
campaign's recipients need (primary key campaign and locale, deleted with the
campaign). No data is copied: existing campaigns simply have no further
renderings, and every recipient of them gets the main one, as before.
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('campaign_renderings',
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('locale', sa.String(length=8), nullable=False),
    sa.Column('html', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_campaign_renderings_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('campaign_id', 'locale', name=op.f('pk_campaign_renderings'))
    )
    # A nullable column without a default: an in-place ALTER TABLE on both backends.
    op.add_column('campaigns', sa.Column('rendered_locale', sa.String(length=8), nullable=True))


def downgrade():
    # The further renderings go: recipients of a campaign still sending then get
    # its main rendering, as before this migration.
    op.drop_table('campaign_renderings')
    # Not in batch mode: on SQLite that copies the table and drops the old one,
    # and dropping ``campaigns`` with foreign keys on would cascade to every
    # delivery. SQLite (3.35 or later) and PostgreSQL drop a plain column in place.
    op.drop_column('campaigns', 'rendered_locale')
