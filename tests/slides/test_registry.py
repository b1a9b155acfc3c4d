"""Each real test slide opens with the right backend and reports the facts its README lists."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slidebank.errors import CorruptSlide, InvalidInput, UnsupportedFormat
from slidebank.geometry import Point, Size
from slidebank.slides import open_slide


def test_aperio_small_region_facts(cmu_small: Path) -> None:
    with open_slide(cmu_small) as reader:
        info = reader.info
        assert info.backend == "openslide"
        assert info.format == "aperio"
        assert info.dimensions == (2220, 2967)
        assert len(info.levels) == 1
        assert info.levels[0].tile_size == (240, 240)
        assert info.mpp is not None
        assert info.mpp.x == pytest.approx(0.499)
        assert info.objective_power == 20
        assert set(info.associated_names) == {"label", "macro", "thumbnail"}
        assert info.properties["aperio.ScanScope ID"] == "CPAPERIOCS"


def test_aperio_stored_tile_is_a_complete_jpeg_equal_to_the_decoded_tile(cmu_small: Path) -> None:
    with open_slide(cmu_small) as reader:
        raw = reader.read_raw_tile(0, 4, 7)
        assert raw is not None
        assert raw.media_type == "image/jpeg"
        decoded_raw = np.asarray(Image.open(io.BytesIO(raw.data)).convert("RGB"))
        decoded = np.asarray(reader.read_tile(0, 4, 7))
        assert decoded_raw.shape == decoded.shape == (240, 240, 3)
        assert np.array_equal(decoded_raw, decoded)


def test_small_crop_is_smaller_than_one_tile(slides_dir: Path) -> None:
    with open_slide(slides_dir / "aperio" / "small-crop.svs") as reader:
        assert reader.info.dimensions == (16, 16)
        assert reader.info.levels[0].grid == (1, 1)
        assert reader.read_tile(0, 0, 0).size == (16, 16)


def test_ndpi_facts(slides_dir: Path) -> None:
    with open_slide(slides_dir / "hamamatsu" / "test3-DAPI-2-(387).ndpi") as reader:
        info = reader.info
        assert info.format == "hamamatsu"
        assert info.dimensions == (3968, 4864)
        assert len(info.levels) == 7
        assert info.mpp is not None and info.mpp.x == pytest.approx(0.228, abs=1e-3)
        assert "macro" in info.associated_names
        region = reader.read_region(Point(1000, 1000), 0, Size(64, 48))
        assert region.size == (64, 48)


def test_wg26_partial_dicom_opens_with_wsidicom(wg26_files: tuple[Path, ...]) -> None:
    with open_slide(wg26_files) as reader:
        info = reader.info
        assert info.backend == "wsidicom"
        assert info.format == "dicom"
        assert info.dimensions == (3072, 2304)
        assert info.levels[0].tile_size == (1024, 1024)
        assert "label" in info.associated_names
        raw = reader.read_raw_tile(0, 0, 0)
        assert raw is not None and raw.data[:2] == b"\xff\xd8"
        assert reader.read_region(Point(0, 0), 0, Size(100, 80)).size == (100, 80)


def test_synthetic_generic_tiff(slides_dir: Path) -> None:
    with open_slide(slides_dir / "synthetic" / "boxes.tiff") as reader:
        assert reader.info.format == "generic-tiff"
        assert reader.info.dimensions == (300, 250)
        assert len(reader.info.levels) == 4


def test_synthetic_two_file_dicom(slides_dir: Path) -> None:
    folder = slides_dir / "synthetic" / "boxes-dicom"
    with open_slide(tuple(sorted(folder.iterdir()))) as reader:
        assert reader.info.format == "dicom"
        assert reader.info.dimensions == (16, 16)


def test_plain_stripped_tiff_is_refused_with_advice(slides_dir: Path) -> None:
    with pytest.raises(UnsupportedFormat, match=r"kidney-stripped.tif: a plain TIFF .* untiled"):
        open_slide(slides_dir / "other" / "kidney-stripped.tif")


def test_nonconformant_dicom_names_both_libraries_reasons(testdata: Path) -> None:
    with pytest.raises(CorruptSlide) as caught:
        open_slide(testdata / "bad" / "nonconformant-wsi.dcm")
    message = str(caught.value)
    assert "nonconformant-wsi.dcm" in message
    assert "Level files not found" in message
    assert "Couldn't get image flavor" in message


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"", "empty"),
        (b"hello, this is text\n", "text"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "png image"),
    ],
)
def test_non_slides_are_refused_by_content_not_name(
    tmp_path: Path, content: bytes, kind: str
) -> None:
    path = tmp_path / "renamed.svs"
    path.write_bytes(content)
    with pytest.raises(UnsupportedFormat, match=kind):
        open_slide(path)


def test_backend_is_chosen_by_content_whatever_the_name(tmp_path: Path, cmu_small: Path) -> None:
    renamed = tmp_path / "scan.dcm"
    shutil.copyfile(cmu_small, renamed)
    with open_slide(renamed) as reader:
        assert reader.info.format == "aperio"


def test_unknown_backend_name_is_an_input_error(cmu_small: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown backend 'nope'"):
        open_slide(cmu_small, backend="nope")
