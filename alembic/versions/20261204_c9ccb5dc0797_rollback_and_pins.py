"""placements keep created_at and record when applied and who decided; rollbacks and fragment pins

Revision ID: c9ccb5dc0797
Revises: a7c3e91f04d2
Create Date: 2026-12-04 17:30:00

A placement's created_at no longer moves when it is applied: applied_at says when actuation
succeeded (metering counts a placement from then), and existing applied placements get
applied_at = created_at, which is what created_at meant for them until now. decided_by and
decided_at record who approved or rejected a proposal (or asked for a rollback), rollback_to the
earlier version a rollback re-applies. A migration records the placement that rolled it back
automatically, so none is rolled back twice. fragment_pin holds a fragment on device classes
until an operator clears it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = 'c9ccb5dc0797'
down_revision: str | None = 'a7c3e91f04d2'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain nullable columns: SQLite adds them in place (placement is referenced by other tables).
    with op.batch_alter_table('placement', schema=None) as batch_op:
        batch_op.add_column(sa.Column('applied_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('decided_by', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('decided_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('rollback_to', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_placement_applied_at'), ['applied_at'], unique=False)
    placement = sa.table('placement', sa.column('state', sa.String()), sa.column('created_at', sa.DateTime()),
                         sa.column('applied_at', sa.DateTime()))
    op.execute(placement.update().where(placement.c.state == 'applied').values(applied_at=placement.c.created_at))
    with op.batch_alter_table('migration', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rollback_placement_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_migration_rollback_placement_id_placement', 'placement',
                                    ['rollback_placement_id'], ['id'], ondelete='SET NULL')
    op.create_table(
        'fragment_pin',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('fragment_id', sa.Integer(), nullable=False),
        sa.Column('device_classes', sa.JSON(), nullable=False),
        sa.Column('reason', sa.String(length=500), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['fragment_id'], ['fragment.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('fragment_id'),
    )


def downgrade() -> None:
    op.drop_table('fragment_pin')
    with op.batch_alter_table('migration', schema=None) as batch_op:
        batch_op.drop_constraint('fk_migration_rollback_placement_id_placement', type_='foreignkey')
        batch_op.drop_column('rollback_placement_id')
    # In place (SQLite >= 3.35 drops a column itself): rebuilding placement would drop a table others reference.
    with op.batch_alter_table('placement', schema=None, recreate='never') as batch_op:
        batch_op.drop_index(batch_op.f('ix_placement_applied_at'))
        batch_op.drop_column('rollback_to')
        batch_op.drop_column('decided_at')
        batch_op.drop_column('decided_by')
        batch_op.drop_column('applied_at')
