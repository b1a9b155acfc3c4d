"""The identifying values a source slide carries, taken from it before conversion: file
names, vendor metadata fields, and the DICOM attributes the confidentiality profile targets.

These are what the proof looks for in the stored bytes, in every spelling vendors use for
dates, as ASCII and UTF-16.
"""

from __future__ import annotations

import contextlib
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

# How dates are written, by vendors (Aperio 12/29/09, TIFF 2009:12:29, DICOM 20091229,
# 3DHISTECH 29/12/2009) and by people (29.12.09, 29-DEC-2009, Dec 29 2009): each date found
# in a value is looked for in every one of these. English month names only: case does not
# matter to the scan, the language would. Each spelling has at least 8 characters, so that
# a chance match in compressed pixels stays negligible (8 given bytes: about 5 in 10^11
# per spelling and gigabyte of random bytes).
DATE_SPELLINGS = (
    "%Y%m%d",
    "%Y-%m-%d",
    "%Y:%m:%d",
    "%Y/%m/%d",
    "%Y.%m.%d",
    "%m/%d/%y",
    "%m/%d/%Y",
    "%d/%m/%y",
    "%d/%m/%Y",
    "%d.%m.%y",
    "%d.%m.%Y",
    "%m-%d-%Y",
    "%d-%m-%Y",
    "{d}-{b}-%Y",
    "{d}-{b}-%y",
    "{d} {b} %Y",
    "{d} {B} %Y",
    "{b} {d} %Y",
    "{b} {d}, %Y",
    "{B} {d}, %Y",
    "{b} {e} %Y",
)
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# Years a date of a slide, a scan or a person may have; outside them, digits that happen
# to fit a date pattern (a version, a serial) are not read as one.
YEARS = range(1900, 2101)
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
# Dates anywhere in a value, and how to read their groups: the year first (ISO, TIFF,
# 2017/01/27), the year last (12/29/09 is read month first and day first: 03/04/19 is March
# or April), digits alone (DICOM DA and DT), or a month by name (29-DEC-2009, Dec 29 2009).
_YEAR_FIRST = re.compile(r"(?<![\d.])(\d{4})([-/.:])(\d{1,2})\2(\d{1,2})(?![\d.])")
_YEAR_LAST = re.compile(r"(?<![\d.:/-])(\d{1,2})([-/.])(\d{1,2})\2(\d{4}|\d{2})(?![\d.:/-])")
# A DICOM DA or DT: YYYYMMDD, then maybe HH, MM, SS, a fraction and an offset from UTC.
_COMPACT = re.compile(
    r"(?<![\d.])(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,6})?(?:[+-]\d{4})?(?![\d.])"
)
_DAY_MONTH_NAME = re.compile(
    r"(?<![\d.])(\d{1,2})(?:st|nd|rd|th)?[- ]" + _MONTH + r"[- ,]+(\d{4}|\d{2})(?!\d)",
    re.IGNORECASE,
)
# ctime's "Tue Dec 29 09:59:15 2009" puts the time between the day and the year.
_MONTH_NAME_DAY = re.compile(
    r"(?<![a-z])"
    + _MONTH
    + r"\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(?:\d{1,2}:\d{2}(?::\d{2})?\s+)?(\d{4})(?!\d)",
    re.IGNORECASE,
)
# Times of day with separators (09:59:15, 13:06, 9:59:15), not inside a longer run of
# digits and colons (2017:02:07 holds no time). The hh:mm spelling is the shortest pattern
# scanned (5 bytes, like a 5-character file name): by chance about once in 1,000 gigabytes
# of random bytes per value; the scan bounds it by bytes that are not digits or colons.
_CLOCK = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?::(\d{2}))?(?![\d:])")
# A DICOM TM value (HHMMSS, HHMM, with a fraction): digits alone, so read as a time only
# in a field that is one (a serial number such as 950291 is not).
_TM = re.compile(r"(\d{2})(\d{2})(\d{2})?(?:\.\d{1,6})?")
_TIME_FIELD = re.compile(r"time", re.IGNORECASE)


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
        candidates = {value, *_date_spellings(value), *_time_spellings(value, item.field)}
        for candidate in candidates:
            if len(candidate) >= MIN_SCANNED_CHARS:
                found.add(IdentifyingValue(item.field, candidate))
    return sorted(found)


def too_short(values: Iterable[IdentifyingValue]) -> list[str]:
    """Fields whose values are too short to look for by bytes (reported, not scanned)."""
    return sorted({v.field for v in values if 0 < len(v.value.strip()) < MIN_SCANNED_CHARS})


def _date_spellings(value: str) -> set[str]:
    """Every date the value holds, in every reading (03/04/2019 is March or April), each
    spelled every way."""
    found: set[str] = set()
    for day in _dates_in(value):
        found |= {_spell(day, spelling) for spelling in DATE_SPELLINGS}
    return found


def _spell(day: dt.date, spelling: str) -> str:
    month = MONTHS[day.month - 1]
    named = spelling.format(d=f"{day.day:02d}", e=str(day.day), b=month[:3], B=month)
    return day.strftime(named)


def _dates_in(value: str) -> set[dt.date]:
    readings: set[tuple[int, int, int]] = set()
    for match in _YEAR_FIRST.finditer(value):
        readings.add((int(match[1]), int(match[3]), int(match[4])))
    for match in _COMPACT.finditer(value):
        readings.add((int(match[1]), int(match[2]), int(match[3])))
    for match in _YEAR_LAST.finditer(value):
        if len(match[4]) == 2 and len(match[1] + match[3]) < 4:
            continue  # 4.1.12 is a version; with a two-digit year, vendors pad (01/04/12)
        first, second, year = int(match[1]), int(match[3]), _full_year(match[4])
        readings |= {(year, first, second), (year, second, first)}
    for match in _DAY_MONTH_NAME.finditer(value):
        readings.add((_full_year(match[3]), _month_number(match[2]), int(match[1])))
    for match in _MONTH_NAME_DAY.finditer(value):
        readings.add((int(match[3]), _month_number(match[1]), int(match[2])))
    days = set()
    for year, month, day in readings:
        if year in YEARS:
            with contextlib.suppress(ValueError):  # not a day of the calendar
                days.add(dt.date(year, month, day))
    return days


def _full_year(digits: str) -> int:
    """Two-digit years as strptime's %y reads them (69-99: 1900s, 00-68: 2000s)."""
    year = int(digits)
    if len(digits) == 2:
        year += 1900 if year >= 69 else 2000
    return year


def _month_number(name: str) -> int:
    return [month[:3].casefold() for month in MONTHS].index(name[:3].casefold()) + 1


def _time_spellings(value: str, field: str = "") -> set[str]:
    """Every time of day the value holds (hh:mm:ss, a DICOM DT's time, a DICOM TM in a time
    field), spelled hh:mm:ss, hhmmss and hh:mm."""
    times: set[tuple[int, int, int | None]] = set()
    for match in _CLOCK.finditer(value):
        times.add((int(match[1]), int(match[2]), int(match[3]) if match[3] else None))
    for match in _COMPACT.finditer(value):
        if match[4] is not None and match[5] is not None:
            times.add((int(match[4]), int(match[5]), int(match[6]) if match[6] else None))
    tm = _TM.fullmatch(value) if _TIME_FIELD.search(field) else None
    if tm is not None:
        times.add((int(tm[1]), int(tm[2]), int(tm[3]) if tm[3] else None))
    found: set[str] = set()
    for hours, minutes, seconds in times:
        if hours > 23 or minutes > 59 or (seconds is not None and seconds > 59):
            continue
        found.add(f"{hours:02d}:{minutes:02d}")
        if seconds is not None:
            found |= {
                f"{hours:02d}:{minutes:02d}:{seconds:02d}",
                f"{hours}:{minutes:02d}:{seconds:02d}",
                f"{hours:02d}{minutes:02d}{seconds:02d}",
            }
    return found
