"""Every reader backend on every slide it reads: the fixture the conformance suites share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from slidebank.slides import open_slide
from slidebank.slides.reader import SlideReader

SlideMaker = Callable[[Path, Path], tuple[Path, ...]]


def _file(*parts: str) -> SlideMaker:
    return lambda testdata, _tmp: (testdata.joinpath("slides", *parts),)


def _folder(*parts: str) -> SlideMaker:
    def make(testdata: Path, _tmp: Path) -> tuple[Path, ...]:
        folder = testdata.joinpath("slides", *parts)
        return tuple(sorted(p for p in folder.iterdir() if p.name != "readme.txt"))

    return make


def ome_tiff(_testdata: Path, tmp: Path) -> tuple[Path, ...]:
    """A pyramidal OME-TIFF (SubIFD levels), which OpenSlide does not read as a pyramid."""
    path = tmp / "pyramid.ome.tif"
    y, x = np.mgrid[0:1024, 0:1536]
    base = np.stack([(x // 4) % 256, (y // 4) % 256, ((x + y) // 8) % 256], axis=-1)
    base = base.astype(np.uint8)
    with tifffile.TiffWriter(path, ome=True) as tiff:
        options: dict[str, Any] = {"tile": (256, 256), "compression": "jpeg", "photometric": "rgb"}
        tiff.write(
            base,
            subifds=2,
            metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25},
            **options,
        )
        tiff.write(base[::2, ::2], subfiletype=1, **options)
        tiff.write(base[::4, ::4], subfiletype=1, **options)
    return (path,)


CASES: list[tuple[str, str, SlideMaker]] = [
    ("openslide", "aperio-svs", _file("aperio", "CMU-1-Small-Region.svs")),
    ("openslide", "aperio-tiny", _file("aperio", "small-crop.svs")),
    ("openslide", "ndpi", _file("hamamatsu", "test3-DAPI-2-(387).ndpi")),
    ("openslide", "generic-tiff", _file("synthetic", "boxes.tiff")),
    ("openslide", "dicom", _folder("synthetic", "boxes-dicom")),
    ("wsidicom", "dicom", _folder("synthetic", "boxes-dicom")),
    ("wsidicom", "wg26-partial", _folder("dicom", "WG26-BPAEC-partial")),
    ("tifffile", "generic-tiff", _file("synthetic", "boxes.tiff")),
    ("tifffile", "aperio-svs", _file("aperio", "CMU-1-Small-Region.svs")),
    ("tifffile", "ome-tiff", ome_tiff),
]


@pytest.fixture(params=CASES, ids=[f"{backend}-{name}" for backend, name, _ in CASES])
def reader(request: pytest.FixtureRequest, testdata: Path, tmp_path: Path) -> SlideReader:
    backend, _, make = request.param
    opened = open_slide(make(testdata, tmp_path), backend=backend)
    request.addfinalizer(opened.close)
    return opened


@pytest.fixture
def generated_svs_reader(generated_svs: Path) -> Iterator[SlideReader]:
    with open_slide(generated_svs) as opened:
        yield opened
