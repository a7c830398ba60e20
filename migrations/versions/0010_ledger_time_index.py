"""Index the ledger by the time events happened.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

Reviewed by hand. Since the signup intake (0009), a signup's ledger events
carry the request's time but are appended when a worker takes the row, so
``seq`` order is append order, not time order: an event appended later may have
happened earlier. The dashboard used to find the first event of its 90-day
window by bisecting ``seq``; it now reads the window through this index on
``consent_events.occurred_at`` instead. The intake has no upper bound on how
long a row waits (a stopped worker), so bounding the bisection by a maximum
delay would not be correct.

An index only, so the previous release keeps running while this one is
rolled out: it never relies on the index, and every insert maintains it.
On PostgreSQL a plain CREATE INDEX holds a SHARE lock on ``consent_events``
while it builds, so ledger appends (signups of the previous release,
confirmations, unsubscribes) wait for it. On a large ledger, build it
beforehand without blocking writes::

    CREATE INDEX CONCURRENTLY ix_consent_events_occurred_at
        ON consent_events (occurred_at);

and this migration then finds it and does nothing (IF NOT EXISTS). Should a
concurrent build fail, drop the invalid index and build it again before
upgrading: IF NOT EXISTS goes by the name and would accept the invalid one.

Downgrade drops the index; the dashboard of a release before this one does
not use it.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(
        op.f("ix_consent_events_occurred_at"),
        "consent_events",
        ["occurred_at"],
        unique=False,
        if_not_exists=True,
    )


def downgrade():
    op.drop_index(
        op.f("ix_consent_events_occurred_at"), table_name="consent_events", if_exists=True
    )
