"""Rendering on every backend and slide: DeepZoom tiles at every level match what the reader
gives when read and resampled the plain way, whichever path (stored tiles passed through,
stored tiles decoded at 1/2..1/8 scale, or read-and-resample) produced them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from slidebank.errors import InvalidInput
from slidebank.geometry import Point, Size
from slidebank.slides.reader import MAX_REGION_PIXELS, SlideReader
from slidebank.tiles import rendering
from slidebank.tiles.deepzoom import DeepZoom
from slidebank.tiles.rendering import Region, match_stored_tile, read_stored_tile, render


def plain(reader: SlideReader, region: Region) -> np.ndarray:
    """The reference: read at the finest level needed, shrink with Pillow, white outside."""
    full = reader.info.dimensions
    sx, sy = region.scales
    width = min(region.size.width, round((full.width - region.origin.x) / sx))
    height = min(region.size.height, round((full.height - region.origin.y) / sy))
    level = reader.info.best_level_for_downsample(min(sx, sy))
    downsample = reader.info.levels[level].downsample
    read = Size(
        max(1, round(width * sx / downsample)),
        max(1, round(height * sy / downsample)),
    )
    image = reader.read_region(region.origin, level, read).resize(
        (width, height), Image.Resampling.LANCZOS
    )
    canvas = np.full((region.size.height, region.size.width, 3), 255, np.uint8)
    canvas[:height, :width] = np.asarray(image)
    return canvas


def sample_tiles(zoom: DeepZoom, level: int) -> list[tuple[int, int]]:
    grid = zoom.grid(level)
    picks = {(0, 0), (grid.width - 1, grid.height - 1), (grid.width // 2, grid.height // 2)}
    return sorted(picks)


def test_deepzoom_tiles_match_the_plain_rendering_at_every_level(reader: SlideReader) -> None:
    zoom = DeepZoom.for_slide(reader.info)
    for level in range(zoom.level_count - 1, max(zoom.level_count - 9, 0), -1):
        for column, row in sample_tiles(zoom, level):
            region = zoom.tile_region(level, column, row)
            got = render(reader, region)
            assert got.shape == (region.size.height, region.size.width, 3)
            assert got.dtype == np.uint8
            expected = plain(reader, region).astype(int)
            where = f"level {level} tile {column},{row}"
            if min(region.size) >= 16:
                difference = np.abs(got.astype(int) - expected).mean()
                # Different but equally valid shrinking (DCT scaling, box, Lanczos) and a
                # sub-pixel shift where a level's downsample is rounded stay well under this.
                assert difference < 12, f"{where}: {difference:.1f}"
            elif min(region.size) >= 4:
                # A few pixels of sharp edges differ by filter; their colour must not.
                shift = np.abs(got.mean(axis=(0, 1)) - expected.mean(axis=(0, 1))).max()
                assert shift < 8, f"{where}: mean colour differs by {shift:.1f}"


def test_stored_tiles_pass_through_byte_for_byte(reader: SlideReader) -> None:
    zoom = DeepZoom.for_slide(reader.info)
    level0 = reader.info.levels[0]
    if level0.tile_size is None or reader.read_raw_tile(0, 0, 0) is None:
        pytest.skip(f"{reader.info.backend} keeps no stored JPEG tiles for this slide")
    if zoom.tile_size != level0.tile_size.width:
        pytest.skip("stored tiles are not square DeepZoom-sized tiles")
    region = zoom.tile_region(zoom.level_count - 1, 0, 0)
    match = match_stored_tile(reader, region)
    if level0.size.width < level0.tile_size.width or level0.size.height < level0.tile_size.height:
        assert match is None  # a padded edge tile is never passed through
        return
    assert match is not None
    stored = read_stored_tile(reader, match)
    raw = reader.read_raw_tile(0, 0, 0)
    assert stored is not None and raw is not None and stored.data == raw.data


def test_stored_levels_and_halves_of_them_are_cheap(generated_svs_reader: SlideReader) -> None:
    zoom = DeepZoom.for_slide(generated_svs_reader.info)
    top = zoom.level_count - 1
    cheap = [
        level
        for level in range(top + 1)
        if rendering.assembles_from_stored_tiles(generated_svs_reader, zoom.scale(level))
    ]
    # Stored levels are 4x apart: each one, and the level at half its resolution.
    assert cheap[-4:] == [top - 3, top - 2, top - 1, top]


def test_an_edge_tile_is_rendered_not_passed_through(generated_svs_reader: SlideReader) -> None:
    zoom = DeepZoom.for_slide(generated_svs_reader.info)
    top = zoom.level_count - 1
    grid = zoom.grid(top)
    edge = zoom.tile_region(top, grid.width - 1, grid.height - 1)
    assert edge.size.width < zoom.tile_size or edge.size.height < zoom.tile_size
    assert match_stored_tile(generated_svs_reader, edge) is None
    inside = zoom.tile_region(top, 1, 1)
    assert match_stored_tile(generated_svs_reader, inside) is not None


def test_half_scale_from_stored_tiles_equals_a_box_shrink(
    generated_svs_reader: SlideReader,
) -> None:
    zoom = DeepZoom.for_slide(generated_svs_reader.info)
    region = zoom.tile_region(zoom.level_count - 2, 2, 1)  # scale 2: level 0 at 1/2
    got = render(generated_svs_reader, region)
    full = generated_svs_reader.read_region(
        region.origin, 0, Size(region.size.width * 2, region.size.height * 2)
    )
    box = np.asarray(full.reduce(2))
    assert np.abs(got.astype(int) - box.astype(int)).mean() < 3


def test_banded_reading_gives_the_same_picture(
    generated_svs_reader: SlideReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scale 3 is no power-of-two multiple of a level, so the read-and-resample path runs.
    region = Region(Point(300, 200), Size(400, 300), 3.0)
    whole = render(generated_svs_reader, region)
    monkeypatch.setattr(rendering, "BAND_PIXELS", 1200 * 50)
    banded = render(generated_svs_reader, region)
    assert np.abs(whole.astype(int) - banded.astype(int)).mean() < 2


def test_outside_the_slide_is_white(generated_svs_reader: SlideReader) -> None:
    full = generated_svs_reader.info.dimensions
    beyond = render(generated_svs_reader, Region(Point(full.width + 10, 0), Size(64, 64), 1.0))
    assert (beyond == 255).all()
    across = render(generated_svs_reader, Region(Point(full.width - 32, 0), Size(64, 64), 3.0))
    assert (across[:, 20:] == 255).all()


def test_absurd_output_sizes_are_refused(generated_svs_reader: SlideReader) -> None:
    side = int(MAX_REGION_PIXELS**0.5) + 1
    with pytest.raises(InvalidInput, match="larger than"):
        render(generated_svs_reader, Region(Point(0, 0), Size(side, side), 1.0))
    with pytest.raises(InvalidInput, match="positive"):
        render(generated_svs_reader, Region(Point(0, 0), Size(0, 10), 1.0))


def test_levels_called_cheap_never_read_and_resample(
    reader: SlideReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the server renders on its event loop must come from stored tiles alone."""
    zoom = DeepZoom.for_slide(reader.info)
    cheap = [
        level
        for level in range(zoom.level_count)
        if rendering.assembles_from_stored_tiles(reader, zoom.scale(level))
    ]
    if reader.read_raw_tile(0, 0, 0) is None:
        assert cheap == []

    def refuse(*_: object) -> np.ndarray:
        raise AssertionError("read-and-resample on a level called cheap")

    monkeypatch.setattr(rendering, "_resampled", refuse)
    for level in cheap:
        grid = zoom.grid(level)
        render(reader, zoom.tile_region(level, grid.width - 1, grid.height - 1))
