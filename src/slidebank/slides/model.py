"""What a slide is, in OpenSlide's vocabulary: levels, mpp, vendor, properties."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from slidebank.geometry import Mpp, Size


@dataclass(frozen=True)
class Level:
    """One resolution of the pyramid. ``tile_size`` is None where the format is not tiled."""

    size: Size
    downsample: float
    tile_size: Size | None = None

    @cached_property
    def grid(self) -> Size | None:
        """Number of tile columns and rows, where the level is tiled (kept: every tile read
        checks its address against it)."""
        if self.tile_size is None:
            return None
        return Size(
            -(-self.size.width // self.tile_size.width),
            -(-self.size.height // self.tile_size.height),
        )


@dataclass(frozen=True)
class RawTile:
    """A tile's bytes as stored in the file, completed so that any decoder reads them.

    ``media_type`` is e.g. ``image/jpeg``; ``data`` is a self-contained stream.
    """

    data: bytes
    media_type: str


@dataclass(frozen=True)
class AssociatedImageInfo:
    """A non-pyramid image stored with the slide (label, macro, thumbnail)."""

    name: str
    size: Size


@dataclass(frozen=True)
class SlideInfo:
    """Everything known about a slide without reading its pixels."""

    format: str
    """Slidebank's name for the container format, e.g. ``aperio``, ``dicom``, ``ome-tiff``."""
    vendor: str | None
    levels: tuple[Level, ...]
    mpp: Mpp | None
    objective_power: float | None
    associated: tuple[AssociatedImageInfo, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)
    backend: str = ""

    @property
    def dimensions(self) -> Size:
        return self.levels[0].size

    @property
    def associated_names(self) -> tuple[str, ...]:
        return tuple(image.name for image in self.associated)

    def best_level_for_downsample(self, downsample: float) -> int:
        """The highest-resolution level not finer than needed (OpenSlide's rule)."""
        best = 0
        for index, level in enumerate(self.levels):
            if level.downsample <= downsample * 1.0001:
                best = index
        return best
