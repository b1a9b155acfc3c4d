"""The one interface of annotation stores; ``memory_store`` is the reference, ``sql_store``
the store of the catalogue (SQLite and PostgreSQL). One conformance suite runs both."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from slidebank.annotations.model import Annotation, Viewport

# A density grid is for drawing: a 4K screen in 16 px cells is about 32,000 cells.
MAX_DENSITY_CELLS = 65_536


def label_counts(items: Iterable[Annotation]) -> dict[str | None, int]:
    """How many of ``items`` carry each label (the stores count what a query found)."""
    return dict(Counter(item.label for item in items))


def density_grid(viewport: Viewport, cell: float) -> tuple[int, int]:
    """The grid's columns and rows; refuses cells that are not positive or too many."""
    if not cell > 0:
        raise ValueError(f"density cell must be positive, got {cell}")
    columns = max(1, int(-(-(viewport.x1 - viewport.x0) // cell)))
    rows = max(1, int(-(-(viewport.y1 - viewport.y0) // cell)))
    if columns * rows > MAX_DENSITY_CELLS:
        raise ValueError(
            f"density grid of {columns} x {rows} cells is more than {MAX_DENSITY_CELLS:,}"
        )
    return columns, rows


class AnnotationStore(Protocol):
    def insert(self, set_id: int, annotations: Iterable[Annotation]) -> int:
        """Add annotations to a set in one transaction; returns how many."""
        ...

    def query(
        self,
        set_ids: Sequence[int],
        viewport: Viewport,
        *,
        labels: Sequence[str] | None = None,
        min_area: float | None = None,
        limit: int | None = None,
    ) -> list[Annotation]:
        """Annotations of the sets whose geometry intersects the viewport (bounding boxes
        first, exact intersection second), in insertion order, at most ``limit``."""
        ...

    def count_by_label(self, set_ids: Sequence[int], viewport: Viewport) -> dict[str | None, int]:
        """How many annotations of each label intersect the viewport."""
        ...

    def density(
        self, set_ids: Sequence[int], viewport: Viewport, cell: float
    ) -> dict[tuple[int, int], int]:
        """Level of detail for zoomed-out views: how many annotations have their bounding
        box's centre in each ``cell``-pixel square of the viewport (half-open, from its
        top-left corner); empty cells are left out. At most ``MAX_DENSITY_CELLS`` cells."""
        ...

    def stream(self, set_id: int) -> Iterator[Annotation]:
        """Every annotation of a set, in insertion order, in bounded memory."""
        ...

    def delete_set(self, set_id: int) -> int:
        """Remove a set's annotations; returns how many."""
        ...
