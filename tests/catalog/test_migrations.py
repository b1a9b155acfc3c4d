"""The Alembic migrations build exactly the schema the models describe, on both engines."""

from __future__ import annotations

import ast
import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from shapely.geometry import box
from sqlalchemy import inspect

from slidebank.annotations.model import Viewport
from slidebank.annotations.sql_store import SqlAnnotationStore
from slidebank.catalog.database import (
    MIGRATIONS,
    Catalogue,
    alembic_config,
    current_revision,
    head_revision,
    newest_revision,
)
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


def test_each_migration_is_named_after_its_revision_and_revises_the_one_before() -> None:
    # What newest_revision() relies on to name the newest revision without alembic.
    files = sorted((MIGRATIONS / "versions").glob("[0-9]*_*.py"))
    previous = None
    for path in files:
        assigned = {
            node.targets[0].id: ast.literal_eval(node.value)
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        }
        assert assigned["revision"] == path.name.split("_", 1)[0], path.name
        assert assigned["down_revision"] == previous, path.name
        previous = assigned["revision"]
    assert newest_revision() == previous


def test_a_current_catalogue_opens_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    catalogue = Catalogue(url)
    catalogue.migrate()
    assert current_revision(catalogue.engine) == head_revision(catalogue.engine)
    catalogue.dispose()
    # A new process: only the recorded revision is read, and alembic is not even imported.
    opened = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from slidebank.catalog.database import Catalogue\n"
            f"Catalogue({url!r}).migrate()\n"
            "print(sorted(name for name in sys.modules if name.startswith('alembic')))\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.strip() == "[]"
