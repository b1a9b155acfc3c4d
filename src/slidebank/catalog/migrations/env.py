"""Alembic environment: runs migrations on the engine Slidebank hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from slidebank.catalog import (  # noqa: F401  (register their tables)
    access_tables,
    annotation_tables,
    dicom_tables,
)
from slidebank.catalog.tables import Base

# Any fixed number: the PostgreSQL advisory lock that serialises concurrent migrations.
MIGRATION_LOCK = 0x51DEBA7C

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        # Two processes opening a new catalogue at once must not both create its tables.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
