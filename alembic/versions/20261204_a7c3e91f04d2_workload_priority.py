"""workload priority class

Revision ID: a7c3e91f04d2
Revises: 729ea9d2e505
Create Date: 2026-12-04 17:30:00

A workload has a priority class, realtime or batch: when no plan meets every SLA, the planner
queues and sheds batch workloads first (optimizer.degrade). Existing workloads are realtime,
which is how they were planned until now.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = 'a7c3e91f04d2'
down_revision: str | None = '729ea9d2e505'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('workload', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.String(length=16), server_default='realtime', nullable=False))


def downgrade() -> None:
    # In place (SQLite >= 3.35 drops a column itself): rebuilding workload would drop a table whose
    # fragments, edges and SLAs cascade from it.
    with op.batch_alter_table('workload', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('priority')
