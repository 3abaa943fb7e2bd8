"""placement phases: prefill and decode pools of split LLM fragments

Revision ID: 3c1d2e4f5a6b
Revises: 700bb9b8062b
Create Date: 2026-11-30 11:00:00

A placement item and a migration now say which phase their replicas serve: '' for whole
replicas (every existing row), 'prefill' or 'decode' for the pools of a split fragment. A
fragment may have a prefill and a decode pool on the same class, so the phase joins the
placement item's unique key. Downgrading fails on a database that holds such pairs (the old
key cannot hold them): delete those placements first.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = '3c1d2e4f5a6b'
down_revision: str | None = '700bb9b8062b'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('placement_item', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phase', sqlmodel.sql.sqltypes.AutoString(length=8), server_default='',
                                      nullable=False))
        batch_op.drop_constraint('uq_placement_item', type_='unique')
        batch_op.create_unique_constraint('uq_placement_item',
                                          ['placement_id', 'fragment_id', 'device_class_id', 'phase'])
    with op.batch_alter_table('migration', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phase', sqlmodel.sql.sqltypes.AutoString(length=8), server_default='',
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('migration', schema=None) as batch_op:
        batch_op.drop_column('phase')
    with op.batch_alter_table('placement_item', schema=None) as batch_op:
        batch_op.drop_constraint('uq_placement_item', type_='unique')
        batch_op.create_unique_constraint('uq_placement_item', ['placement_id', 'fragment_id', 'device_class_id'])
        batch_op.drop_column('phase')
