"""Database engine, sessions and schema upgrades (SQLite by default, PostgreSQL in production)."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Table, cast, event, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlmodel import Session, create_engine

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"


def migrations_dir() -> Path:
    """The repository's alembic folder; heteroplane runs from a source checkout (`pip install -e .`)."""
    if not (ALEMBIC_DIR / "versions").is_dir():
        raise RuntimeError(
            f"heteroplane's migrations are not at {ALEMBIC_DIR}; install from a source checkout with "
            "`pip install -e .` so the top-level alembic/ folder ships beside the code"
        )
    return ALEMBIC_DIR


def int_sum(column):
    """SUM of an integer column as BIGINT: PostgreSQL would answer NUMERIC, which Python sees as Decimal."""
    return cast(func.sum(column), BigInteger)


def epoch_seconds(session: Session, column):
    """Whole seconds since 1970 of a UTC timestamp column, as an integer SQL expression (for bucketing
    in the database: integer division of it by a bucket's seconds is the bucket's index)."""
    if session.get_bind().dialect.name == "sqlite":
        return cast(func.strftime("%s", column), BigInteger)
    return cast(func.extract("epoch", column), BigInteger)


def dialect_insert(session: Session, table: Table):
    """INSERT for the session's backend, with `on_conflict_do_update` (SQLite and PostgreSQL both have it)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"heteroplane stores data on sqlite or postgresql, not {dialect}")


def upsert_latest(session: Session, table: Table, unique: list[str], rows: list[dict[str, Any]]) -> None:
    """Insert `rows`, or overwrite every other column of the stored row with the same `unique` values."""
    if not rows:
        return
    rows.sort(key=lambda row: tuple(row[name] for name in unique))  # one lock order for concurrent writers
    stmt = dialect_insert(session, table).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=unique,
        set_={name: stmt.excluded[name] for name in rows[0] if name not in unique},
    )
    session.execute(stmt)


BACKGROUND_CONNECTIONS = 4  # the ingest writer, the reconciler, the Prometheus puller, one spare
POOL_WAIT_S = 2.0  # a request waits this long for a connection, then answers 503 (it never queues for long)


def pool_size(concurrency: int) -> int:
    """Connections for a process serving `concurrency` requests at once: one each, plus its loops'."""
    return concurrency + BACKGROUND_CONNECTIONS


def display_url(url: str) -> str:
    """`url` fit to print: its password shown as *** and its query (where libpq also takes a
    password) left off; what remains names the database: driver, user, host, port, name or file."""
    return make_url(url).set(query={}).render_as_string(hide_password=True)


def make_engine(url: str, connections: int = pool_size(16)) -> Engine:
    """An engine for `url` with a pool of exactly `connections` (no overflow: sized with the worker
    threads from one setting, see pool_size); SQLite gets foreign keys, WAL and a busy timeout for
    concurrent writers."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=connections, max_overflow=0, pool_timeout=POOL_WAIT_S)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    engine = create_engine(url, pool_size=connections, max_overflow=0, pool_timeout=POOL_WAIT_S)
    ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_S = 5.0


def ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection with `SELECT 1` when it is taken after PING_AFTER_IDLE_S unused, and
    replace it if the check fails (SQLAlchemy's pessimistic disconnect handling, from its pool
    events). A connection used moments ago is not checked: a busy API would spend a round trip per
    request on it, and a connection that died since fails its query and the pool is invalidated."""

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection, record) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_connection, record, _proxy) -> None:
        if time.monotonic() - record.info.get("returned_at", 0.0) < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)  # in autocommit: it leaves no transaction open
        except Exception as exc:
            raise DisconnectionError(f"pooled connection failed its check: {type(exc).__name__}") from exc


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error, so nothing is half-written."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str):
    """Alembic configuration pointing at the repository's migrations and at `url`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at `url` up to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Take the schema at `url` down to `revision`."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)
