"""Engines, sessions and schema migrations for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from slidebank.errors import StorageError

# Alembic is imported only when a catalogue needs migrating (or a test asks about
# revisions): for one already at the newest revision, the import (about 0.1 s) and alembic's
# own check (about 0.1 s) were most of opening a repository, which every command does.
if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def newest_revision() -> str:
    """The newest migration's revision: each file in ``migrations/versions`` is named after
    its revision ("0007_annotation_grid_keys.py" is revision "0007"), each revises the one
    before (``tests/catalog/test_migrations.py`` checks both)."""
    return max(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def make_engine(url: str) -> Engine:
    """An engine for the catalogue URL, with SQLite set up for safe concurrent use."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


IMMEDIATE = "slidebank_immediate"


def _sqlite_begin(connection: Any) -> None:
    # Write transactions take SQLite's write lock when they begin (waiting up to the busy
    # timeout): one that read first and wrote later would otherwise fail at once when
    # another writer committed in between (SQLITE_BUSY_SNAPSHOT), instead of waiting.
    immediate = connection.get_execution_options().get(IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is off, so that _sqlite_begin decides how to begin.
    connection.isolation_level = None
    cursor = connection.cursor()
    # WAL: readers never block the writer; a killed writer leaves the last commit intact.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the catalogue schema to the newest revision (idempotent)."""
    if _recorded_revisions(engine) == [newest_revision()]:
        return
    from alembic import command

    try:
        command.upgrade(alembic_config(engine), "head")
    except OperationalError as exc:
        raise StorageError(f"catalogue at {engine.url!r}: cannot migrate ({exc.orig})") from exc


def _recorded_revisions(engine: Engine) -> list[str] | None:
    """The revisions alembic recorded in the catalogue (its ``alembic_version`` table), read
    with SQLAlchemy alone; None when there is no such table yet (a new catalogue) or it
    cannot be read, which leaves the decision to alembic."""
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version"))
            return [str(value) for value in rows.scalars()]
    except SQLAlchemyError:
        return None


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


class Catalogue:
    """An open catalogue: an engine and a session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        migrate(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error."""
        with self._sessions() as session, session.begin():
            session.connection(execution_options={IMMEDIATE: True})
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
