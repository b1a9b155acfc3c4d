"""An annotation: a geometry in level-0 pixels of a slide, with its class and values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from shapely.geometry.base import BaseGeometry

from slidebank.errors import InvalidInput

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
    """A query window in level-0 pixels: ``[x0, x1] × [y0, y1]``, of finite numbers (the
    grid keys of a window are integers, and no infinity has one)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "x1", "y1"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise InvalidInput(f"viewport: {name} must be a finite number, not {value}")
        if not (self.x1 >= self.x0 and self.y1 >= self.y0):
            raise InvalidInput(f"viewport ({self.x0}, {self.y0})-({self.x1}, {self.y1}) is empty")


def non_finite_in(value: Any) -> str | None:
    """Where in ``value`` (a JSON value: numbers, text, lists, objects) a number is NaN or
    infinite: ``""`` for ``value`` itself, else the path to it (``.name``, ``[2]``); None
    when every number is finite. JSON has no such numbers: a stored one would make every
    answer that carries it invalid JSON, so stores refuse them."""
    if isinstance(value, float):
        return None if math.isfinite(value) else ""
    if isinstance(value, dict):
        for key, item in value.items():
            found = non_finite_in(item)
            if found is not None:
                return f".{key}{found}"
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = non_finite_in(item)
            if found is not None:
                return f"[{index}]{found}"
    return None


def not_finite(annotation: Annotation) -> str | None:
    """What of the annotation's values JSON cannot hold (a property, measurement or
    confidence that is NaN or infinite), or None when every one is finite."""
    for what, values in (
        ("property", annotation.properties),
        ("measurement", annotation.measurements),
    ):
        for key, value in values.items():
            at = non_finite_in(value)
            if at is not None:
                return f"{what} {key + at!r} is not a finite number"
    confidence = annotation.confidence
    if confidence is not None and not math.isfinite(confidence):
        return f"confidence {confidence} is not a finite number"
    return None
