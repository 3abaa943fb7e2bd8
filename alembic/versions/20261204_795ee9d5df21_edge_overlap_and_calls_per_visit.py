"""edge overlap, calls per parent visit, and device classes sold by the slice

Revision ID: 795ee9d5df21
Revises: 5e6f7a8b9c0d
Create Date: 2026-12-04 16:00:00

An edge now counts the calls that overlapped another call of the same parent visit in time
(existing edges: 0, none tallied yet), and the new table edge_visit_calls counts, per edge and
number of calls, the parent visits that made exactly that many: planning reads whether an
edge's calls run concurrently and their p99 per parent visit from the two.

A device class says whether it is paid per slice. The catalog sells only CPU classes that way
(by the core), so existing classes with cores get true and accelerators false, as a fresh
installation seeds them.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '795ee9d5df21'
down_revision: str | None = '5e6f7a8b9c0d'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('edge', schema=None) as batch_op:
        batch_op.add_column(sa.Column('calls_overlapping', sa.BigInteger(), server_default='0', nullable=False))
    op.create_table(
        'edge_visit_calls',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('edge_id', sa.Integer(), nullable=False),
        sa.Column('calls', sa.Integer(), nullable=False),
        sa.Column('visits', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['edge_id'], ['edge.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('edge_id', 'calls', name='uq_edge_visit_calls'),
    )
    # A plain '0' default (false on both backends) lets SQLite add the column in place: rebuilding
    # device_class would drop a table that nodes and placements still reference.
    with op.batch_alter_table('device_class', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sold_by_slice', sa.Boolean(), server_default='0', nullable=False))
    device_class = sa.table('device_class', sa.column('cores', sa.Integer()), sa.column('sold_by_slice', sa.Boolean()))
    op.execute(device_class.update().where(device_class.c.cores > 0).values(sold_by_slice=True))


def downgrade() -> None:
    # In place (SQLite >= 3.35 drops a column itself), for the same reason as the upgrade's default.
    with op.batch_alter_table('device_class', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('sold_by_slice')
    op.drop_table('edge_visit_calls')
    with op.batch_alter_table('edge', schema=None) as batch_op:
        batch_op.drop_column('calls_overlapping')
