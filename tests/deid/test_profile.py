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


def test_a_shifted_date_time_keeps_only_its_date() -> None:
    """The time of day (and the offset from UTC) would narrow the scan down even with the
    date moved: a shifted DT is a date of day precision, a time alone is a dummy."""
    shift = KEY.date_shift("H-2024-0042")
    expected = (dt.date(2024, 3, 17) - shift).strftime("%Y%m%d")
    for source in ("20240317101500", "20240317101500.123456+0200", "20240317"):
        ds = _instance("1.2.3.1")
        ds.AcquisitionDateTime = source
        ds.ContentDate = "20240317"
        ds.ContentTime = "101500.123"
        ds.StudyTime = "101500"
        deidentify_dataset(ds, _names(shift), KEY)
        assert ds.AcquisitionDateTime == expected, source
        assert ds.ContentDate == expected
        assert ds.ContentTime == "000000"  # type 1 in the WSI IOD: a dummy, not the time
        assert not ds.StudyTime


def test_a_placeholder_date_is_not_shifted() -> None:
    """wsidicom's epoch (and our own dummy, in a slide de-identified before) shifted would
    publish the case's shift; it is treated as if dates were removed. A birth date on
    1970-01-01 is a person's, and is shifted like any other."""
    shift = KEY.date_shift("H-2024-0042")
    for placeholder in ("19700101000000", "19700101", "19691231190000-0500", "19000101000000"):
        ds = _instance("1.2.3.1")
        ds.AcquisitionDateTime = placeholder
        ds.StudyDate = placeholder[:8]
        ds.PatientBirthDate = "19700101"
        report = deidentify_dataset(ds, _names(shift), KEY)
        assert ds.AcquisitionDateTime == "19000101000000", placeholder  # type 1: the dummy
        assert not ds.StudyDate
        assert ds.PatientBirthDate == (dt.date(1970, 1, 1) - shift).strftime("%Y%m%d")
        assert "AcquisitionDateTime" not in report.shifted


def test_dates_not_from_the_source_are_never_shifted() -> None:
    """wsidicomizer's datasets hold no date of the source: under either policy each date
    and time goes, or is the fixed dummy where the WSI IOD requires a value, and the
    dataset does not claim the shifted-dates option."""
    for shift in (None, KEY.date_shift("H-2024-0042")):
        ds = _instance("1.2.3.1")
        ds.AcquisitionDateTime = "19700101000000"
        ds.ContentDate = "20261129"
        ds.ContentTime = "041600.902720"
        ds.SeriesDate = "20261129"
        ds.add_new(0x00181200, "DA", "20261129")  # DateOfLastCalibration
        report = deidentify_dataset(ds, _names(shift), KEY, dates_from_source=False)
        assert ds.AcquisitionDateTime == "19000101000000"
        assert ds.ContentDate == "19000101" and ds.ContentTime == "000000"
        assert not ds.StudyDate and not ds.PatientBirthDate
        assert "SeriesDate" not in ds and "DateOfLastCalibration" not in ds
        assert not report.shifted
        codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
        assert codes == ["113100"]
        assert len(ds.DeidentificationMethod) <= 64


def test_required_content_date_and_time_get_dummies_when_dates_are_removed() -> None:
    ds = _instance("1.2.3.1")
    ds.ContentDate = "20240317"
    ds.ContentTime = "101500"
    deidentify_dataset(ds, _names(), KEY)
    assert ds.ContentDate == "19000101" and ds.ContentTime == "000000"
