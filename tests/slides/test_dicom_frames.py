"""Frame positions of DICOM instance files: from the Extended Offset Table when it holds,
by scanning the items when it does not, the same frames either way."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate_extended, generate_frames
from pydicom.uid import JPEGBaseline8Bit, VLWholeSlideMicroscopyImageStorage, generate_uid

from slidebank.slides import dicom_frames
from slidebank.slides.dicom_frames import frame_table

FRAMES = [bytes([index]) * (100 + 2 * index) for index in range(40)]


def _instance(path: Path, offsets: bytes, lengths: bytes) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VLWholeSlideMicroscopyImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.NumberOfFrames = len(FRAMES)
    ds.ExtendedOffsetTable = offsets
    ds.ExtendedOffsetTableLengths = lengths
    ds.PixelData, _, _ = encapsulate_extended(FRAMES)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def _frames(path: Path) -> list[bytes]:
    table = frame_table(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        return [table.read(fd, index) for index in range(len(table))]
    finally:
        os.close(fd)


def _no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def scanned(*args: object) -> None:
        raise AssertionError("the items were scanned")

    monkeypatch.setattr(dicom_frames, "_grouped", scanned)
    monkeypatch.setattr(dicom_frames.FrameTable, "of", scanned)


def test_the_standard_extended_table_is_used_without_a_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, offsets, lengths = encapsulate_extended(FRAMES)
    _instance(tmp_path / "a.dcm", offsets, lengths)
    _no_scan(monkeypatch)
    assert _frames(tmp_path / "a.dcm") == FRAMES


def test_wsidicom_style_lengths_are_read_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # wsidicom writes each item's distance to the next as its length, the last one as is.
    _, offsets, lengths = encapsulate_extended(FRAMES)
    stated = np.frombuffer(lengths, dtype="<u8").copy()
    stated[:-1] += 8
    _instance(tmp_path / "w.dcm", offsets, stated.tobytes())
    _no_scan(monkeypatch)
    assert _frames(tmp_path / "w.dcm") == FRAMES


def test_a_table_that_disagrees_with_the_items_falls_back_to_the_scan(tmp_path: Path) -> None:
    _, offsets, lengths = encapsulate_extended(FRAMES)
    shifted = np.frombuffer(offsets, dtype="<u8").copy()
    shifted[20] += 2  # points inside a frame
    _instance(tmp_path / "bad.dcm", shifted.tobytes(), lengths)
    assert _frames(tmp_path / "bad.dcm") == FRAMES  # one item per frame, found by scanning
    wrong = np.frombuffer(lengths, dtype="<u8").copy()
    wrong[5] += 100
    _instance(tmp_path / "bad-length.dcm", offsets, wrong.tobytes())
    assert _frames(tmp_path / "bad-length.dcm") == FRAMES


def test_real_instances_give_the_frames_pydicom_gives(wg26_files: tuple[Path, ...]) -> None:
    checked = 0
    for path in wg26_files:
        dataset = pydicom.dcmread(path)
        if (
            "PixelData" not in dataset
            or dataset.file_meta.TransferSyntaxUID.is_encapsulated is False
        ):
            continue
        count = int(dataset.get("NumberOfFrames") or 1)
        expected = list(generate_frames(dataset.PixelData, number_of_frames=count))
        assert _frames(path) == expected
        checked += 1
    assert checked > 0
