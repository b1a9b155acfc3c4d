"""The reference store: every version of every annotation in memory, a shapely STRtree per
set over its current annotations, built on demand. Simple enough to be obviously right;
the SQL store must answer exactly as it does."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shapely import STRtree, box

from slidebank.annotations.model import Annotation, Viewport, not_finite
from slidebank.annotations.store import (
    Change,
    Diff,
    Revision,
    density_grid,
    diff_of,
    label_counts,
)
from slidebank.errors import InvalidInput, NotFound


@dataclasses.dataclass
class _Version:
    annotation: Annotation
    added_in: int
    removed_in: int | None = None

    def alive_at(self, revision: int | None) -> bool:
        if revision is None:
            return self.removed_in is None
        return self.added_in <= revision and (self.removed_in is None or self.removed_in > revision)


class MemoryAnnotationStore:
    def __init__(self) -> None:
        self._versions: dict[int, list[_Version]] = {}
        self._revisions: dict[int, list[Revision]] = {}
        self._trees: dict[int, tuple[STRtree, list[Annotation]]] = {}
        self._ids = itertools.count(1)

    def _revise(self, set_id: int, change: Change, added: int, removed: int) -> Revision:
        history = self._revisions.setdefault(set_id, [])
        revision = Revision(
            len(history) + 1,
            datetime.now(UTC),
            change.user_id,
            change.author,
            change.action,
            added,
            removed,
            dict(change.detail),
        )
        history.append(revision)
        self._trees.pop(set_id, None)
        return revision

    def _next_number(self, set_id: int) -> int:
        versions = self._versions.get(set_id, [])
        return max((v.annotation.number or 0 for v in versions), default=-1) + 1

    def _add(self, set_id: int, items: list[Annotation], numbers: list[int], rev: int) -> None:
        for index, item in enumerate(items):
            if item.geometry.is_empty:
                raise ValueError(f"annotation {numbers[index]}: empty geometry")
            if (reason := not_finite(item)) is not None:
                raise InvalidInput(f"annotation {numbers[index]}: {reason}")
        self._versions.setdefault(set_id, []).extend(
            _Version(dataclasses.replace(item, id=next(self._ids), number=number), rev)
            for item, number in zip(items, numbers, strict=True)
        )

    def insert(
        self, set_id: int, annotations: Iterable[Annotation], change: Change, session: Any = None
    ) -> Revision:
        batch = list(annotations)
        start = self._next_number(set_id)
        numbers = list(range(start, start + len(batch)))
        revision = len(self._revisions.get(set_id, [])) + 1
        self._add(set_id, batch, numbers, revision)
        return self._revise(set_id, change, len(batch), 0)

    def _current(self, set_id: int, number: int) -> _Version:
        for version in self._versions.get(set_id, []):
            if version.annotation.number == number and version.removed_in is None:
                return version
        raise NotFound(f"annotation {number} is not in set {set_id}")

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
        revision = len(self._revisions.get(set_id, [])) + 1
        leaving = [self._current(set_id, number) for number in [*replace, *remove]]
        start = self._next_number(set_id)
        self._add(set_id, list(add), list(range(start, start + len(add))), revision)
        self._add(set_id, list(replace.values()), list(replace), revision)
        for version in leaving:
            version.removed_in = revision
        return self._revise(set_id, change, len(add) + len(replace), len(replace) + len(remove))

    def revert(self, set_id: int, to: int, change: Change) -> Revision:
        if not 0 <= to <= len(self._revisions.get(set_id, [])):
            raise NotFound(f"set {set_id} has no revision {to}")
        revision = len(self._revisions.get(set_id, [])) + 1
        versions = self._versions.get(set_id, [])
        leaving = [v for v in versions if v.removed_in is None and not v.alive_at(to)]
        back = [v.annotation for v in versions if v.removed_in is not None and v.alive_at(to)]
        for version in leaving:
            version.removed_in = revision
        self._add(set_id, back, [a.number or 0 for a in back], revision)
        return self._revise(set_id, change, len(back), len(leaving))

    def history(self, set_id: int) -> list[Revision]:
        return list(self._revisions.get(set_id, []))

    def diff(self, set_id: int, start: int, end: int) -> Diff:
        return diff_of(start, end, list(self.stream(set_id, start)), list(self.stream(set_id, end)))

    def _tree(self, set_id: int) -> tuple[STRtree, list[Annotation]]:
        if set_id not in self._trees:
            items = list(self.stream(set_id))
            self._trees[set_id] = (STRtree([a.geometry for a in items]), items)
        return self._trees[set_id]

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
            tree, items = self._tree(set_id)
            if not items:
                continue
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
            for item in self.stream(set_id):
                min_x, min_y, max_x, max_y = item.geometry.bounds
                x, y = (min_x + max_x) / 2, (min_y + max_y) / 2
                if viewport.x0 <= x < viewport.x1 and viewport.y0 <= y < viewport.y1:
                    key = (int((x - viewport.x0) // cell), int((y - viewport.y0) // cell))
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def stream(self, set_id: int, at: int | None = None) -> Iterator[Annotation]:
        alive = [v.annotation for v in self._versions.get(set_id, []) if v.alive_at(at)]
        yield from sorted(alive, key=lambda a: a.number or 0)

    def delete_set(self, set_id: int) -> int:
        self._trees.pop(set_id, None)
        self._revisions.pop(set_id, None)
        return len(self._versions.pop(set_id, []))
