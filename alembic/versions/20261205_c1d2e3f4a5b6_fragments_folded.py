"""fragments folded: per-workload counts of names folded past the fragment limit

Revision ID: c1d2e3f4a5b6
Revises: abce70d7ee34
Create Date: 2026-12-05 12:50:00

A workload may hold at most HETEROPLANE_MAX_FRAGMENTS_PER_WORKLOAD fragments; names beyond it fold
into one overflow fragment per kind, and the workload counts how many names and visits were folded.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = 'c1d2e3f4a5b6'
down_revision: str | None = 'abce70d7ee34'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('workload', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fragments_folded', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('visits_folded', sa.BigInteger(), server_default='0', nullable=False))


def downgrade() -> None:
    # In place (SQLite >= 3.35 drops a column itself): rebuilding workload would drop a table whose
    # fragments, edges and SLAs cascade from it.
    with op.batch_alter_table('workload', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('visits_folded')
        batch_op.drop_column('fragments_folded')
