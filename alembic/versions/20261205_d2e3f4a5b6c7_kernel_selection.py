"""kernel selection: the kernel each (op, device class, dtype, shape bucket) runs, with its evidence

Revision ID: d2e3f4a5b6c7
Revises: c1d2e3f4a5b6
Create Date: 2026-12-05 23:50:00

A new table, written by `heteroplane kernels verify|bench` (kernels.registry); nothing to backfill.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = 'd2e3f4a5b6c7'
down_revision: str | None = 'c1d2e3f4a5b6'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('kernel_selection',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('op', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('device_class', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('dtype', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('shape_bucket', sa.Integer(), nullable=False),
    sa.Column('shape', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('chosen', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('speedup', sa.Float(), nullable=False),
    sa.Column('spread', sa.Float(), nullable=False),
    sa.Column('reference_s', sa.Float(), nullable=False),
    sa.Column('atol', sa.Float(), nullable=False),
    sa.Column('rtol', sa.Float(), nullable=False),
    sa.Column('seeds', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('torch_version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('device', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('measured_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('op', 'device_class', 'dtype', 'shape_bucket', name='uq_kernel_selection')
    )
    with op.batch_alter_table('kernel_selection', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_kernel_selection_device_class'), ['device_class'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('kernel_selection', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_kernel_selection_device_class'))

    op.drop_table('kernel_selection')
