"""The identifying values a source slide carries, taken from it before conversion: file
names, vendor metadata fields, and the DICOM attributes the confidentiality profile targets.

These are what the proof looks for in the stored bytes, in every spelling vendors use for
dates, as ASCII and UTF-16.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset

# Shorter values would match by chance somewhere in gigabytes of compressed pixels.
MIN_SCANNED_CHARS = 5
MAX_VALUE_CHARS = 256

# Vendor fields (OpenSlide property names) that identify a patient, a person, a device, a
# place or a moment: SVS ImageDescription (Filename, Date, Time, User, ScanScope ID…),
# NDPI tags (serial numbers, dates, barcode), MRXS Slidedat.ini, Philips, Leica, Ventana.
VENDOR_FIELD = re.compile(
    r"(file ?name|date|time(?! ?zone)|user|operator|serial|s/n|barcode|scanscope id|"
    r"slide_?id|slide_?name|slide_?label|reference|created|updated|artist|host ?computer|"
    r"document ?name|imageid|image ?id|rack|dsr id|project|comment|title|label|"
    r"patient|accession|specimen|institution|station|uuid|hardware|device|computer)",
    re.IGNORECASE,
)
# Vendor fields that match the pattern above but hold no identifying value.
NOT_IDENTIFYING = re.compile(
    r"(exposure|openslide\.|\.level\[|roi\.|\.macro\.height|\.macro\.width)", re.IGNORECASE
)

DATE_FORMATS = (
    "%m/%d/%y",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%Y/%m/%d",
    "%Y-%m-%d",
    "%Y:%m:%d",
    "%Y%m%d",
    "%d.%m.%Y",
)
DATE_SPELLINGS = ("%Y%m%d", "%Y-%m-%d", "%Y:%m:%d", "%Y/%m/%d", "%m/%d/%y", "%m/%d/%Y", "%d.%m.%Y")


@dataclass(frozen=True, order=True)
class IdentifyingValue:
    """A value found in the source, and the field it came from (the field is reported; the
    value never is)."""

    field: str
    value: str


def from_file_names(files: Sequence[Path]) -> list[IdentifyingValue]:
    """File names, and the folder of a slide made of several files (the folder is then the
    slide's name; the folder of a single file is only where the steward put it)."""
    values = []
    for path in files:
        values.append(IdentifyingValue("file name", path.name))
        values.append(IdentifyingValue("file name", path.stem))
    if len(files) > 1 and files[0].parent.name:
        values.append(IdentifyingValue("folder name", files[0].parent.name))
    return values


def from_properties(properties: Mapping[str, str]) -> list[IdentifyingValue]:
    """Identifying vendor fields among a slide's OpenSlide-style properties."""
    values = []
    for key, value in properties.items():
        if VENDOR_FIELD.search(key) and not NOT_IDENTIFYING.search(key):
            values.append(IdentifyingValue(key, value.strip()))
    return values


def from_dicom(datasets: Iterable[Dataset], targeted: set[int]) -> list[IdentifyingValue]:
    """String values of the attributes the profile removes, empties or replaces, at any depth
    (``targeted`` holds their tags)."""
    values = []
    for dataset in datasets:
        for element in _walk(dataset):
            if int(element.tag) in targeted and element.VR not in ("SQ", "OB", "OW", "UN"):
                for item in element.value if element.VM > 1 else [element.value]:
                    if item not in (None, ""):
                        values.append(
                            IdentifyingValue(element.keyword or str(element.tag), str(item))
                        )
    return values


def _walk(dataset: Dataset) -> Iterator[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield from dataset.iterall()


def spellings(values: Iterable[IdentifyingValue]) -> list[IdentifyingValue]:
    """Every value with its date and time spellings added, trimmed, de-duplicated, and
    without those too short to look for."""
    found: set[IdentifyingValue] = set()
    for item in values:
        value = item.value.strip()[:MAX_VALUE_CHARS]
        candidates = {value, *_date_spellings(value), *_time_spellings(value)}
        for candidate in candidates:
            if len(candidate) >= MIN_SCANNED_CHARS:
                found.add(IdentifyingValue(item.field, candidate))
    return sorted(found)


def too_short(values: Iterable[IdentifyingValue]) -> list[str]:
    """Fields whose values are too short to look for by bytes (reported, not scanned)."""
    return sorted({v.field for v in values if 0 < len(v.value.strip()) < MIN_SCANNED_CHARS})


def _date_spellings(value: str) -> set[str]:
    """Every reading of the value as a date (03/04/2019 is March or April), each spelled
    every way."""
    head = value.split(" ")[0].split("T")[0]
    found: set[str] = set()
    for fmt in DATE_FORMATS:
        try:
            day = dt.datetime.strptime(head, fmt).date()
        except ValueError:
            continue
        found |= {day.strftime(spelling) for spelling in DATE_SPELLINGS}
    return found


def _time_spellings(value: str) -> set[str]:
    match = re.search(r"\b(\d{2}):(\d{2}):(\d{2})\b", value)
    if not match:
        return set()
    hh, mm, ss = match.groups()
    return {f"{hh}:{mm}:{ss}", f"{hh}{mm}{ss}"}
