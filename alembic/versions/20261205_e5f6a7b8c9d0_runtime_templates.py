"""runtime templates: what a workload's (or one fragment's) replicas run

Revision ID: e5f6a7b8c9d0
Revises: d4e5f6a7b8c9
Create Date: 2026-12-05 08:19:40

One row per workload (fragment_id null) and per fragment with its own; the partial unique index
keeps one workload-wide template per workload (a unique constraint treats nulls as distinct).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = 'e5f6a7b8c9d0'
down_revision: str | None = 'd4e5f6a7b8c9'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('runtime_template',
    sa.Column('image', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('command', sa.JSON(), nullable=False),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('env', sa.JSON(), nullable=False),
    sa.Column('secret_env', sa.JSON(), nullable=False),
    sa.Column('ports', sa.JSON(), nullable=False),
    sa.Column('cpu_millicores', sa.Integer(), nullable=True),
    sa.Column('memory_mib', sa.Integer(), nullable=True),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workload_id', sa.Integer(), nullable=False),
    sa.Column('fragment_id', sa.Integer(), nullable=True),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['fragment_id'], ['fragment.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workload_id'], ['workload.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('workload_id', 'fragment_id', name='uq_runtime_template_fragment')
    )
    with op.batch_alter_table('runtime_template', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_runtime_template_workload_id'), ['workload_id'], unique=False)
        batch_op.create_index('uq_runtime_template_workload', ['workload_id'], unique=True, sqlite_where=sa.text('fragment_id IS NULL'), postgresql_where=sa.text('fragment_id IS NULL'))



def downgrade() -> None:
    with op.batch_alter_table('runtime_template', schema=None) as batch_op:
        batch_op.drop_index('uq_runtime_template_workload', sqlite_where=sa.text('fragment_id IS NULL'), postgresql_where=sa.text('fragment_id IS NULL'))
        batch_op.drop_index(batch_op.f('ix_runtime_template_workload_id'))

    op.drop_table('runtime_template')
