"""leader epoch: the fencing token of the reconciler's leader lock

Revision ID: f6a7b8c9d0e1
Revises: e5f6a7b8c9d0
Create Date: 2026-12-05 08:35:00

The advisory lock alone says who leads now, not whether a write comes from the leader of now: a
leader whose lock was lost mid-cycle would still write. Each acquisition increments this row's
epoch, and a placement is written only in a transaction that finds the epoch unchanged
(controlplane.leadership).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = 'f6a7b8c9d0e1'
down_revision: str | None = 'e5f6a7b8c9d0'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('leader_epoch',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('epoch', sa.BigInteger(), nullable=False),
    sa.Column('acquired_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('leader_epoch')
