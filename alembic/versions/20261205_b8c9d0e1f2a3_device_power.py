"""device power: DCGM's power draw per device and minute, for the console's fleet page

Revision ID: b8c9d0e1f2a3
Revises: a7b8c9d0e1f2
Create Date: 2026-12-05 12:00:00

The Prometheus puller read utilisation, memory and XID from DCGM but not DCGM_FI_DEV_POWER_USAGE;
operators read power beside the others. Nullable, as every reading is: NULL when not reported.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = 'b8c9d0e1f2a3'
down_revision: str | None = 'a7b8c9d0e1f2'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('device_telemetry', sa.Column('power_w', sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column('device_telemetry', 'power_w')
