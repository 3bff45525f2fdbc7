"""Opening the database: engine settings, durability, and migrations to the current schema."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError

from minetune.errors import StoreError
from minetune.files import private_file

if TYPE_CHECKING:  # the ORM loads with the first Database: minetune.store.stats runs on Core alone
    from sqlalchemy.orm import Session

# The newest migration in store/migrations/versions; tests check it matches Alembic's head.
HEAD_REVISION = "0012_evals"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL makes each commit durable in WAL mode: recorded feedback survives a power cut.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        # Erasure (minetune forget): deleted rows are zeroed, not left in free pages.
        cursor.execute("PRAGMA secure_delete=ON")
    finally:
        cursor.close()


def _sqlite_autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own implicit BEGIN is deferred; switch it off so ``_sqlite_begin`` decides.
    dbapi_conn.isolation_level = None


# Whether the transaction being begun must reach the disk before its commit returns (see
# Database.transaction); SQLite's safety level can only change between transactions.
_durable: ContextVar[bool] = ContextVar("minetune_durable_commit", default=True)


def _sqlite_begin(conn: Connection) -> None:
    """Every transaction takes SQLite's write lock up front (``BEGIN IMMEDIATE``), waiting up to the
    busy timeout: read-then-write numbering (turn index, attempt number, version number) cannot
    interleave, and a deferred transaction can never fail to upgrade with "database is locked".
    The price: transactions that only read queue behind a writer too, so keep every one short."""
    conn.exec_driver_sql("PRAGMA synchronous=FULL" if _durable.get() else "PRAGMA synchronous=NORMAL")
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, full sync, foreign keys and immediate transactions."""
    try:
        if url.startswith("sqlite"):
            db_path = url.split("///", 1)[-1]
            if db_path and db_path != ":memory:":
                # 0600 before SQLite opens it: its -wal and -shm files take the database's mode.
                private_file(db_path)
                for suffix in ("-wal", "-shm", "-journal"):
                    if Path(db_path + suffix).exists():
                        private_file(db_path + suffix)
            engine = create_engine(url)
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "connect", _sqlite_autocommit_driver)
            event.listen(engine, "begin", _sqlite_begin)
            return engine
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StoreError(f"Invalid database URL {_redact(url)!r}: {exc}") from exc


def _redact(url: str) -> str:
    """Hide a password in a database URL before it is shown to anyone."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def _current_revision(conn: Connection) -> str | None:
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" not in tables:
        if tables - {"sqlite_sequence"}:
            raise StoreError(
                "The database already has tables that minetune did not create; "
                "point MINETUNE_HOME or MINETUNE_DATABASE_URL at an empty or minetune database."
            )
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op, without importing Alembic, when current)."""
    with engine.connect() as conn:
        if _current_revision(conn) == HEAD_REVISION:
            return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:  # batch migrations recreate tables; foreign keys are checked again afterwards
            _outside_transaction(conn, "PRAGMA foreign_keys=OFF")
        with conn.begin():
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                raise StoreError("The database has broken references after migrating; it was left unchanged.")
        if sqlite:
            _outside_transaction(conn, "PRAGMA foreign_keys=ON")


def _outside_transaction(conn: Connection, statement: str) -> None:
    """Run a SQLite PRAGMA that is a no-op inside a transaction, on the driver connection directly
    (it is in autocommit mode: transactions are begun only by ``_sqlite_begin``)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute(statement)


def open_engine(url: str) -> Engine:
    """Create the engine, check the database is usable, and migrate it."""
    engine = make_engine(url)
    try:
        migrate(engine)
    except DatabaseError as exc:
        engine.dispose()
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        hint = (
            "Move the file away or set MINETUNE_HOME to another folder."
            if url.startswith("sqlite")
            else "Check MINETUNE_DATABASE_URL and that the server is running."
        )
        if isinstance(exc, OperationalError) and not url.startswith("sqlite"):
            raise StoreError(f"Cannot connect to {_redact(url)}: {detail}. {hint}") from exc
        raise StoreError(f"Cannot open the minetune database at {_redact(url)}: {detail}. {hint}") from exc
    return engine


class Database:
    """An engine plus a session factory whose objects stay readable after commit."""

    def __init__(self, engine: Engine) -> None:
        from sqlalchemy.orm import sessionmaker

        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Session]:
        """A session that commits when the block ends and rolls back if it raises.

        On SQLite a commit is synced to disk before it returns (``synchronous=FULL``): feedback
        survives a power cut. ``durable=False`` (a model's answer on the proxy's hot path) commits
        in WAL with ``synchronous=NORMAL``: safe if the process dies, but the newest such commits
        may be lost if the machine loses power. PostgreSQL commits are always durable."""
        token = _durable.set(durable)
        try:
            with self._sessions() as session, session.begin():
                yield session
        finally:
            _durable.reset(token)

    def close(self) -> None:
        self.engine.dispose()
