"""The one interface of annotation stores; ``memory_store`` is the reference, ``sql_store``
the store of the catalogue (SQLite and PostgreSQL). One conformance suite runs both."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from slidebank.annotations.model import Annotation, Viewport


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

    def stream(self, set_id: int) -> Iterator[Annotation]:
        """Every annotation of a set, in insertion order, in bounded memory."""
        ...

    def delete_set(self, set_id: int) -> int:
        """Remove a set's annotations; returns how many."""
        ...
