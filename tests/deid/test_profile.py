"""The Basic Profile on a WSI-like dataset: what goes, what becomes a pseudonym, dates
removed or shifted, UIDs consistent across instances."""

from __future__ import annotations

import datetime as dt

from pydicom import Dataset
from pydicom.sequence import Sequence

from slidebank.deid.profile import Pseudonyms, deidentify_dataset
from slidebank.deid.pseudonyms import Pseudonymizer

KEY = Pseudonymizer(b"k" * 32)


def _instance(sop: str) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = "1.2.3.100"
    ds.SeriesInstanceUID = "1.2.3.200"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "H-2024-0042"
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20240317"
    ds.AcquisitionDateTime = "20240317101500"
    ds.InstitutionName = "St. Elsewhere"
    ds.ManufacturerModelName = "Scanner at St. Elsewhere"
    ds.ContainerIdentifier = "S24-0042 A1"
    specimen = Dataset()
    specimen.SpecimenIdentifier = "S24-0042 A1"
    specimen.SpecimenUID = "1.2.3.300"
    ds.SpecimenDescriptionSequence = Sequence([specimen])
    ds.add_new(0x00091010, "LO", "private note")
    return ds


def _names(shift: dt.timedelta | None = None) -> Pseudonyms:
    case = KEY.pseudonym("case", "H-2024-0042")
    return Pseudonyms(case, case, KEY.pseudonym("slide", "S24-0042 A1"), shift)


def test_identifiers_go_and_required_ones_become_pseudonyms() -> None:
    ds = _instance("1.2.3.1")
    report = deidentify_dataset(ds, _names(), KEY, known_values=["St. Elsewhere"])
    assert ds.PatientID == ds.PatientName == _names().patient
    assert ds.ContainerIdentifier == _names().slide
    assert ds.SpecimenDescriptionSequence[0].SpecimenIdentifier == _names().slide
    assert "InstitutionName" not in ds
    assert ds.ManufacturerModelName != "Scanner at St. Elsewhere"  # cleaned descriptor
    assert not ds.StudyDate and not ds.PatientBirthDate
    assert ds.AcquisitionDateTime == "19000101000000"  # type 1 in WSI: a dummy, not gone
    assert not any(element.tag.is_private for element in ds)
    assert report.private_removed == 1
    assert ds.PatientIdentityRemoved == "YES"
    assert "InstitutionName" in report.removed and "ManufacturerModelName" in report.cleaned


def test_uids_are_new_and_the_same_for_every_instance_of_the_slide() -> None:
    first, second = _instance("1.2.3.1"), _instance("1.2.3.2")
    for ds in (first, second):
        deidentify_dataset(ds, _names(), KEY)
    assert first.StudyInstanceUID == second.StudyInstanceUID != "1.2.3.100"
    assert first.SeriesInstanceUID == second.SeriesInstanceUID != "1.2.3.200"
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.SpecimenDescriptionSequence[0].SpecimenUID != "1.2.3.300"


def test_dates_shift_by_the_case_s_interval_when_asked() -> None:
    shift = KEY.date_shift("H-2024-0042")
    ds = _instance("1.2.3.1")
    deidentify_dataset(ds, _names(shift), KEY)
    expected = (dt.date(2024, 3, 17) - shift).strftime("%Y%m%d")
    assert ds.StudyDate == expected
    assert ds.AcquisitionDateTime.startswith(expected)
    assert ds.DeidentificationMethodCodeSequence[-1].CodeValue == "113107"
