"""The Alembic migrations build exactly the schema the models describe, on both engines."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from slidebank.catalog.annotation_tables import described_by_models
from slidebank.catalog.database import Catalogue, current_revision, head_revision
from slidebank.catalog.tables import Base


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    catalogue = Catalogue(database_url)
    catalogue.migrate()
    catalogue.migrate()  # a second run changes nothing
    with catalogue.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_object": described_by_models}
        )
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
    assert current_revision(catalogue.engine) == head_revision(catalogue.engine)
    tables = set(inspect(catalogue.engine).get_table_names())
    assert {
        "datasets",
        "cases",
        "specimens",
        "blocks",
        "slides",
        "images",
        "observations",
    } <= tables
    catalogue.dispose()
