"""The alembic migrations and the SQLModel models never disagree, on either backend."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from controlplane.db import downgrade, make_engine, upgrade


def test_upgrade_matches_models_and_downgrade_empties(empty_database_url):
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, SQLModel.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())

        downgrade(empty_database_url)
        engine.dispose()
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(empty_database_url)  # and back up again: the chain is repeatable
        assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
