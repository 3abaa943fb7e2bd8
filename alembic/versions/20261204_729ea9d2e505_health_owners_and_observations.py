"""health owned per source, and the log of what ran

Revision ID: 729ea9d2e505
Revises: a7c3e91b5d20
Create Date: 2026-12-04 18:00:00

Node and device health get one column per owner, so no source overwrites another: the actuator's
node.ready / node.reported_at / device.ready, telemetry's device.xid_errors (existing) and
device.xid_at, and the operator's node.cordoned / device.cordoned. node.healthy and
device.healthy stay, derived from them (all owners allow it).

Existing rows: a node stored unhealthy was set so by an operator (the API) or by the actuator
counting no healthy device; it becomes cordoned, the safe reading (an operator uncordons it
with one PATCH). A device stored unhealthy with no XID becomes not ready; the actuator's next
report sets it again.

observation and observation_item record what the actuator reported running, whenever it
changed; metering bills these instead of the applied placements.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = '729ea9d2e505'
down_revision: str | None = 'a7c3e91b5d20'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain '1' / '0' defaults (true / false on both backends) let SQLite add the columns in place.
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ready', sa.Boolean(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('reported_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('cordoned', sa.Boolean(), server_default='0', nullable=False))
    with op.batch_alter_table('device', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ready', sa.Boolean(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('xid_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('cordoned', sa.Boolean(), server_default='0', nullable=False))
    node = sa.table('node', sa.column('healthy', sa.Boolean()), sa.column('cordoned', sa.Boolean()))
    op.execute(node.update().where(node.c.healthy == sa.false()).values(cordoned=True))
    device = sa.table(
        'device', sa.column('healthy', sa.Boolean()), sa.column('ready', sa.Boolean()), sa.column('xid_errors', sa.Integer())
    )
    op.execute(device.update().where(device.c.healthy == sa.false(), device.c.xid_errors == 0).values(ready=False))
    op.create_table(
        'observation',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('observed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_observation_observed_at'), 'observation', ['observed_at'], unique=False)
    op.create_table(
        'observation_item',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('observation_id', sa.Integer(), nullable=False),
        sa.Column('fragment_id', sa.Integer(), nullable=False),
        sa.Column('device_class_id', sa.Integer(), nullable=False),
        sa.Column('phase', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column('replicas', sa.Integer(), nullable=False),
        sa.Column('slices', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['device_class_id'], ['device_class.id'], ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['fragment_id'], ['fragment.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['observation_id'], ['observation.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_observation_item_fragment_id'), 'observation_item', ['fragment_id'], unique=False)
    op.create_index(op.f('ix_observation_item_observation_id'), 'observation_item', ['observation_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_observation_item_observation_id'), table_name='observation_item')
    op.drop_index(op.f('ix_observation_item_fragment_id'), table_name='observation_item')
    op.drop_table('observation_item')
    op.drop_index(op.f('ix_observation_observed_at'), table_name='observation')
    op.drop_table('observation')
    # In place (SQLite >= 3.35 drops a column itself): rebuilding node would drop a table devices reference.
    with op.batch_alter_table('device', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('cordoned')
        batch_op.drop_column('xid_at')
        batch_op.drop_column('ready')
    with op.batch_alter_table('node', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('cordoned')
        batch_op.drop_column('reported_at')
        batch_op.drop_column('ready')
