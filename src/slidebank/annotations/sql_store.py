"""The annotation store of the catalogue, on SQLite and PostgreSQL.

The bounding box of every geometry is indexed (SQLite's R*Tree; a GiST index on a box
expression in PostgreSQL), so a viewport query reads only candidates; exact intersection
is then tested with shapely, vectorised over the candidates. Inserts go in batches, with
geometry as WKB computed by shapely for the whole batch at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

import numpy as np
import shapely
from sqlalchemy import Table, bindparam, delete, func, insert, select, text
from sqlalchemy.orm import Session

from slidebank.annotations.model import Annotation, Viewport
from slidebank.annotations.store import density_grid, label_counts
from slidebank.catalog.annotation_tables import AnnotationRow
from slidebank.catalog.database import Catalogue

BATCH = 10_000
TABLE: Table = AnnotationRow.__table__  # type: ignore[assignment]
COLUMNS = "a.id, a.shape, a.label, a.geometry, a.properties, a.measurements, a.confidence"


class SqlAnnotationStore:
    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue
        self._sqlite = catalogue.engine.dialect.name == "sqlite"

    def insert(self, set_id: int, annotations: Iterable[Annotation]) -> int:
        """One transaction for all batches: a failed import stores nothing."""
        count = 0
        items = iter(annotations)
        with self._catalogue.transaction() as session:
            first_id = self._next_id(session)
            number = self._next_number(session, set_id)
            while batch := list(islice(items, BATCH)):
                rows = _rows(set_id, batch, first_id + count, number + count)
                session.execute(insert(TABLE), rows)
                if self._sqlite:
                    session.execute(
                        text(
                            "INSERT INTO annotation_rtree (id, min_x, max_x, min_y, max_y) "
                            "VALUES (:id, :min_x, :max_x, :min_y, :max_y)"
                        ),
                        [
                            {key: row[key] for key in ("id", "min_x", "max_x", "min_y", "max_y")}
                            for row in rows
                        ],
                    )
                count += len(batch)
        return count

    def _next_id(self, session: Session) -> int:
        # Ids are given here, not by the database, so that the R*Tree rows (SQLite) can
        # name them in the same batch. Writers are serialised (SQLite: BEGIN IMMEDIATE;
        # PostgreSQL: the table lock below), so no two imports take the same ids.
        if not self._sqlite:
            session.execute(text("LOCK TABLE annotations IN SHARE ROW EXCLUSIVE MODE"))
        return int(session.scalar(select(func.coalesce(func.max(TABLE.c.id), 0))) or 0) + 1

    @staticmethod
    def _next_number(session: Session, set_id: int) -> int:
        found = session.scalar(
            select(func.coalesce(func.max(TABLE.c.number), -1)).where(TABLE.c.set_id == set_id)
        )
        return int(found if found is not None else -1) + 1

    def query(
        self,
        set_ids: Sequence[int],
        viewport: Viewport,
        *,
        labels: Sequence[str] | None = None,
        min_area: float | None = None,
        limit: int | None = None,
    ) -> list[Annotation]:
        if not set_ids:
            return []
        where = [
            "a.set_id IN :set_ids",
            self._box_clause(),
        ]
        params: dict[str, Any] = {
            "set_ids": list(set_ids),
            "x0": viewport.x0,
            "y0": viewport.y0,
            "x1": viewport.x1,
            "y1": viewport.y1,
        }
        if labels is not None:
            where.append("a.label IN :labels")
            params["labels"] = list(labels)
        if min_area is not None:
            where.append("a.area >= :min_area")
            params["min_area"] = min_area
        source = (
            "annotation_rtree r JOIN annotations a ON a.id = r.id"
            if self._sqlite
            else "annotations a"
        )
        statement = text(
            f"SELECT {COLUMNS} FROM {source} WHERE {' AND '.join(where)} ORDER BY a.id"  # noqa: S608 - fixed fragments; values are bound
        ).bindparams(bindparam("set_ids", expanding=True))
        if labels is not None:
            statement = statement.bindparams(bindparam("labels", expanding=True))
        with self._catalogue.reading() as session:
            rows = session.execute(statement, params).all()
        if not rows:
            return []
        geometries = shapely.from_wkb([row.geometry for row in rows])
        window = shapely.box(viewport.x0, viewport.y0, viewport.x1, viewport.y1)
        hits = np.flatnonzero(shapely.intersects(geometries, window))
        if limit is not None:
            hits = hits[:limit]
        return [_annotation(rows[int(i)], geometries[int(i)]) for i in hits]

    def _box_clause(self) -> str:
        if self._sqlite:
            return "r.min_x <= :x1 AND r.max_x >= :x0 AND r.min_y <= :y1 AND r.max_y >= :y0"
        return (
            "box(point(a.min_x, a.min_y), point(a.max_x, a.max_y)) "
            "&& box(point(:x0, :y0), point(:x1, :y1))"
        )

    def count_by_label(self, set_ids: Sequence[int], viewport: Viewport) -> dict[str | None, int]:
        return label_counts(self.query(set_ids, viewport))

    def density(
        self, set_ids: Sequence[int], viewport: Viewport, cell: float
    ) -> dict[tuple[int, int], int]:
        """Counted in the database: one row per non-empty cell comes back, whatever the
        number of annotations."""
        density_grid(viewport, cell)
        if not set_ids:
            return {}
        centre_x, centre_y = "(a.min_x + a.max_x) / 2", "(a.min_y + a.max_y) / 2"
        to_int = "CAST({} AS INTEGER)" if self._sqlite else "CAST(floor({}) AS INTEGER)"
        column = to_int.format(f"({centre_x} - :x0) / :cell")
        row = to_int.format(f"({centre_y} - :y0) / :cell")
        source = (
            "annotation_rtree r JOIN annotations a ON a.id = r.id"
            if self._sqlite
            else "annotations a"
        )
        statement = text(
            f"SELECT {column} AS cx, {row} AS cy, count(*) AS n FROM {source} "  # noqa: S608 - fixed fragments; values are bound
            f"WHERE a.set_id IN :set_ids AND {self._box_clause()} "
            f"AND {centre_x} >= :x0 AND {centre_x} < :x1 "
            f"AND {centre_y} >= :y0 AND {centre_y} < :y1 "
            "GROUP BY cx, cy"
        ).bindparams(bindparam("set_ids", expanding=True))
        params = {
            "set_ids": list(set_ids),
            "x0": viewport.x0,
            "y0": viewport.y0,
            "x1": viewport.x1,
            "y1": viewport.y1,
            "cell": cell,
        }
        with self._catalogue.reading() as session:
            return {(int(r.cx), int(r.cy)): int(r.n) for r in session.execute(statement, params)}

    def stream(self, set_id: int) -> Iterator[Annotation]:
        """Pages by id (keyset pagination): bounded memory, no long-held cursor."""
        after = 0
        while True:
            with self._catalogue.reading() as session:
                rows = session.execute(
                    text(
                        f"SELECT {COLUMNS} FROM annotations a "  # noqa: S608 - fixed columns
                        "WHERE a.set_id = :set_id AND a.id > :after ORDER BY a.id LIMIT :n"
                    ),
                    {"set_id": set_id, "after": after, "n": BATCH},
                ).all()
            if not rows:
                return
            geometries = shapely.from_wkb([row.geometry for row in rows])
            for row, geometry in zip(rows, geometries, strict=True):
                yield _annotation(row, geometry)
            after = rows[-1].id

    def delete_set(self, set_id: int) -> int:
        with self._catalogue.transaction() as session:
            result = session.execute(delete(TABLE).where(TABLE.c.set_id == set_id))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _rows(set_id: int, batch: list[Annotation], first_id: int, number: int) -> list[dict[str, Any]]:
    geometries = np.array([a.geometry for a in batch], dtype=object)
    bounds = shapely.bounds(geometries)
    if np.isnan(bounds).any():
        index = int(np.flatnonzero(np.isnan(bounds).any(axis=1))[0])
        raise ValueError(f"annotation {number + index}: empty geometry")
    wkb = shapely.to_wkb(geometries)
    areas = shapely.area(geometries)
    return [
        {
            "id": first_id + i,
            "set_id": set_id,
            "shape": item.shape,
            "label": item.label,
            "area": float(areas[i]),
            "min_x": float(bounds[i, 0]),
            "min_y": float(bounds[i, 1]),
            "max_x": float(bounds[i, 2]),
            "max_y": float(bounds[i, 3]),
            "geometry": bytes(wkb[i]),
            "properties": item.properties,
            "measurements": item.measurements,
            "confidence": item.confidence,
            "number": number + i,
        }
        for i, item in enumerate(batch)
    ]


def _annotation(row: Any, geometry: Any) -> Annotation:
    properties = row.properties
    measurements = row.measurements
    if isinstance(properties, str):  # text() results are not decoded by the JSON type
        properties, measurements = json.loads(properties), json.loads(measurements)
    return Annotation(
        geometry=geometry,
        shape=row.shape,
        label=row.label,
        properties=properties or {},
        measurements=measurements or {},
        confidence=row.confidence,
        id=row.id,
    )
