"""The sample-slide generator writes real Aperio SVS files that OpenSlide reads as such."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide

from slidebank.geometry import Point, Size
from slidebank.samples import SvsSpec, tissue_from_slide, write_svs
from slidebank.slides import open_slide


def test_generated_slide_reuses_the_real_tiles_as_stored(cmu_small: Path, tmp_path: Path) -> None:
    tissue = tissue_from_slide(cmu_small)
    target = write_svs(
        tmp_path / "big.svs", SvsSpec(9000, 7000, mpp=0.25, magnification=40), tissue
    )
    slide = openslide.OpenSlide(target)
    assert openslide.OpenSlide.detect_format(str(target)) == "aperio"
    assert slide.dimensions == (9000, 7000)
    assert slide.level_count == 3
    assert float(slide.properties["openslide.mpp-x"]) == 0.25
    assert slide.properties["openslide.objective-power"] == "40"
    assert set(slide.associated_images) == {"label", "macro", "thumbnail"}
    with open_slide(cmu_small) as source, open_slide(target) as generated:
        for column, row in ((0, 0), (5, 3), (9 + 2, 12 + 1)):
            raw = generated.read_raw_tile(0, column, row)
            original = source.read_raw_tile(0, column % 9, row % 12)
            assert raw is not None and original is not None
            assert raw.data == original.data
        lower = np.asarray(generated.read_region(Point(0, 0), 1, Size(300, 300)), dtype=float)
        assert 100 < lower.mean() < 250  # tissue, not blank or black
    assert not (tmp_path / "big.svs.part").exists()


def test_generated_demo_slide_from_bundled_tissue(generated_svs: Path) -> None:
    with open_slide(generated_svs) as reader:
        assert reader.info.format == "aperio"
        assert reader.info.dimensions == (6000, 4000)
        assert reader.info.levels[0].tile_size == (256, 256)
        pixels = np.asarray(reader.read_region(Point(0, 0), 0, Size(512, 512)), dtype=float)
        assert pixels.std() > 10  # real texture
