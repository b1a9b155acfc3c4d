"""The one interface of annotation stores; ``memory_store`` is the reference, ``sql_store``
the store of the catalogue (SQLite and PostgreSQL). One conformance suite runs both.

Every change to a set is a revision. Rows are versions: each names the revision that
added it and the one that removed it (edited or deleted), so the state of a set at any
revision is ``added_in <= r < removed_in`` and history, diff and revert need no copies of
old states.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from slidebank.annotations.model import Annotation, Viewport
from slidebank.errors import InvalidInput

# A density grid is for drawing: a 4K screen in 16 px cells is about 32,000 cells.
MAX_DENSITY_CELLS = 65_536


@dataclass(frozen=True)
class Change:
    """Who makes a change, and what kind of change it is (``import``, ``add``, ``edit``,
    ``delete``, ``revert``…), with notes for the history (file name, format)."""

    user_id: int | None
    author: str
    action: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Revision:
    number: int
    at: datetime
    user_id: int | None
    author: str
    action: str
    added: int
    removed: int
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Diff:
    """Between two revisions of a set, by annotation number."""

    start: int
    end: int
    added: list[Annotation]
    removed: list[Annotation]
    changed: list[tuple[Annotation, Annotation]]
    """(version at ``start``, version at ``end``)."""


def label_counts(items: Iterable[Annotation]) -> dict[str | None, int]:
    """How many of ``items`` carry each label (the stores count what a query found)."""
    return dict(Counter(item.label for item in items))


def density_grid(viewport: Viewport, cell: float) -> tuple[int, int]:
    """The grid's columns and rows; refuses cells that are not positive and finite, or too
    many of them."""
    if not (cell > 0 and math.isfinite(cell)):
        raise InvalidInput(f"cell: a density cell must be positive and finite, got {cell}")
    columns = _cells(viewport.x1 - viewport.x0, cell)
    rows = _cells(viewport.y1 - viewport.y0, cell)
    if columns * rows > MAX_DENSITY_CELLS:
        raise InvalidInput(
            f"cell: a density grid of {columns:,.0f} x {rows:,.0f} cells of {cell} px is more "
            f"than {MAX_DENSITY_CELLS:,}; ask for larger cells"
        )
    return int(columns), int(rows)


def _cells(extent: float, cell: float) -> float:
    """Cells across ``extent``, as a float: a vast window in tiny cells has more of them
    than an integer conversion takes (1e308 px in cells of 1e-300 px is infinitely many)."""
    count = extent / cell
    return max(1.0, float(math.ceil(count))) if math.isfinite(count) else math.inf


def diff_of(start: int, end: int, before: list[Annotation], after: list[Annotation]) -> Diff:
    """Pairs two states of a set by annotation number (versions differ by row id)."""
    old = {item.number: item for item in before}
    new = {item.number: item for item in after}
    return Diff(
        start,
        end,
        added=[item for number, item in new.items() if number not in old],
        removed=[item for number, item in old.items() if number not in new],
        changed=[
            (old[number], item)
            for number, item in new.items()
            if number in old and old[number].id != item.id
        ],
    )


class AnnotationStore(Protocol):
    def insert(
        self, set_id: int, annotations: Iterable[Annotation], change: Change, session: Any = None
    ) -> Revision:
        """Add annotations to a set as one revision, all or nothing. ``session``: a
        catalogue transaction to join (the SQL store), so that a set made for an import
        and its annotations commit together."""
        ...

    def edit(
        self,
        set_id: int,
        change: Change,
        *,
        add: Sequence[Annotation] = (),
        replace: Mapping[int, Annotation] | None = None,
        remove: Sequence[int] = (),
    ) -> Revision:
        """One revision: new annotations, new versions of annotations (by number), and
        deletions (by number). Unknown or removed numbers are refused (``NotFound``)."""
        ...

    def revert(self, set_id: int, to: int, change: Change) -> Revision:
        """A new revision whose state is the state at revision ``to``."""
        ...

    def history(self, set_id: int) -> list[Revision]:
        """The set's revisions, oldest first."""
        ...

    def diff(self, set_id: int, start: int, end: int) -> Diff: ...

    def query(
        self,
        set_ids: Sequence[int],
        viewport: Viewport,
        *,
        labels: Sequence[str] | None = None,
        min_area: float | None = None,
        limit: int | None = None,
    ) -> list[Annotation]:
        """Current annotations of the sets whose geometry intersects the viewport (bounding
        boxes first, exact intersection second), in insertion order, at most ``limit``."""
        ...

    def count_by_label(self, set_ids: Sequence[int], viewport: Viewport) -> dict[str | None, int]:
        """How many current annotations of each label intersect the viewport."""
        ...

    def density(
        self, set_ids: Sequence[int], viewport: Viewport, cell: float
    ) -> dict[tuple[int, int], int]:
        """Level of detail for zoomed-out views: how many current annotations have their
        bounding box's centre in each ``cell``-pixel square of the viewport (half-open, from
        its top-left corner); empty cells are left out. At most ``MAX_DENSITY_CELLS``."""
        ...

    def stream(self, set_id: int, at: int | None = None) -> Iterator[Annotation]:
        """Every annotation of a set (now, or at revision ``at``) by number, in bounded
        memory."""
        ...

    def delete_set(self, set_id: int) -> int:
        """Remove a set's annotations and history; returns how many rows."""
        ...
