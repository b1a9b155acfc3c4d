"""The annotation store of the catalogue, on SQLite and PostgreSQL.

The bounding box of every geometry is indexed by its grid key (``catalog/grid_keys``) in a
B-tree index, on both engines, so a viewport query reads only candidates; exact
intersection is then tested with shapely, vectorised over the candidates. Inserts go in
batches, with geometry as WKB computed by shapely for the whole batch at once, written
through the driver (``executemany`` on SQLite, ``COPY`` on PostgreSQL): SQLAlchemy's
per-row parameter processing costs more than the database's own work at a million rows.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import numpy as np
import shapely
from sqlalchemy import Table, bindparam, delete, func, select, text
from sqlalchemy.orm import Session

from slidebank.annotations import stored_rows
from slidebank.annotations.model import Annotation, Viewport
from slidebank.annotations.store import Change, Diff, Revision, density_grid, label_counts
from slidebank.annotations.stored_rows import KEPT, WIDTH, WRITTEN, PreparedBatch
from slidebank.catalog.annotation_tables import (
    DENSITY_CELL,
    AnnotationCell,
    AnnotationRevision,
    AnnotationRow,
)
from slidebank.catalog.database import Catalogue
from slidebank.catalog.grid_keys import key_level, key_ranges
from slidebank.errors import InvalidInput, NotFound

BATCH = 10_000
TABLE: Table = AnnotationRow.__table__  # type: ignore[assignment]
COLUMNS = "a.id, a.shape, a.label, a.geometry, a.properties, a.measurements, a.confidence, a.number"
ANALYZE_AFTER = 50_000  # rows imported at once after which PostgreSQL re-reads statistics
# The window's grid-key ranges drive the query, each one range scan of the (set, grid key)
# index, written as each planner uses them. SQLite: the ranges as a VALUES table, CROSS JOIN
# fixing the join order (as an OR of ranges, it used the set alone: 228 ms instead of 0.9 ms
# for a screenful of a million cells). PostgreSQL: an OR of ranges, a bitmap OR of index
# scans (joined to VALUES, it read the whole table: 130-180 ms instead of 1 ms).
BOX_MEETS_WINDOW = "a.min_x <= :x1 AND a.max_x >= :x0 AND a.min_y <= :y1 AND a.max_y >= :y0"
SQLITE_WINDOW = (
    "(VALUES {ranges}) r CROSS JOIN annotations a "
    "ON a.set_id IN :set_ids AND a.grid_key BETWEEN r.column1 AND r.column2"
)


class _InlineWriter:
    """Writes each batch as it is put (SQLite: see ``_insert``)."""

    def __init__(self, write: Callable[[list[tuple[Any, ...]]], None]) -> None:
        self.put = write

    def __enter__(self) -> _InlineWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


class _BackgroundWriter:
    """Writes batches of rows on a second thread while the caller makes the next batch
    (parsing, checking, WKB), for PostgreSQL, whose work is done in its own process. The
    caller's connection is used by one thread at a time: the caller only touches it again
    after ``__exit__`` has joined the writer."""

    def __init__(self, write: Callable[[list[tuple[Any, ...]]], None]) -> None:
        self._write = write
        self._queue: queue.Queue[list[tuple[Any, ...]] | None] = queue.Queue(maxsize=2)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="annotation-writer", daemon=True)

    def _run(self) -> None:
        while (rows := self._queue.get()) is not None:
            if self._failure is None:
                try:
                    self._write(rows)
                except BaseException as exc:  # handed to the caller's thread
                    self._failure = exc

    def put(self, rows: list[tuple[Any, ...]]) -> None:
        if self._failure is not None:
            raise self._failure
        self._queue.put(rows)

    def __enter__(self) -> _BackgroundWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._failure is not None and exc_info[0] is None:
            raise self._failure


def _alive(at: int | None) -> str:
    if at is None:
        return "a.removed_in IS NULL"
    return f"a.added_in <= {int(at)} AND (a.removed_in IS NULL OR a.removed_in > {int(at)})"


class SqlAnnotationStore:
    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue
        self._sqlite = catalogue.engine.dialect.name == "sqlite"
        # PostgreSQL's driver would decode every row's JSON into dicts of its own; as text,
        # equal values are decoded once per query (``_decoded``), and a window of a thousand
        # cells makes a thousand fewer objects for the garbage collector to walk.
        self._columns = (
            COLUMNS
            if self._sqlite
            else COLUMNS.replace("a.properties", "a.properties::text AS properties").replace(
                "a.measurements", "a.measurements::text AS measurements"
            )
        )
        mark = "?" if self._sqlite else "%s"
        self._add_cells = (
            f"INSERT INTO annotation_cells (set_id, cx, cy, n) VALUES ({mark}, {mark}, {mark}, "  # noqa: S608 - the driver's placeholders
            f"{mark}) ON CONFLICT (set_id, cx, cy) DO UPDATE SET n = annotation_cells.n + "
            "excluded.n"
        )

    def _leave_cells(self, session: Session, where: str, params: dict[str, Any]) -> None:
        """Takes the rows matching ``where`` (about to be removed) out of the cell counts."""
        value = f"((a.min_{{0}} + a.max_{{0}}) / 2.0 / {DENSITY_CELL})"
        # floor(): SQLite's CAST truncates toward zero, so step down for negative fractions.
        cell = (
            f"(CAST({value} AS INTEGER) - ({value} < CAST({value} AS INTEGER)))"
            if self._sqlite
            else f"CAST(floor({value}) AS INTEGER)"
        )
        statement = text(
            "INSERT INTO annotation_cells (set_id, cx, cy, n) "  # noqa: S608 - fixed fragments
            f"SELECT a.set_id, {cell.format('x')} AS cx, {cell.format('y')} AS cy, -count(*) "
            f"FROM annotations a WHERE {where} GROUP BY a.set_id, cx, cy "
            "ON CONFLICT (set_id, cx, cy) DO UPDATE SET n = annotation_cells.n + excluded.n"
        )
        if "IN :ids" in where:
            statement = statement.bindparams(bindparam("ids", expanding=True))
        session.execute(statement, params)

    def insert(
        self, set_id: int, annotations: Iterable[Annotation], change: Change, session: Any = None
    ) -> Revision:
        """One transaction for all batches (the caller's, when given): a failed import
        stores nothing."""
        return self.insert_prepared(set_id, _prepared(annotations), change, session)

    def insert_prepared(
        self, set_id: int, batches: Iterable[PreparedBatch], change: Change, session: Any = None
    ) -> Revision:
        """``insert`` for batches already in the row form (``stored_rows.prepare``), which
        a parallel import makes in other processes."""
        if session is None:
            with self._catalogue.transaction() as own:
                return self._insert(own, set_id, batches, change)
        return self._insert(session, set_id, batches, change)

    def _insert(
        self, session: Session, set_id: int, batches: Iterable[PreparedBatch], change: Change
    ) -> Revision:
        revision = self._next_revision(session, set_id)
        next_id = self._next_id(session)
        number = self._next_number(session, set_id)
        count = 0
        # SQLite binds every row under the GIL and gives it up and takes it back around each
        # row's step; beside a thread making the next batch the two only took turns, and
        # writing in line was faster (a million cells decoded in one process: 24.7 and
        # 25.4 s in line, 27.9 and 30.6 s on a thread).
        writer_type = _InlineWriter if self._sqlite else _BackgroundWriter
        with writer_type(lambda rows: self._write(session, rows)) as writer:
            for batch in batches:
                if not len(batch):
                    continue
                numbers = range(number + count, number + count + len(batch))
                writer.put(stored_rows.rows(set_id, batch, next_id + count, numbers, revision))
                count += len(batch)
        if not self._sqlite and count >= ANALYZE_AFTER:
            # Fresh statistics, or the planner keeps estimating the table as it was and
            # reads a million rows by set instead of the window's key ranges.
            session.execute(text("ANALYZE annotations"))
        return self._record(session, set_id, revision, change, count, 0)

    def edit(
        self,
        set_id: int,
        change: Change,
        *,
        add: Sequence[Annotation] = (),
        replace: Mapping[int, Annotation] | None = None,
        remove: Sequence[int] = (),
    ) -> Revision:
        replace = replace or {}
        leaving = [*replace, *remove]
        with self._catalogue.transaction() as session:
            revision = self._next_revision(session, set_id)
            ids = self._current_ids(session, set_id, leaving)
            next_id = self._next_id(session)
            if ids:
                self._leave_cells(session, "a.id IN :ids", {"ids": ids})
                session.execute(
                    text("UPDATE annotations SET removed_in = :r WHERE id IN :ids").bindparams(
                        bindparam("ids", expanding=True)
                    ),
                    {"r": revision, "ids": ids},
                )
            start = self._next_number(session, set_id)
            added = [*add, *replace.values()]
            numbers = [*range(start, start + len(add)), *replace]
            if added:
                batch = stored_rows.prepare(added)
                self._write(session, stored_rows.rows(set_id, batch, next_id, numbers, revision))
            return self._record(session, set_id, revision, change, len(added), len(ids))

    def _current_ids(self, session: Session, set_id: int, numbers: Sequence[int]) -> list[int]:
        if not numbers:
            return []
        found: dict[int, int] = dict(
            session.execute(  # type: ignore[arg-type]
                text(
                    "SELECT a.number, a.id FROM annotations a WHERE a.set_id = :s "
                    "AND a.removed_in IS NULL AND a.number IN :numbers"
                ).bindparams(bindparam("numbers", expanding=True)),
                {"s": set_id, "numbers": list(numbers)},
            ).all()
        )
        missing = sorted(set(numbers) - set(found))
        if missing:
            raise NotFound(f"annotation {missing[0]} is not in set {set_id}")
        return [int(found[number]) for number in numbers]

    def revert(self, set_id: int, to: int, change: Change) -> Revision:
        with self._catalogue.transaction() as session:
            revision = self._next_revision(session, set_id)
            if not 0 <= to < revision:
                raise NotFound(f"set {set_id} has no revision {to}")
            self._leave_cells(
                session,
                "a.set_id = :s AND a.removed_in IS NULL AND a.added_in > :to",
                {"s": set_id, "to": to},
            )
            removed = session.execute(
                text(
                    "UPDATE annotations SET removed_in = :r WHERE set_id = :s "
                    "AND removed_in IS NULL AND added_in > :to"
                ),
                {"r": revision, "s": set_id, "to": to},
            ).rowcount  # type: ignore[attr-defined]
            restored = self._restore(session, set_id, to, revision)
            return self._record(session, set_id, revision, change, restored, int(removed or 0))

    def _restore(self, session: Session, set_id: int, to: int, revision: int) -> int:
        """Copies the versions alive at ``to`` but since removed as new rows of
        ``revision`` (ids are new; numbers, geometry and values are kept)."""
        next_id = self._next_id(session)
        count, after = 0, 0
        while True:
            rows = session.execute(
                text(
                    f"SELECT a.id, {KEPT} FROM annotations a WHERE a.set_id = :s "  # noqa: S608 - fixed columns
                    "AND a.added_in <= :to AND a.removed_in > :to AND a.removed_in < :r "
                    "AND a.id > :after ORDER BY a.id LIMIT :n"
                ),
                {"s": set_id, "to": to, "r": revision, "after": after, "n": BATCH},
            ).all()
            if not rows:
                return count
            self._write(
                session,
                [
                    (next_id + count + i, set_id, *map(_as_written, row[1:]), revision)
                    for i, row in enumerate(rows)
                ],
            )
            count += len(rows)
            after = rows[-1].id

    def _write(self, session: Session, rows: list[tuple[Any, ...]]) -> None:
        cursor = session.connection().connection.cursor()
        try:
            if self._sqlite:
                cursor.executemany(
                    f"INSERT INTO annotations ({WRITTEN}) VALUES ({', '.join('?' * WIDTH)})",  # noqa: S608 - fixed columns
                    rows,
                )
            else:
                with cursor.copy(f"COPY annotations ({WRITTEN}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            cursor.executemany(self._add_cells, _cell_counts(rows))
        finally:
            cursor.close()

    def _next_id(self, session: Session) -> int:
        # Ids are given here, not by the database, so that a batch is written as it is
        # (one COPY or executemany, no ids read back). Writers are serialised (SQLite:
        # BEGIN IMMEDIATE; PostgreSQL: the table lock taken by _next_revision), so no two
        # take the same ids.
        return int(session.scalar(select(func.coalesce(func.max(TABLE.c.id), 0))) or 0) + 1

    def _next_revision(self, session: Session, set_id: int) -> int:
        if not self._sqlite:
            session.execute(text("LOCK TABLE annotations IN SHARE ROW EXCLUSIVE MODE"))
        found = session.scalar(
            select(func.coalesce(func.max(AnnotationRevision.number), 0)).where(
                AnnotationRevision.set_id == set_id
            )
        )
        return int(found or 0) + 1

    @staticmethod
    def _next_number(session: Session, set_id: int) -> int:
        found = session.scalar(
            select(func.coalesce(func.max(TABLE.c.number), -1)).where(TABLE.c.set_id == set_id)
        )
        return int(found if found is not None else -1) + 1

    @staticmethod
    def _record(
        session: Session, set_id: int, number: int, change: Change, added: int, removed: int
    ) -> Revision:
        row = AnnotationRevision(
            set_id=set_id,
            number=number,
            user_id=change.user_id,
            author=change.author,
            at=datetime.now(UTC),
            action=change.action,
            added=added,
            removed=removed,
            detail=dict(change.detail),
        )
        session.add(row)
        session.flush()
        return _revision(row)

    def history(self, set_id: int) -> list[Revision]:
        with self._catalogue.reading() as session:
            rows = session.scalars(
                select(AnnotationRevision)
                .where(AnnotationRevision.set_id == set_id)
                .order_by(AnnotationRevision.number)
            )
            return [_revision(row) for row in rows]

    def diff(self, set_id: int, start: int, end: int) -> Diff:
        """Reads only the versions that changed between the two revisions: those added
        after ``start`` and alive at ``end``, and those alive at ``start`` and removed by
        ``end``; pairs of one number are edits."""
        if start > end:
            raise InvalidInput(f"diff from revision {start} to {end}: start after end")
        with self._catalogue.reading() as session:
            new = self._select(
                session, f"{_alive(end)} AND a.added_in > :start", set_id, start=start
            )
            old = self._select(
                session,
                f"{_alive(start)} AND a.removed_in IS NOT NULL AND a.removed_in <= :end",
                set_id,
                end=end,
            )
        before = {item.number: item for item in old}
        after = {item.number: item for item in new}
        return Diff(
            start,
            end,
            added=[item for number, item in after.items() if number not in before],
            removed=[item for number, item in before.items() if number not in after],
            changed=[(before[n], item) for n, item in after.items() if n in before],
        )

    def _select(self, session: Session, where: str, set_id: int, **params: Any) -> list[Annotation]:
        rows = session.execute(
            text(
                f"SELECT {self._columns} FROM annotations a WHERE a.set_id = :s AND {where} "  # noqa: S608 - fixed fragments; values are bound
                "ORDER BY a.number"
            ),
            {"s": set_id, **params},
        ).all()
        geometries = shapely.from_wkb([row.geometry for row in rows]) if rows else []
        seen: dict[str, Any] = {}
        return [_annotation(row, g, seen) for row, g in zip(rows, geometries, strict=True)]

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
        where = ["a.set_id IN :set_ids", "a.removed_in IS NULL", BOX_MEETS_WINDOW]
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
        with self._catalogue.reading() as session:
            window = self._window(session, set_ids, viewport)
            if window is None:
                return []
            source, ranges = window
            statement = text(
                f"SELECT {self._columns} FROM {source} WHERE {ranges} AND "  # noqa: S608 - fixed fragments and integers; values are bound
                f"{' AND '.join(where)} ORDER BY a.id"
            ).bindparams(bindparam("set_ids", expanding=True))
            if labels is not None:
                statement = statement.bindparams(bindparam("labels", expanding=True))
            rows = session.execute(statement, params).all()
        if not rows:
            return []
        geometries = shapely.from_wkb([row.geometry for row in rows])
        window = shapely.box(viewport.x0, viewport.y0, viewport.x1, viewport.y1)
        hits = np.flatnonzero(shapely.intersects(geometries, window))
        if limit is not None:
            hits = hits[:limit]
        seen: dict[str, Any] = {}
        return [_annotation(rows[int(i)], geometries[int(i)], seen) for i in hits]

    def _window(
        self, session: Session, set_ids: Sequence[int], viewport: Viewport
    ) -> tuple[str, str] | None:
        """The FROM clause and the condition that read the window's grid-key ranges, up to
        the sets' coarsest level; None when the sets hold no annotations."""
        tops = [
            session.scalar(
                text("SELECT max(grid_key) FROM annotations WHERE set_id = :s"), {"s": set_id}
            )
            for set_id in set_ids
        ]
        top = max((key_level(int(key)) for key in tops if key is not None), default=None)
        if top is None:
            return None
        ranges = key_ranges(viewport.x0, viewport.y0, viewport.x1, viewport.y1, top)
        # The ranges are integers made here: written into the statement, not bound.
        if self._sqlite:
            values = ", ".join(f"({low}, {high})" for low, high in ranges)
            return SQLITE_WINDOW.format(ranges=values), "TRUE"
        either = " OR ".join(f"a.grid_key BETWEEN {low} AND {high}" for low, high in ranges)
        return "annotations a", f"({either})"

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
        if _on_cell_grid(viewport, cell):
            return self._density_from_cells(set_ids, viewport, cell)
        centre_x, centre_y = "(a.min_x + a.max_x) / 2", "(a.min_y + a.max_y) / 2"
        to_int = "CAST({} AS INTEGER)" if self._sqlite else "CAST(floor({}) AS INTEGER)"
        column = to_int.format(f"({centre_x} - :x0) / :cell")
        row = to_int.format(f"({centre_y} - :y0) / :cell")
        params = {
            "set_ids": list(set_ids),
            "x0": viewport.x0,
            "y0": viewport.y0,
            "x1": viewport.x1,
            "y1": viewport.y1,
            "cell": cell,
        }
        with self._catalogue.reading() as session:
            window = self._window(session, set_ids, viewport)
            if window is None:
                return {}
            source, ranges = window
            statement = text(
                f"SELECT {column} AS cx, {row} AS cy, count(*) AS n FROM {source} "  # noqa: S608 - fixed fragments and integers; values are bound
                f"WHERE {ranges} AND a.set_id IN :set_ids AND a.removed_in IS NULL "
                f"AND {BOX_MEETS_WINDOW} "
                f"AND {centre_x} >= :x0 AND {centre_x} < :x1 "
                f"AND {centre_y} >= :y0 AND {centre_y} < :y1 "
                "GROUP BY cx, cy"
            ).bindparams(bindparam("set_ids", expanding=True))
            return {(int(r.cx), int(r.cy)): int(r.n) for r in session.execute(statement, params)}

    def _density_from_cells(
        self, set_ids: Sequence[int], viewport: Viewport, cell: float
    ) -> dict[tuple[int, int], int]:
        """Exact on the kept counts: the window and the cell lie on their grid, so each kept
        cell falls wholly in one asked cell (integer division of non-negative numbers)."""
        step = int(cell) // DENSITY_CELL
        left, top = int(viewport.x0) // DENSITY_CELL, int(viewport.y0) // DENSITY_CELL
        right, bottom = int(viewport.x1) // DENSITY_CELL, int(viewport.y1) // DENSITY_CELL
        statement = text(
            "SELECT (c.cx - :left) / :step AS gx, (c.cy - :top) / :step AS gy, sum(c.n) AS n "
            "FROM annotation_cells c WHERE c.set_id IN :set_ids "
            "AND c.cx >= :left AND c.cx < :right AND c.cy >= :top AND c.cy < :bottom "
            "GROUP BY gx, gy HAVING sum(c.n) > 0"
        ).bindparams(bindparam("set_ids", expanding=True))
        params = {
            "set_ids": list(set_ids),
            "left": left,
            "top": top,
            "right": right,
            "bottom": bottom,
            "step": step,
        }
        with self._catalogue.reading() as session:
            return {(int(r.gx), int(r.gy)): int(r.n) for r in session.execute(statement, params)}

    def stream(self, set_id: int, at: int | None = None) -> Iterator[Annotation]:
        """Pages by number (keyset pagination): bounded memory, no long-held cursor."""
        after = -1
        while True:
            with self._catalogue.reading() as session:
                rows = session.execute(
                    text(
                        f"SELECT {self._columns} FROM annotations a WHERE a.set_id = :set_id "  # noqa: S608 - fixed fragments
                        f"AND {_alive(at)} AND a.number > :after ORDER BY a.number LIMIT :n"
                    ),
                    {"set_id": set_id, "after": after, "n": BATCH},
                ).all()
            if not rows:
                return
            geometries = shapely.from_wkb([row.geometry for row in rows])
            seen: dict[str, Any] = {}
            for row, geometry in zip(rows, geometries, strict=True):
                yield _annotation(row, geometry, seen)
            after = rows[-1].number

    def delete_set(self, set_id: int) -> int:
        with self._catalogue.transaction() as session:
            session.execute(delete(AnnotationRevision).where(AnnotationRevision.set_id == set_id))
            session.execute(delete(AnnotationCell).where(AnnotationCell.set_id == set_id))
            result = session.execute(delete(TABLE).where(TABLE.c.set_id == set_id))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _on_cell_grid(viewport: Viewport, cell: float) -> bool:
    """Whether a density request can be answered from the kept counts exactly. Its cell
    numbers are bound as 64-bit integers: a window beyond 2**53 px (far outside any slide)
    is counted from the boxes instead."""
    return all(
        0 <= value <= _EXACT_FLOATS and value % DENSITY_CELL == 0
        for value in (viewport.x0, viewport.y0, viewport.x1, viewport.y1, cell)
    )


_EXACT_FLOATS = float(2**53)


def _prepared(annotations: Iterable[Annotation]) -> Iterator[PreparedBatch]:
    items = iter(annotations)
    while batch := list(islice(items, BATCH)):
        yield stored_rows.prepare(batch)


def _cell_counts(rows: list[tuple[Any, ...]]) -> list[tuple[int, int, int, int]]:
    """(set, column, row, count) of the rows' bounding-box centres, per kept cell."""
    if not rows:
        return []
    boxes = np.array([(row[5], row[6], row[7], row[8]) for row in rows], dtype=np.float64)
    columns = np.floor((boxes[:, 0] + boxes[:, 2]) / 2 / DENSITY_CELL).astype(np.int64)
    lines = np.floor((boxes[:, 1] + boxes[:, 3]) / 2 / DENSITY_CELL).astype(np.int64)
    cells, counts = np.unique(np.stack([columns, lines], axis=1), axis=0, return_counts=True)
    set_id = int(rows[0][1])
    return [(set_id, int(cx), int(cy), int(n)) for (cx, cy), n in zip(cells, counts, strict=True)]


def _as_written(value: Any) -> Any:
    """A value read back as it is written (PostgreSQL's driver decodes JSON columns)."""
    return stored_rows.json_text(value) if isinstance(value, dict) else value


def _revision(row: AnnotationRevision) -> Revision:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)  # SQLite keeps no zone
    return Revision(
        row.number, at, row.user_id, row.author, row.action, row.added, row.removed, row.detail
    )


def _decoded(value: Any, seen: dict[str, Any]) -> Any:
    """A JSON column's value (text() results are not decoded by the JSON type). Cells of one
    import share their values, so equal texts are decoded once per call and the dict is
    shared between the annotations of one result (callers must not change it)."""
    if not isinstance(value, str):
        return value or {}
    found = seen.get(value)
    if found is None:
        found = seen[value] = json.loads(value)
    return found


def _annotation(row: Any, geometry: Any, seen: dict[str, Any] | None = None) -> Annotation:
    seen = {} if seen is None else seen
    return Annotation(
        geometry=geometry,
        shape=row.shape,
        label=row.label,
        properties=_decoded(row.properties, seen),
        measurements=_decoded(row.measurements, seen),
        confidence=row.confidence,
        id=row.id,
        number=row.number,
    )
