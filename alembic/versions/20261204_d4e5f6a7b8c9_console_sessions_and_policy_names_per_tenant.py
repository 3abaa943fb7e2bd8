"""server-side console sessions; migration-policy names unique per tenant, not across the fleet

Revision ID: d4e5f6a7b8c9
Revises: c9ccb5dc0797
Create Date: 2026-12-04 20:40:00

console_session keeps a SHA-256 of each console cookie's random id and the token it signed in
with: logout deletes the row, revoking or expiring the token ends it, expires_at ends it on the
server. A policy name was unique across the fleet, so a 409 told one tenant another's policy
name; it is now unique within a tenant (a workload's policy records its workload's tenant, which
existing rows get here) and among fleet-wide policies.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = 'd4e5f6a7b8c9'
down_revision: str | None = 'c9ccb5dc0797'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The initial schema left the name's unique constraint unnamed: PostgreSQL calls it this, and on
# SQLite batch mode reflects it under the naming convention below.
_PG_NAME_KEY = 'migration_policy_name_key'
_UQ_CONVENTION = {'uq': 'uq_%(table_name)s_%(column_0_name)s'}
_FLEET_ONLY = sa.text('tenant_id IS NULL')


def upgrade() -> None:
    op.create_table(
        'console_session',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('id_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('token_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['token_id'], ['api_token.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('id_hash'),
    )
    with op.batch_alter_table('console_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_session_token_id'), ['token_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_console_session_expires_at'), ['expires_at'], unique=False)

    op.execute(sa.text(
        'UPDATE migration_policy SET tenant_id = (SELECT workload.tenant_id FROM workload '
        'WHERE workload.id = migration_policy.workload_id) WHERE workload_id IS NOT NULL AND tenant_id IS NULL'))
    sqlite = op.get_bind().dialect.name == 'sqlite'
    with op.batch_alter_table('migration_policy', schema=None, naming_convention=_UQ_CONVENTION) as batch_op:
        batch_op.drop_constraint('uq_migration_policy_name' if sqlite else _PG_NAME_KEY, type_='unique')
        batch_op.create_unique_constraint('uq_migration_policy_tenant_name', ['tenant_id', 'name'])
    op.create_index('uq_migration_policy_fleet_name', 'migration_policy', ['name'], unique=True,
                    sqlite_where=_FLEET_ONLY, postgresql_where=_FLEET_ONLY)


def downgrade() -> None:
    op.drop_index('uq_migration_policy_fleet_name', table_name='migration_policy')
    sqlite = op.get_bind().dialect.name == 'sqlite'
    with op.batch_alter_table('migration_policy', schema=None) as batch_op:
        batch_op.drop_constraint('uq_migration_policy_tenant_name', type_='unique')
        # Names unique across the fleet again: fails, naming the duplicates' constraint, where two
        # tenants now share a policy name (rename one first).
        batch_op.create_unique_constraint('uq_migration_policy_name' if sqlite else _PG_NAME_KEY, ['name'])
    op.drop_table('console_session')
