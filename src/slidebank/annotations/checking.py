"""What every import goes through, whatever its format: geometry repaired or refused, and
coordinates outside the slide refused or clipped, each refusal naming the feature.

Batches are checked with vectorised shapely; only the few invalid or outside geometries
are handled one by one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Literal

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from slidebank.annotations.formats.base import Parsed
from slidebank.annotations.model import Annotation, Shape
from slidebank.errors import InvalidInput

Outside = Literal["refuse", "clip"]
BATCH = 4096
# The shape a geometry has once repair or clipping changed it.
SHAPE_OF_TYPE: dict[str, Shape] = {
    "Point": "point",
    "MultiPoint": "multipoint",
    "LineString": "line",
    "MultiLineString": "line",
    "Polygon": "polygon",
    "MultiPolygon": "multipolygon",
}


@dataclass
class CheckReport:
    """What checking changed, for the import's report and its revision."""

    checked: int = 0
    repaired: int = 0
    clipped: int = 0
    dropped: int = 0
    """Wholly outside the slide, with ``outside="clip"``."""

    def add(self, other: CheckReport) -> None:
        """Count ``other``'s changes too (a piece checked in another process)."""
        self.checked += other.checked
        self.repaired += other.repaired
        self.clipped += other.clipped
        self.dropped += other.dropped


def checked(
    items: Iterator[Parsed],
    filename: str,
    width: int,
    height: int,
    *,
    outside: Outside = "refuse",
    repair: bool = True,
    report: CheckReport | None = None,
) -> Iterator[Annotation]:
    """``items`` that are valid and inside ``[0, width] × [0, height]``."""
    report = report if report is not None else CheckReport()
    slide = shapely.box(0, 0, width, height)
    while batch := list(islice(items, BATCH)):
        geometries = np.array([p.annotation.geometry for p in batch], dtype=object)
        valid = shapely.is_valid(geometries)
        bounds = shapely.bounds(geometries)
        inside = (
            (bounds[:, 0] >= 0)
            & (bounds[:, 1] >= 0)
            & (bounds[:, 2] <= width)
            & (bounds[:, 3] <= height)
        )
        report.checked += len(batch)
        kept: list[Annotation | None] = [p.annotation for p in batch]
        for index in np.flatnonzero(~valid | ~inside):
            parsed = batch[int(index)]
            fixed: Annotation | None = parsed.annotation
            if not valid[index]:
                fixed = _repaired(parsed, filename, repair)
                report.repaired += 1
            if not inside[index] and fixed is not None:
                fixed = _inside(parsed, fixed, filename, slide, outside, width, height)
                if fixed is None:
                    report.dropped += 1
                else:
                    report.clipped += 1
            kept[int(index)] = fixed
        yield from (annotation for annotation in kept if annotation is not None)


def _repaired(parsed: Parsed, filename: str, repair: bool) -> Annotation:
    geometry = parsed.annotation.geometry
    reason = shapely.is_valid_reason(geometry)
    if not repair:
        raise InvalidInput(f"{filename}: {parsed.where}: invalid geometry ({reason})")
    made = _same_dimension(shapely.make_valid(geometry), geometry)
    if made is None:
        raise InvalidInput(
            f"{filename}: {parsed.where}: invalid geometry ({reason}) that cannot be repaired "
            f"without losing it"
        )
    return _with(parsed.annotation, made)


def _inside(
    parsed: Parsed,
    annotation: Annotation,
    filename: str,
    slide: BaseGeometry,
    outside: Outside,
    width: int,
    height: int,
) -> Annotation | None:
    if outside == "refuse":
        x0, y0, x1, y1 = (round(v, 2) for v in annotation.geometry.bounds)
        raise InvalidInput(
            f"{filename}: {parsed.where}: lies outside the slide ({width} x {height} px): "
            f"its bounds are ({x0}, {y0})-({x1}, {y1}); import with outside=clip to cut "
            "it to the slide"
        )
    clipped = _same_dimension(shapely.intersection(annotation.geometry, slide), annotation.geometry)
    return None if clipped is None else _with(annotation, clipped)


def _same_dimension(made: BaseGeometry, original: BaseGeometry) -> BaseGeometry | None:
    """The parts of ``made`` of ``original``'s dimension (repair and clipping can leave
    stray points or lines beside a polygon), or None when nothing of it is left."""
    dimension = shapely.get_dimensions(original)
    if made.is_empty:
        return None
    parts = shapely.get_parts(made)
    kept = [part for part in parts if shapely.get_dimensions(part) == dimension]
    if not kept:
        return None
    if len(kept) == 1:
        return kept[0]  # type: ignore[no-any-return]
    return (
        shapely.union_all(kept)
        if dimension == 2
        else shapely.multipoints(kept)
        if (dimension == 0)
        else shapely.multilinestrings(kept)
    )


def _with(annotation: Annotation, geometry: BaseGeometry) -> Annotation:
    shape = annotation.shape
    if not geometry.equals(annotation.geometry) or shape not in ("rectangle", "ellipse"):
        shape = SHAPE_OF_TYPE.get(geometry.geom_type, annotation.shape)
    return dataclasses.replace(annotation, geometry=geometry, shape=shape)
