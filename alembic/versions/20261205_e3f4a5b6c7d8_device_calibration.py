"""device calibration: what each device class was measured to achieve

Revision ID: e3f4a5b6c7d8
Revises: d2e3f4a5b6c7
Create Date: 2026-12-05 23:55:00

`heteroplane calibrate` records achieved matmul GFLOP/s per dtype and copy GB/s for a device
class, with each as a fraction of the class's datasheet; the planner prices the class by them
(optimizer.calibration). One row per class, replaced by the next calibration.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = 'e3f4a5b6c7d8'
down_revision: str | None = 'd2e3f4a5b6c7'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('device_calibration',
    sa.Column('float32_gflops', sa.Float(), nullable=False),
    sa.Column('bfloat16_gflops', sa.Float(), nullable=False),
    sa.Column('float16_gflops', sa.Float(), nullable=False),
    sa.Column('copy_gbps', sa.Float(), nullable=False),
    sa.Column('float32_efficiency', sa.Float(), nullable=False),
    sa.Column('bfloat16_efficiency', sa.Float(), nullable=False),
    sa.Column('float16_efficiency', sa.Float(), nullable=False),
    sa.Column('memory_efficiency', sa.Float(), nullable=False),
    sa.Column('threads', sa.Integer(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('measured_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_class_id', sa.Integer(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['device_class_id'], ['device_class.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('device_class_id')
    )


def downgrade() -> None:
    op.drop_table('device_calibration')
