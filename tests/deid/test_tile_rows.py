"""Stored tiles read a batch at a time are the bytes opentile gives for them, on real SVS."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from slidebank.deid import convert
from slidebank.deid.tile_rows import TiffTileRows, read_tiles_directly
from slidebank.errors import CorruptSlide


def _open(path: Path):  # type: ignore[no-untyped-def]
    with convert._pydicom_validation_kept():  # as the ingest imports it (see test_frame_writer)
        from wsidicomizer import WsiDicomizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WsiDicomizer.open(path, include_confidential=False)


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "small-crop.svs"])
def test_every_tile_is_the_one_opentile_gives(slides_dir: Path, name: str) -> None:
    from wsidicom.geometry import Point

    path = slides_dir / "aperio" / name
    with _open(path) as wsi:
        levels = [next(iter(level.image_data_map.values())) for level in wsi.levels]
        expected = []
        for image_data in levels:
            grid = image_data.tiled_size
            rows = [[Point(x, y) for x in range(grid.width)] for y in range(grid.height)]
            # Whole rows (back to back in the file) and a scattered pick (read tile by tile).
            batches = [*rows, [rows[-1][-1], rows[0][0]]] if len(rows) > 1 else rows
            expected.append(
                (batches, [list(image_data.get_encoded_tiles(b, 0.0, "0")) for b in batches])
            )
        assert read_tiles_directly(wsi, path) == len(levels)
        for image_data, (batches, tiles) in zip(levels, expected, strict=True):
            for batch, wanted in zip(batches, tiles, strict=True):
                assert list(image_data.get_encoded_tiles(batch, 0.0, "0")) == wanted


def test_tile_data_beyond_the_end_of_the_file_is_a_clear_error(tmp_path: Path) -> None:
    from wsidicom.geometry import Point

    path = tmp_path / "cut.tif"
    path.write_bytes(b"\xff\xd8" + b"\0" * 100)
    rows = TiffTileRows(path, offsets=(0, 60), counts=(60, 60), columns=2, inserted=b"")
    with pytest.raises(CorruptSlide, match=r"cut.tif: tile data at bytes 0-120 .* truncated"):
        list(rows.get_encoded_tiles([Point(0, 0), Point(1, 0)], 0.0, "0"))


def test_a_jpeg_tile_without_a_start_of_scan_is_a_clear_error(tmp_path: Path) -> None:
    from wsidicom.geometry import Point

    path = tmp_path / "odd.tif"
    path.write_bytes(b"\xff\xd8" + b"\x11" * 30 + b"\xff\xd9")
    rows = TiffTileRows(path, offsets=(0,), counts=(34,), columns=1, inserted=b"\xff\xdb")
    with pytest.raises(CorruptSlide, match=r"odd\.tif: a JPEG tile at byte 0 has no start of scan"):
        list(rows.get_encoded_tiles([Point(0, 0)], 0.0, "0"))
