"""Stand-ins written into converted headers are replaced in place, in the header only."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, VLWholeSlideMicroscopyImageStorage, generate_uid

from slidebank.deid.convert import replace_in_headers

STAND_IN = "C-018901890189"
REAL = "C-ABCDEFGH2345"


def _converted_like(path: Path) -> Path:
    dataset = Dataset()
    dataset.SOPClassUID = VLWholeSlideMicroscopyImageStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.PatientID = STAND_IN
    dataset.PatientName = STAND_IN
    dataset.StudyID = STAND_IN
    # The same bytes inside a frame are pixel data, not a name: they stay.
    dataset.PixelData = encapsulate([b"\xff\xd8" + STAND_IN.encode() + b"\xff\xd9"])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_each_stand_in_in_a_header_is_replaced_in_place(tmp_path: Path) -> None:
    path = _converted_like(tmp_path / "level.dcm")
    size = path.stat().st_size
    replace_in_headers([path], {STAND_IN: REAL})
    dataset = pydicom.dcmread(path)
    assert (dataset.PatientID, str(dataset.PatientName), dataset.StudyID) == (REAL,) * 3
    assert STAND_IN.encode() in dataset.PixelData
    assert path.stat().st_size == size


def test_a_replacement_of_another_length_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    path = _converted_like(tmp_path / "level.dcm")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="one length"):
        replace_in_headers([path], {STAND_IN: REAL + "X"})
    assert path.read_bytes() == before
