"""The notebook client against a real server: listing, records, regions as arrays, errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from slidebank.client import ApiError, SlidebankClient
from slidebank.geometry import Point, Size
from slidebank.slides import open_slide
from tests.served import ServedRepository, stored_files


def test_client_lists_reads_and_fails_clearly(live_server: str, served: ServedRepository) -> None:
    with SlidebankClient(live_server) as bank:
        assert {d["short_name"] for d in bank.datasets()} == {"demo", "iiif"}
        assert [s["id"] for s in bank.slides(stain="DAB")] == [served.demo_id]
        assert len(list(bank.slides())) == 2
        record = bank.slide(served.demo_id)
        patch = bank.region(served.demo_id, 512, 256, 128, 64)
        assert patch.shape == (64, 128, 3) and patch.dtype == np.uint8
        assert record["id"] == served.demo_id and "storage_key" not in record["image"]
        with open_slide(stored_files(served.settings, served.demo_id)) as reader:
            expected = np.asarray(reader.read_region(Point(512, 256), 0, Size(128, 64)))
        assert np.array_equal(patch, expected)
        assert bank.region(served.demo_id, 0, 0, 100, 50, mpp=2.0).shape == (50, 100, 3)
        assert bank.thumbnail(served.demo_id).format == "JPEG"
        with pytest.raises(ApiError, match="404") as caught:
            bank.slide("sb-missing")
        assert caught.value.problem["status"] == 404
        with pytest.raises(ApiError, match="level"):
            bank.region(served.demo_id, 0, 0, 10, 10, level=0, mpp=1.0)


def test_client_downloads_a_slide_checked_and_only_once(
    live_server: str, served: ServedRepository, tmp_path: Path
) -> None:
    with SlidebankClient(live_server) as bank:
        record = bank.slide(served.demo_id)
        written = bank.download(tmp_path, slide_id=served.demo_id)
        assert sorted(p.name for p in written) == sorted(
            f["name"] for f in record["image"]["files"]
        )
        for path, stored in zip(
            sorted(written), sorted(record["image"]["files"], key=lambda f: f["name"]), strict=True
        ):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == stored["sha256"]
        before = {p: p.stat().st_mtime_ns for p in written}
        bank.download(tmp_path, slide_id=served.demo_id)  # already there: nothing fetched
        assert {p: p.stat().st_mtime_ns for p in written} == before
        with pytest.raises(ApiError, match="404"):
            bank.download(tmp_path, slide_id="sb-missing")
