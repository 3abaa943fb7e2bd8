"""usage ledger: phases and token types on usage, idle capacity, and the metering watermark

Revision ID: abce70d7ee34
Revises: b8c9d0e1f2a3
Create Date: 2026-12-05 11:49:03

Usage is now metered per phase (a split LLM fragment's prefill and decode pools on one class are
two rows, so the phase joins the unique key), with its tokens split by type; every existing row is
a whole replica's (phase '') with no typed tokens. Idle capacity gets its own table, no tenant's.
The watermark starts empty: the ledger then meters forward from the first observation, a few
hours per cycle, rewriting the minutes the old metering wrote (controlplane.metering).
Downgrading fails on a database whose usage holds both pools of a fragment on one class in one
minute (the old key cannot hold them): delete those rows first.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = 'abce70d7ee34'
down_revision: str | None = 'b8c9d0e1f2a3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOKEN_COLUMNS = ('llm_input_tokens', 'llm_output_tokens', 'embedding_tokens', 'rerank_tokens')


def upgrade() -> None:
    op.create_table('metering_watermark',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('last_closed_minute', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('idle_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('minute', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('device_class_id', sa.Integer(), nullable=False),
    sa.Column('device_seconds_healthy', sa.Float(), nullable=False),
    sa.Column('device_seconds_allocated', sa.Float(), nullable=False),
    sa.Column('device_seconds_idle', sa.Float(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['device_class_id'], ['device_class.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('minute', 'device_class_id', name='uq_idle_minute')
    )
    with op.batch_alter_table('idle_record', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idle_record_minute'), ['minute'], unique=False)

    with op.batch_alter_table('usage_record', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phase', sqlmodel.sql.sqltypes.AutoString(length=8), server_default='',
                                      nullable=False))
        for name in TOKEN_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.BigInteger(), server_default='0', nullable=False))
        batch_op.drop_constraint('uq_usage_minute', type_='unique')
        batch_op.create_unique_constraint('uq_usage_minute', ['minute', 'fragment_id', 'device_class_id', 'phase'])


def downgrade() -> None:
    with op.batch_alter_table('usage_record', schema=None) as batch_op:
        batch_op.drop_constraint('uq_usage_minute', type_='unique')
        batch_op.create_unique_constraint('uq_usage_minute', ['minute', 'fragment_id', 'device_class_id'])
        for name in reversed(TOKEN_COLUMNS):
            batch_op.drop_column(name)
        batch_op.drop_column('phase')

    with op.batch_alter_table('idle_record', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idle_record_minute'))

    op.drop_table('idle_record')
    op.drop_table('metering_watermark')
