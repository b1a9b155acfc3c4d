"""Pixel value types. Level-0 pixel coordinates and sizes are kept apart from millimetres."""

from __future__ import annotations

from typing import NamedTuple


class Point(NamedTuple):
    """A position in pixels (x to the right, y down)."""

    x: int
    y: int


class Size(NamedTuple):
    """A width and height in pixels."""

    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height


class Mpp(NamedTuple):
    """Microns per pixel along x and y."""

    x: float
    y: float
