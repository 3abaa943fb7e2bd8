"""profile queue time and measured capacity

Revision ID: 5e6f7a8b9c0d
Revises: 3c1d2e4f5a6b
Create Date: 2026-11-30 12:00:00

A fragment profile now sums the queue time spans report (vLLM's gen_ai.latency.time_in_queue)
and counts the visits that reported it; planning reads a replica's capacity from the two.
Existing rows get 0 and 0: no visit of theirs said. The new table measured_capacity keeps, per
fragment and device class, the capacity of one replica last read from those waits.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = '5e6f7a8b9c0d'
down_revision: str | None = '3c1d2e4f5a6b'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('fragment_profile', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queue_visits', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('queue_ms_sum', sa.Float(), server_default='0', nullable=False))
    op.create_table(
        'measured_capacity',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('fragment_id', sa.Integer(), nullable=False),
        sa.Column('device_class', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('visits_per_s', sa.Float(), nullable=False),
        sa.Column('measured_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['fragment_id'], ['fragment.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('fragment_id', 'device_class', name='uq_measured_capacity'),
    )


def downgrade() -> None:
    op.drop_table('measured_capacity')
    with op.batch_alter_table('fragment_profile', schema=None) as batch_op:
        batch_op.drop_column('queue_ms_sum')
        batch_op.drop_column('queue_visits')
