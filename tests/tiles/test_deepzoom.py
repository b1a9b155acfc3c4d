"""DeepZoom geometry: levels as OpenSeadragon computes them, tiles at the edges, bad tiles."""

from __future__ import annotations

import pytest
from defusedxml import ElementTree

from slidebank.errors import NotFound
from slidebank.geometry import Mpp, Point, Size
from slidebank.slides.model import Level, SlideInfo
from slidebank.tiles.deepzoom import DeepZoom


def info(width: int, height: int, tile: Size | None) -> SlideInfo:
    return SlideInfo(
        "aperio", "aperio", (Level(Size(width, height), 1.0, tile),), Mpp(0.5, 0.5), 20
    )


def test_levels_halve_from_the_full_size_down_to_one_pixel() -> None:
    zoom = DeepZoom(Size(1000, 600), 256)
    assert zoom.level_count == 11  # ceil(log2(1000)) + 1
    assert zoom.level_sizes[-1] == Size(1000, 600)
    assert zoom.level_sizes[-2] == Size(500, 300)
    assert zoom.level_sizes[-4] == Size(125, 75)
    assert zoom.level_sizes[-5] == Size(63, 38)  # rounded up, as OpenSeadragon does
    assert zoom.level_sizes[0] == Size(1, 1)
    assert [zoom.scale(level) for level in (10, 9, 0)] == [1, 2, 1024]


def test_tile_size_is_the_stored_one_when_usable() -> None:
    assert DeepZoom.for_slide(info(5000, 4000, Size(240, 240))).tile_size == 240
    assert DeepZoom.for_slide(info(5000, 4000, Size(512, 128))).tile_size == 256
    assert DeepZoom.for_slide(info(5000, 4000, Size(4096, 4096))).tile_size == 256
    assert DeepZoom.for_slide(info(5000, 4000, None)).tile_size == 256


def test_edge_tiles_are_cut_to_the_level() -> None:
    zoom = DeepZoom(Size(1000, 600), 256)
    grid = zoom.grid(10)
    assert grid == Size(4, 3)
    corner = zoom.tile_region(10, 3, 2)
    assert corner.origin == Point(768, 512)
    assert corner.size == Size(1000 - 768, 600 - 512)
    assert corner.scale == 1
    half = zoom.tile_region(9, 1, 0)
    assert (half.origin, half.size, half.scale) == (Point(512, 0), Size(500 - 256, 256), 2)


@pytest.mark.parametrize(
    ("level", "column", "row"), [(11, 0, 0), (-1, 0, 0), (10, 4, 0), (10, 0, 3), (0, 1, 0)]
)
def test_tiles_outside_the_pyramid_are_not_found(level: int, column: int, row: int) -> None:
    with pytest.raises(NotFound):
        DeepZoom(Size(1000, 600), 256).tile_region(level, column, row)


def test_descriptor_is_valid_deepzoom_xml() -> None:
    root = ElementTree.fromstring(DeepZoom(Size(1000, 600), 240).dzi("jpeg"))
    namespace = "{http://schemas.microsoft.com/deepzoom/2008}"
    assert root.tag == f"{namespace}Image"
    assert (root.get("Format"), root.get("TileSize"), root.get("Overlap")) == ("jpeg", "240", "0")
    size = root.find(f"{namespace}Size")
    assert size is not None and (size.get("Width"), size.get("Height")) == ("1000", "600")
