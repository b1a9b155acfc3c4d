"""An annotation: a geometry in level-0 pixels of a slide, with its class and values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shapely.geometry.base import BaseGeometry

Shape = Literal["point", "multipoint", "line", "polygon", "multipolygon", "rectangle", "ellipse"]
SHAPES: tuple[str, ...] = (
    "point",
    "multipoint",
    "line",
    "polygon",
    "multipolygon",
    "rectangle",
    "ellipse",
)


@dataclass(frozen=True)
class Annotation:
    """Rectangles and ellipses keep their shape name; their geometry is the polygon that
    queries use.

    Well-known ``properties``: ``name`` (the object's own name in its tool), ``color``
    (``#rrggbb``, when the object has its own colour apart from its class's), ``nucleus``
    (a cell's nucleus geometry as a GeoJSON geometry dict), ``object_type`` (QuPath's
    ``annotation``, ``detection``, ``cell``, ``tile``)."""

    geometry: BaseGeometry
    shape: Shape
    label: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None
    id: int | None = None
    """The stored version's row id (a new one at every edit)."""
    number: int | None = None
    """The annotation's identity within its set, kept through edits."""


@dataclass(frozen=True)
class Viewport:
    """A query window in level-0 pixels: ``[x0, x1] × [y0, y1]``."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        if not (self.x1 >= self.x0 and self.y1 >= self.y0):
            raise ValueError(f"viewport ({self.x0}, {self.y0})-({self.x1}, {self.y1}) is empty")
