"""placement choices: why each fragment is where it is

Revision ID: a7b8c9d0e1f2
Revises: f6a7b8c9d0e1
Create Date: 2026-12-05 11:37:14

The optimizer explains every plan (the deciding constraint, the runner-up class and its $/h
difference) but nothing kept it: the console's "why here" and GET /placements/{v} read it from here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = 'a7b8c9d0e1f2'
down_revision: str | None = 'f6a7b8c9d0e1'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('placement_choice',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('placement_id', sa.Integer(), nullable=False),
    sa.Column('fragment_id', sa.Integer(), nullable=False),
    sa.Column('binding', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('runner_up', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('runner_up_delta_usd_per_hour', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['fragment_id'], ['fragment.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['placement_id'], ['placement.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('placement_id', 'fragment_id', name='uq_placement_choice')
    )
    with op.batch_alter_table('placement_choice', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_placement_choice_placement_id'), ['placement_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('placement_choice', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_placement_choice_placement_id'))

    op.drop_table('placement_choice')
