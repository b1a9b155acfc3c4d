"""One suite, every reader backend: the SlideReader contract holds for each of them."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slidebank.errors import NotFound
from slidebank.geometry import Point, Size
from slidebank.slides import open_slide
from slidebank.slides.reader import SlideReader
from tests.conformance.conftest import ome_tiff


def test_levels_shrink_and_downsamples_match_sizes(reader: SlideReader) -> None:
    levels = reader.info.levels
    assert levels[0].downsample == 1.0
    for finer, coarser in itertools.pairwise(levels):
        assert coarser.size.width <= finer.size.width
        assert coarser.downsample > finer.downsample
        expected = levels[0].size.width / coarser.size.width
        assert coarser.downsample == pytest.approx(expected, rel=0.05)


def test_region_has_requested_size_even_across_the_edge(reader: SlideReader) -> None:
    width, height = reader.info.dimensions
    region = reader.read_region(Point(width - 10, height - 10), 0, Size(40, 30))
    assert region.mode == "RGB"
    assert region.size == (40, 30)
    outside = np.asarray(region)[20:, 20:]
    assert outside.min() >= 250  # blank (white) beyond the image


def test_edge_tile_is_cut_to_the_level_and_matches_a_larger_region(reader: SlideReader) -> None:
    level = len(reader.info.levels) - 1
    lvl = reader.info.levels[level]
    grid, tile_size = lvl.grid, lvl.tile_size
    assert grid is not None and tile_size is not None
    column, row = grid.width - 1, grid.height - 1
    tile = reader.read_tile(level, column, row)
    expected = (
        lvl.size.width - column * tile_size.width,
        lvl.size.height - row * tile_size.height,
    )
    assert tile.size == expected
    # The same pixels, read as part of a region that starts 8 px before the tile.
    margin = 8
    x = column * tile_size.width - margin
    y = row * tile_size.height - margin
    origin = Point(round(x * lvl.downsample), round(y * lvl.downsample))
    region = reader.read_region(origin, level, Size(expected[0] + margin, expected[1] + margin))
    inner = np.asarray(region, dtype=int)[margin:, margin:]
    difference = np.abs(np.asarray(tile, dtype=int) - inner)
    assert difference.mean() < 1.0


def test_raw_tile_decodes_to_the_decoded_tile(reader: SlideReader) -> None:
    raw = reader.read_raw_tile(0, 0, 0)
    if raw is None:
        pytest.skip(f"{reader.info.format} via {reader.name} keeps no stored tiles")
    decoded_raw = Image.open(io.BytesIO(raw.data))
    decoded_raw.load()
    tile = reader.read_tile(0, 0, 0)
    cropped = np.asarray(decoded_raw.convert("RGB"))[: tile.size[1], : tile.size[0]]
    difference = np.abs(cropped.astype(int) - np.asarray(tile, dtype=int))
    assert difference.mean() < 2.0


def test_associated_images_and_thumbnail(reader: SlideReader) -> None:
    for associated in reader.info.associated:
        image = reader.associated_image(associated.name)
        assert image.mode == "RGB"
        assert image.size == tuple(associated.size)
    thumbnail = reader.thumbnail(128)
    assert max(thumbnail.size) <= 128
    assert thumbnail.mode == "RGB"


def test_out_of_range_requests_are_not_found(reader: SlideReader) -> None:
    grid = reader.info.levels[0].grid
    assert grid is not None
    with pytest.raises(NotFound, match="no tile"):
        reader.read_tile(0, grid.width, 0)
    with pytest.raises(NotFound, match="no level"):
        reader.read_region(Point(0, 0), len(reader.info.levels), Size(1, 1))
    with pytest.raises(NotFound, match="no associated image"):
        reader.associated_image("no-such-image")


def testome_tiff_reports_its_pyramid_and_mpp(testdata: Path, tmp_path: Path) -> None:
    with open_slide(ome_tiff(testdata, tmp_path)) as reader:
        assert reader.info.backend == "tifffile"
        assert reader.info.format == "ome-tiff"
        assert [level.size for level in reader.info.levels] == [
            (1536, 1024),
            (768, 512),
            (384, 256),
        ]
        assert reader.info.mpp is not None and reader.info.mpp.x == pytest.approx(0.25)
