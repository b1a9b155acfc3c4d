"""The DICOM PS3.15 Basic Application Level Confidentiality Profile, applied to a dataset.

The table of attributes and their actions (D, Z, X, U and the combined ones) comes from
dicom-anonymizer, which follows the standard's releases. The actions are ours: its own
action functions make random UIDs in a process-wide dictionary and print to stdout, while a
repository needs UIDs and dates that are the same for every instance of one slide and
reproducible with the repository's key. Sequences are walked to any depth, because WSI
datasets keep specimen and container identifiers inside them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from collections.abc import Sequence as ValuesSequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from slidebank.deid.pseudonyms import Pseudonymizer

DatePolicy = Literal["remove", "shift"]
Action = Literal["remove", "empty", "dummy", "uid"]

STANDARD_TABLE = "dicomfields_2024b"
DATE_VRS = {"DA", "DT", "TM"}
TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "PN", "UC"}
# Dummy values by VR for "D" attributes the profile keeps but must not be real.
DUMMIES: dict[str, Any] = {
    "PN": "ANONYMOUS",
    "LO": "REMOVED",
    "SH": "REMOVED",
    "LT": "REMOVED",
    "ST": "REMOVED",
    "UT": "REMOVED",
    "CS": "REMOVED",
    "AS": "000Y",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "IS": "0",
    "DS": "0",
}
# ContentTime as wsidicom writes it (HHMMSS.FFFFFF), the dummy time of a converted slide.
DUMMY_TIME_FRACTION = "000000.000000"
# Every value the profile and the conversion write in place of a real one: in every stored
# slide, so the byte check cannot look for them (a source de-identified before holds them).
WRITTEN_DUMMIES = (*(str(value) for value in DUMMIES.values()), DUMMY_TIME_FRACTION)
# Attributes the WSI IOD requires (type 1: a value; type 2: present, maybe empty) that the
# profile would remove or empty: they stay, with a dummy value (PS3.15 action D) or empty (Z).
# AcquisitionDateTime is type 1 in the Whole Slide Microscopy Image Module (PS3.3 C.8.12.4);
# ContentDate and ContentTime are type 1 in the Multi-frame Functional Groups Module
# (C.7.6.16), which the VL WSI IOD includes. The dummies (DUMMIES: 19000101, 000000) are the
# same for every slide and either date policy, so they say nothing about a case's shift.
REQUIRED_VALUE = {"AcquisitionDateTime", "ContentDate", "ContentTime"}
REQUIRED_PRESENT = {
    "AcquisitionContextSequence",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientBirthDate",
    "PatientSex",
}
# Dates that are placeholders, never a scan: the Unix epoch (wsidicom writes it when the
# source's date is withheld: 1970-01-01 in UTC, 1969-12-31 in a zone west of it) and the
# dummy date above (a slide de-identified before). Shifting one would publish the shift
# itself, and with it the real dates of the case's other slides; they are treated as if
# the policy were "remove". Birth dates are exempt: people are born on those days.
PLACEHOLDER_DATES = {"19700101", "19691231", DUMMIES["DA"]}
# Codes of PS3.16 CID 7050 "De-identification Method".
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
MODIFIED_DATES_CODE = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")


@dataclass
class Pseudonyms:
    """The values that replace identifiers in one slide."""

    patient: str
    case: str
    slide: str
    date_shift: dt.timedelta | None = None
    """None: dates are removed; otherwise dates move back by this much."""


@dataclass
class ProfileReport:
    """What the profile did to one dataset, by attribute keyword."""

    removed: set[str] = field(default_factory=set)
    emptied: set[str] = field(default_factory=set)
    replaced: set[str] = field(default_factory=set)
    new_uids: set[str] = field(default_factory=set)
    shifted: set[str] = field(default_factory=set)
    cleaned: set[str] = field(default_factory=set)
    private_removed: int = 0

    def merge(self, other: ProfileReport) -> None:
        self.removed |= other.removed
        self.emptied |= other.emptied
        self.replaced |= other.replaced
        self.new_uids |= other.new_uids
        self.shifted |= other.shifted
        self.cleaned |= other.cleaned
        self.private_removed += other.private_removed

    def as_json(self) -> dict[str, Any]:
        return {
            "removed": sorted(self.removed),
            "emptied": sorted(self.emptied),
            "replaced": sorted(self.replaced),
            "new_uids": sorted(self.new_uids),
            "shifted_dates": sorted(self.shifted),
            "cleaned_descriptors": sorted(self.cleaned),
            "private_attributes_removed": self.private_removed,
        }


@cache
def profile_actions() -> dict[BaseTag, Action]:
    """Tag → action of the Basic Profile, combined actions resolved to the strictest one that
    keeps a conformant WSI dataset (type 1 and 2 attributes are set again by ``_identify``)."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    table = dicom_anonymization_database_selector(STANDARD_TABLE)
    by_category: dict[str, Action] = {
        "X_TAGS": "remove",
        "X_Z_TAGS": "remove",
        "X_D_TAGS": "remove",
        "X_Z_D_TAGS": "remove",
        "Z_TAGS": "empty",
        "Z_D_TAGS": "empty",
        "D_TAGS": "dummy",
        "U_TAGS": "uid",
        "X_Z_U_STAR_TAGS": "uid",
    }
    actions: dict[BaseTag, Action] = {}
    for category, action in by_category.items():
        for entry in table[category]:
            if len(entry) == 2:  # repeating groups (curves, overlays) are removed below
                actions[Tag(entry[0], entry[1])] = action
    return actions


# Identifiers the WSI IOD requires, set to pseudonyms instead of what the profile would do.
def _identify(names: Pseudonyms) -> dict[str, str]:
    return {
        "PatientID": names.patient,
        "PatientName": names.patient,
        "StudyID": names.case[:16],
        "ContainerIdentifier": names.slide,
        "SpecimenIdentifier": names.slide,
    }


def deidentify_dataset(
    dataset: Dataset,
    names: Pseudonyms,
    pseudonymizer: Pseudonymizer,
    *,
    replace_uids: bool = True,
    known_values: ValuesSequence[str] = (),
    dates_from_source: bool = True,
) -> ProfileReport:
    """Apply the profile to ``dataset`` in place (its file meta too) and return what changed.

    Text attributes the profile keeps but that contain one of ``known_values`` (identifying
    values of this source, e.g. an institution named inside a model name) are replaced too,
    in the spirit of the profile's Clean Descriptors Option.

    ``dates_from_source=False`` says the dataset's dates and times were not taken from the
    source (wsidicomizer's output, which carries none over: what it writes is a placeholder
    or the moment of conversion). None of them is shifted, whatever the date policy: every
    date, date-time and time is removed (PS3.15 action X), or, where the WSI IOD requires
    it, emptied (Z) or set to the fixed dummy (D). Shifting a value that did not come from
    the source would publish the shift."""
    report = ProfileReport()
    needles = [value.casefold() for value in known_values if len(value) >= 5]
    actions = profile_actions()
    pseudonyms = _identify(names)
    shift = names.date_shift if dates_from_source else None

    def uid(value: str) -> str:
        return pseudonymizer.uid(value)

    def visit(ds: Dataset) -> None:
        report.private_removed += sum(1 for element in ds if element.tag.is_private)
        ds.remove_private_tags()
        for element in list(ds):
            if element.VR == "SQ":
                for item in element.value or ():
                    visit(item)
            _apply(
                ds,
                element,
                actions,
                pseudonyms,
                uid,
                replace_uids,
                report,
                shift=shift,
                dates_from_source=dates_from_source,
            )
            if element.tag in ds and element.VR in TEXT_VRS:
                _clean(element, needles, report)
        for element in list(ds):
            # Curves and overlays (repeating groups 50xx, 60xx) may carry burnt-in text.
            if element.tag.group & 0xFF00 in (0x5000, 0x6000):
                report.removed.add(element.keyword or str(element.tag))
                del ds[element.tag]

    visit(dataset)
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and replace_uids and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    _mark_deidentified(dataset, shifted=shift is not None)
    return report


def _apply(
    ds: Dataset,
    element: DataElement,
    actions: dict[BaseTag, Action],
    pseudonyms: dict[str, str],
    uid: Callable[[str], str],
    replace_uids: bool,
    report: ProfileReport,
    *,
    shift: dt.timedelta | None,
    dates_from_source: bool,
) -> None:
    keyword = element.keyword or str(element.tag)
    if keyword in pseudonyms:
        if element.value != pseudonyms[keyword]:
            element.value = pseudonyms[keyword]
            report.replaced.add(keyword)
        return
    action = actions.get(element.tag)
    if element.VR in DATE_VRS and not dates_from_source:
        action = "remove"  # not the source's: nothing to keep or shift (then type 1/2 below)
    if action is None:
        return
    if action in ("remove", "empty") and keyword in REQUIRED_VALUE:
        action = "dummy"
    elif action == "remove" and keyword in REQUIRED_PRESENT:
        action = "empty"
    if (
        element.VR in DATE_VRS
        and element.VR != "TM"  # a time of day alone is never kept: the action applies
        and shift is not None
        and action != "remove"
        and not _placeholder(keyword, element.value)
    ):
        shifted = _shift(element.value, shift)
        if shifted != element.value:
            element.value = shifted
            report.shifted.add(keyword)
        return
    if action == "remove":
        del ds[element.tag]
        report.removed.add(keyword)
    elif action == "empty" or (action == "dummy" and element.VR == "SQ"):
        if element.VR == "SQ":
            element.value = Sequence([])
        elif element.value not in (None, ""):
            element.value = None
            report.emptied.add(keyword)
    elif action == "dummy":
        if element.value not in (None, ""):
            element.value = DUMMIES.get(element.VR)
            report.replaced.add(keyword)
    elif action == "uid" and element.VR == "UI":
        if replace_uids and element.value:
            values = element.value if element.VM > 1 else [element.value]
            new = [uid(str(v)) for v in values]
            element.value = new if element.VM > 1 else new[0]
            report.new_uids.add(keyword)
    elif action == "uid":
        del ds[element.tag]
        report.removed.add(keyword)


def _clean(element: DataElement, needles: list[str], report: ProfileReport) -> None:
    values = element.value if element.VM > 1 else [element.value]
    text = "\\".join(str(value) for value in values if value is not None).casefold()
    if any(needle in text for needle in needles):
        element.value = DUMMIES.get(element.VR)
        report.cleaned.add(element.keyword or str(element.tag))


def _placeholder(keyword: str, value: Any) -> bool:
    """Whether a date or date-time is a known placeholder (``PLACEHOLDER_DATES``) rather
    than a moment of the source (a birth date never is)."""
    if value in (None, "") or "Birth" in keyword:
        return False
    return str(value).strip()[:8] in PLACEHOLDER_DATES


def _shift(value: Any, shift: dt.timedelta) -> Any:
    """Dates move back by ``shift``; a date-time keeps only its shifted date (a DT value of
    day precision, PS3.5 6.2): its time of day and offset from UTC are dropped, as a time of
    day alone is (with the date shifted, the time would still narrow down the scan). A value
    that does not read as a date is removed (None)."""
    if value in (None, ""):
        return value
    try:
        day = dt.datetime.strptime(str(value).strip()[:8], "%Y%m%d")
    except ValueError:
        return None
    return (day - shift).strftime("%Y%m%d")


def _mark_deidentified(dataset: Dataset, *, shifted: bool) -> None:
    dataset.PatientIdentityRemoved = "YES"
    # An LO value: at most 64 characters, with the option's words.
    method = "Slidebank: PS3.15 Basic Profile, keyed pseudonyms"
    codes = [BASIC_PROFILE_CODE]
    # Only where this dataset's dates could be shifted: a converted slide's dates are
    # removed whatever the policy, and claiming the option there would be untrue.
    if shifted:
        method += ", dates shifted"
        codes.append(MODIFIED_DATES_CODE)
    dataset.DeidentificationMethod = method
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    dataset.DeidentificationMethodCodeSequence = Sequence(items)
