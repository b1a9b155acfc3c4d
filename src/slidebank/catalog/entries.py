"""What a caller tells the catalogue about a slide: the case → slide hierarchy and the scan.

Plain data, shared by the sidecar parser (which fills the descriptive part) and ingest
(which fills the scan part).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ObservationKind = Literal["diagnosis", "finding", "description"]
OBSERVATION_KINDS: tuple[str, ...] = ("diagnosis", "finding", "description")


@dataclass(frozen=True)
class ObservationEntry:
    """A coded and/or free-text statement."""

    kind: ObservationKind
    code: str | None = None
    scheme: str | None = None
    meaning: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class SlideEntry:
    """Descriptive metadata for one scanned slide, as given in a sidecar."""

    case: str | None = None
    species: str | None = None
    specimen: str | None = None
    anatomical_site: str | None = None
    sampling: str | None = None
    block: str | None = None
    slide: str | None = None
    stain_compound: str | None = None
    stain_target: str | None = None
    stain_method: str | None = None
    case_observations: tuple[ObservationEntry, ...] = ()
    specimen_observations: tuple[ObservationEntry, ...] = ()
    slide_observations: tuple[ObservationEntry, ...] = ()


@dataclass(frozen=True)
class StoredFile:
    """One file of a stored slide."""

    name: str
    """Neutral name inside the stored content folder."""
    original: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ScanEntry:
    """Facts read from the scanned file, and where its bytes are stored."""

    format: str
    vendor: str | None
    backend: str
    width: int
    height: int
    levels: list[dict[str, Any]]
    mpp_x: float | None
    mpp_y: float | None
    objective_power: float | None
    associated: list[dict[str, Any]]
    properties: dict[str, str]
    checksum: str
    storage_key: str
    files: tuple[StoredFile, ...]
    source_name: str

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class DatasetEntry:
    short_name: str
    title: str | None = None
    version: str | None = None
    licence: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class DicomInstanceEntry:
    """One DICOM instance file of a stored slide, as the DICOMweb index keeps it."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_name: str
    """Relative path inside the slide's stored content folder."""
    number_of_frames: int
    rows: int | None
    columns: int | None
    modality: str | None
    patient_id: str | None
    patient_name: str | None
    study_date: str | None
    accession_number: str | None
    study_id: str | None
    series_number: int | None
    instance_number: int | None
    attributes: dict[str, Any]
    """The attributes QIDO-RS answers with, as DICOM JSON (no bulk data)."""
