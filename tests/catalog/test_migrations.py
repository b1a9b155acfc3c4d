"""The Alembic migrations build exactly the schema the models describe, on both engines."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from shapely.geometry import box
from sqlalchemy import inspect

from slidebank.annotations.model import Viewport
from slidebank.annotations.sql_store import SqlAnnotationStore
from slidebank.catalog.database import Catalogue, alembic_config, current_revision, head_revision
from slidebank.catalog.tables import Base


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    catalogue = Catalogue(database_url)
    catalogue.migrate()
    catalogue.migrate()  # a second run changes nothing
    with catalogue.engine.connect() as connection:
        context = MigrationContext.configure(connection)
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


def test_annotations_stored_before_the_grid_keys_are_found_after(tmp_path: Path) -> None:
    """0007 replaces SQLite's R*Tree by grid keys: rows stored under 0006 get their keys."""
    path = tmp_path / "catalogue.db"
    catalogue = Catalogue(f"sqlite:///{path}")
    command.upgrade(alembic_config(catalogue.engine), "0006")
    raw = sqlite3.connect(path)  # no foreign keys: a set without its slide is enough here
    raw.execute(
        "INSERT INTO annotation_sets (id, image_id, name, kind, author, created_at) "
        "VALUES (1, 1, 'old', 'manual', 'someone', '2026-01-01')"
    )
    boxes = [box(x, x, x + 8, x + 8) for x in range(0, 30_000, 100)] + [
        box(0, 10_200, 40_000, 10_209)
    ]
    for number, geometry in enumerate(boxes, start=1):
        min_x, min_y, max_x, max_y = geometry.bounds
        raw.execute(
            "INSERT INTO annotations (id, set_id, shape, label, area, min_x, min_y, max_x, "
            "max_y, geometry, properties, measurements, number, added_in) "
            "VALUES (?, 1, 'rectangle', NULL, ?, ?, ?, ?, ?, ?, '{}', '{}', ?, 1)",
            (number, geometry.area, min_x, min_y, max_x, max_y, geometry.wkb, number),
        )
        raw.execute(
            "INSERT INTO annotation_rtree VALUES (?, ?, ?, ?, ?)",
            (number, min_x, max_x, min_y, max_y),
        )
    raw.commit()
    raw.close()
    catalogue.migrate()
    assert "annotation_rtree" not in inspect(catalogue.engine).get_table_names()
    store = SqlAnnotationStore(catalogue)
    found = store.query([1], Viewport(10_000, 10_000, 10_500, 10_500))
    assert sorted(item.number or 0 for item in found) == [101, 102, 103, 104, 105, 106, len(boxes)]
    catalogue.dispose()
