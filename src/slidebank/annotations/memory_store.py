"""The reference store: everything in memory, a shapely STRtree per set built on demand.
Simple enough to be obviously right; the SQL store must answer exactly as it does."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Sequence

from shapely import STRtree, box

from slidebank.annotations.model import Annotation, Viewport
from slidebank.annotations.store import density_grid, label_counts


class MemoryAnnotationStore:
    def __init__(self) -> None:
        self._sets: dict[int, list[Annotation]] = {}
        self._trees: dict[int, STRtree] = {}
        self._ids = itertools.count(1)

    def insert(self, set_id: int, annotations: Iterable[Annotation]) -> int:
        batch = list(annotations)
        start = sum(1 for _ in self._sets.get(set_id, []))
        for index, item in enumerate(batch):
            if item.geometry.is_empty:
                raise ValueError(f"annotation {start + index}: empty geometry")
        added = [dataclasses.replace(a, id=next(self._ids)) for a in batch]
        self._sets.setdefault(set_id, []).extend(added)
        self._trees.pop(set_id, None)
        return len(added)

    def query(
        self,
        set_ids: Sequence[int],
        viewport: Viewport,
        *,
        labels: Sequence[str] | None = None,
        min_area: float | None = None,
        limit: int | None = None,
    ) -> list[Annotation]:
        window = box(viewport.x0, viewport.y0, viewport.x1, viewport.y1)
        found: list[Annotation] = []
        for set_id in set_ids:
            items = self._sets.get(set_id, [])
            if not items:
                continue
            tree = self._trees.get(set_id)
            if tree is None:
                tree = self._trees[set_id] = STRtree([a.geometry for a in items])
            for index in tree.query(window, predicate="intersects"):
                item = items[int(index)]
                if labels is not None and item.label not in labels:
                    continue
                if min_area is not None and item.geometry.area < min_area:
                    continue
                found.append(item)
        found.sort(key=lambda a: a.id or 0)
        return found[:limit] if limit is not None else found

    def count_by_label(self, set_ids: Sequence[int], viewport: Viewport) -> dict[str | None, int]:
        return label_counts(self.query(set_ids, viewport))

    def density(
        self, set_ids: Sequence[int], viewport: Viewport, cell: float
    ) -> dict[tuple[int, int], int]:
        density_grid(viewport, cell)
        counts: dict[tuple[int, int], int] = {}
        for set_id in set_ids:
            for item in self._sets.get(set_id, []):
                min_x, min_y, max_x, max_y = item.geometry.bounds
                x, y = (min_x + max_x) / 2, (min_y + max_y) / 2
                if viewport.x0 <= x < viewport.x1 and viewport.y0 <= y < viewport.y1:
                    key = (int((x - viewport.x0) // cell), int((y - viewport.y0) // cell))
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def stream(self, set_id: int) -> Iterator[Annotation]:
        yield from self._sets.get(set_id, [])

    def delete_set(self, set_id: int) -> int:
        self._trees.pop(set_id, None)
        return len(self._sets.pop(set_id, []))
