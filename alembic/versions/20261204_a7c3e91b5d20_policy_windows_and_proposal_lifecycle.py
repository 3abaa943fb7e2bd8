"""maintenance windows, proposal TTL and supersede thresholds; what a proposal was made against

Revision ID: a7c3e91b5d20
Revises: 795ee9d5df21
Create Date: 2026-12-04 17:30:00

Migration policies gain maintenance windows (none: moves at any time), a proposal TTL (one
hour), the thresholds by which a new plan supersedes an open proposal (10% cost, 20%
demand) and a demand margin (hysteresis; 0, off). A placement records the version it was made against and the fleet's demand then, so
that a proposal can tell when it no longer holds (existing rows: none and 0).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = 'a7c3e91b5d20'
down_revision: str | None = '795ee9d5df21'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('migration_policy', schema=None) as batch_op:
        batch_op.add_column(sa.Column('maintenance_windows', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('proposal_ttl_s', sa.Integer(), server_default='3600', nullable=False))
        batch_op.add_column(sa.Column('supersede_cost_pct', sa.Float(), server_default='10', nullable=False))
        batch_op.add_column(sa.Column('supersede_demand_pct', sa.Float(), server_default='20', nullable=False))
        batch_op.add_column(sa.Column('demand_margin_pct', sa.Float(), server_default='0', nullable=False))
    with op.batch_alter_table('placement', schema=None) as batch_op:
        batch_op.add_column(sa.Column('base_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('demand_rps', sa.Float(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('placement', schema=None) as batch_op:
        batch_op.drop_column('demand_rps')
        batch_op.drop_column('base_version')
    with op.batch_alter_table('migration_policy', schema=None) as batch_op:
        batch_op.drop_column('demand_margin_pct')
        batch_op.drop_column('supersede_demand_pct')
        batch_op.drop_column('supersede_cost_pct')
        batch_op.drop_column('proposal_ttl_s')
        batch_op.drop_column('maintenance_windows')
