from __future__ import annotations

from pathlib import Path

import pytest

from slidebank.errors import CorruptSlide
from slidebank.ingest import validate as validation
from slidebank.ingest.validate import validate
from slidebank.slides import open_slide
from tests.helpers import corrupt_tile_copy


def test_quick_mode_samples_large_levels_and_full_mode_reads_every_tile(
    cmu_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend the 130-tile level is large, so quick mode decodes only its first and last
    # tiles; the damaged tile keeps its JPEG markers, so only decoding finds it.
    damaged = corrupt_tile_copy(cmu_small, tmp_path / "damaged.svs", 3, 3)
    data = bytearray(damaged.read_bytes())
    with open_slide(cmu_small) as reader:
        stored = reader.stored_tiles(0)
        assert stored is not None
        index = 3 * stored.columns + 3
        offset, count = stored.offsets[index], stored.byte_counts[index]
    original = cmu_small.read_bytes()[offset : offset + count]
    data[offset : offset + count] = original[:40] + b"\x00" * (count - 42) + original[-2:]
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(validation, "SMALL_LEVEL_TILES", 10)
    with open_slide(damaged) as reader:
        validate(reader, "damaged.svs", "quick")
        with pytest.raises(CorruptSlide, match=r"damaged.svs: level 0"):
            validate(reader, "damaged.svs", "full")


def test_every_test_slide_passes_full_validation(
    slides_dir: Path, wg26_files: tuple[Path, ...]
) -> None:
    for files in (
        (slides_dir / "aperio" / "CMU-1-Small-Region.svs",),
        (slides_dir / "hamamatsu" / "test3-DAPI-2-(387).ndpi",),
        wg26_files,
    ):
        with open_slide(files) as reader:
            validate(reader, str(files[0]), "full")
