"""Index step: the DICOM instances among a stored slide's files, for DICOMweb.

Headers only (pydicom, ``stop_before_pixels``); files that are not DICOM, or DICOM without
the identifying UIDs, are left out, so non-DICOM slides have no instances.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from slidebank.catalog.entries import DicomInstanceEntry
from slidebank.slides.sniff import is_dicom

# Native little endian pixel data is the same bytes under either transfer syntax; DICOMweb
# offers such frames as Explicit VR Little Endian (application/octet-stream).
IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
# What QIDO-RS answers with (DICOM JSON), by keyword.
QIDO_KEYWORDS = (
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "ImageType",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows",
    "ContainerIdentifier",
)


def describe_instances(content_dir: Path) -> tuple[DicomInstanceEntry, ...]:
    """Every DICOM instance file under ``content_dir``, by file name."""
    return _described(content_dir, sorted(p for p in content_dir.rglob("*") if p.is_file()))


def describe_files(content_dir: Path, names: list[str]) -> tuple[DicomInstanceEntry, ...]:
    """The DICOM instances among the files ``names`` of ``content_dir``."""
    return _described(content_dir, [content_dir / name for name in names])


def _described(content_dir: Path, paths: list[Path]) -> tuple[DicomInstanceEntry, ...]:
    found = []
    for path in paths:
        if not is_dicom(path):
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        entry = _entry(header, path.relative_to(content_dir).as_posix())
        if entry is not None:
            found.append(entry)
    return tuple(found)


def _entry(header: Dataset, file_name: str) -> DicomInstanceEntry | None:
    uids = [str(header.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID")]
    sop = str(header.get("SOPInstanceUID", ""))
    sop_class = str(header.get("SOPClassUID", ""))
    meta = getattr(header, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not (all(uids) and sop and sop_class and syntax):
        return None
    if syntax == IMPLICIT_LITTLE_ENDIAN:
        syntax = EXPLICIT_LITTLE_ENDIAN
    return DicomInstanceEntry(
        study_uid=uids[0],
        series_uid=uids[1],
        sop_uid=sop,
        sop_class_uid=sop_class,
        transfer_syntax_uid=syntax,
        file_name=file_name,
        number_of_frames=_integer(header, "NumberOfFrames") or 1,
        rows=_integer(header, "Rows"),
        columns=_integer(header, "Columns"),
        modality=_text(header, "Modality"),
        patient_id=_text(header, "PatientID"),
        patient_name=_text(header, "PatientName"),
        study_date=_text(header, "StudyDate"),
        accession_number=_text(header, "AccessionNumber"),
        study_id=_text(header, "StudyID"),
        series_number=_integer(header, "SeriesNumber"),
        instance_number=_integer(header, "InstanceNumber"),
        attributes=_qido_attributes(header),
    )


def _qido_attributes(header: Dataset) -> dict[str, Any]:
    subset = Dataset()
    for keyword in QIDO_KEYWORDS:
        element = header.data_element(keyword) if keyword in header else None
        if element is not None:
            subset.add(element)
    attributes: dict[str, Any] = subset.to_json_dict()
    return attributes


def _text(header: Dataset, keyword: str) -> str | None:
    value = header.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _integer(header: Dataset, keyword: str) -> int | None:
    value = header.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
