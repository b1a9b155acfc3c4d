from __future__ import annotations

import os
from pathlib import Path

from slidebank.deid.identifiers import IdentifyingValue, from_properties, spellings
from slidebank.deid.scan import CHUNK_BYTES, ValueScanner


def test_finds_ascii_utf16_and_across_chunk_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    noise = os.urandom(CHUNK_BYTES - 3)
    # "CPAPERIOCS" straddles the first chunk boundary; the user id is UTF-16 further on.
    path.write_bytes(noise + b"CPAPERIOCS" + os.urandom(1000) + "b414003d-95c6".encode("utf-16-le"))
    values = [
        IdentifyingValue("aperio.ScanScope ID", "CPAPERIOCS"),
        IdentifyingValue("aperio.User", "b414003d-95c6"),
        IdentifyingValue("aperio.Filename", "not-there-at-all"),
    ]
    findings, _ = ValueScanner(values).scan(path, "blob")
    found = {(f.field, f.encoding, f.offset) for f in findings}
    assert ("aperio.ScanScope ID", "ascii", len(noise)) in found
    assert ("aperio.User", "utf-16-le", len(noise) + 10 + 1000) in found
    assert not any(f.field == "aperio.Filename" for f in findings)


def test_case_does_not_hide_a_value(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"....cpaperiocs....")
    findings, _ = ValueScanner([IdentifyingValue("id", "CPAPERIOCS")]).scan(path, "blob")
    assert [f.field for f in findings] == ["id"]


def test_short_numbers_are_found_alone_not_inside_a_uid(tmp_path: Path) -> None:
    """A time (095915) or a serial number inside a random UID's digits is chance, not a
    leak; the same digits standing alone (a DICOM TM value, a text field) are found, and a
    date-time run is found by its date and by its time of day."""
    path = tmp_path / "blob"
    path.write_bytes(
        b"\x02\x00UI2.25.286205537962472572510959155\x00"  # 095915 by chance
        + b"TM\x06\x00095915"
        + b" serial=950291;"
        + b"DT20091229095915.000"
    )
    values = [
        IdentifyingValue("aperio.Time", "095915"),
        IdentifyingValue("ndpi.serial", "950291"),
        IdentifyingValue("aperio.Date", "20091229"),
    ]
    findings, _ = ValueScanner(values).scan(path, "blob")
    data = path.read_bytes()
    assert sorted((f.field, f.offset) for f in findings) == sorted(
        [
            ("aperio.Time", data.index(b"TM\x06\x00095915") + 4),
            ("ndpi.serial", data.index(b"950291")),
            ("aperio.Date", data.index(b"20091229")),
            ("aperio.Time", data.index(b"20091229") + 8),
        ]
    )


def test_date_spellings_cover_what_vendors_write() -> None:
    scanned = {v.value for v in spellings([IdentifyingValue("aperio.Date", "12/29/09")])}
    assert {
        "12/29/09",
        "20091229",
        "2009-12-29",
        "2009:12:29",
        "2009/12/29",
        "29.12.2009",
    } <= scanned
    ndpi = {v.value for v in spellings([IdentifyingValue("tiff.DateTime", "2017:02:07 13:06:43")])}
    assert {"20170207", "2017-02-07", "13:06:43", "130643"} <= ndpi
    mrxs = {v.value for v in spellings([IdentifyingValue("mirax", "14/03/2019 10:22:51")])}
    assert {"20190314", "2019-03-14", "102251"} <= mrxs


def test_vendor_fields_that_identify_are_picked() -> None:
    properties = {
        "aperio.Filename": "CMU-1",
        "aperio.ScanScope ID": "CPAPERIOCS",
        "aperio.MPP": "0.499",
        "hamamatsu.NDP.S/N": "950291",
        "openslide.mpp-x": "0.499",
        "aperio.Time Zone": "GMT+01:00",
        # MRXS Slidedat.ini, as OpenSlide names its keys
        "mirax.GENERAL.SLIDE_ID": "7a1e6c0e-2f4b",
        "mirax.GENERAL.SLIDE_NAME": "H-2019-4471",
        "mirax.GENERAL.SLIDE_CREATIONDATETIME": "14/03/2019 10:22:51",
        "mirax.NONHIERLAYER_0_SECTION.SCANNER_HARDWARE_ID": "P250-3921",
        "mirax.LAYER_0_LEVEL_0_SECTION.MICROMETER_PER_PIXEL_X": "0.243",
    }
    picked = {v.field for v in from_properties(properties)}
    assert picked == {
        "aperio.Filename",
        "aperio.ScanScope ID",
        "hamamatsu.NDP.S/N",
        "mirax.GENERAL.SLIDE_ID",
        "mirax.GENERAL.SLIDE_NAME",
        "mirax.GENERAL.SLIDE_CREATIONDATETIME",
        "mirax.NONHIERLAYER_0_SECTION.SCANNER_HARDWARE_ID",
    }


def _spelled(field: str, value: str) -> set[str]:
    return {v.value for v in spellings([IdentifyingValue(field, value)])}


def test_dates_and_times_are_spelled_as_vendors_and_people_write_them() -> None:
    aperio = _spelled("aperio.Date", "12/29/09") | _spelled("aperio.Time", "09:59:15")
    assert {
        "29/12/2009",
        "29/12/09",
        "Dec 29 2009",
        "Dec 29, 2009",
        "December 29, 2009",
        "29-Dec-2009",
        "29 Dec 2009",
        "29.12.09",
        "2009.12.29",
        "09:59",
    } <= aperio
    ndpi = _spelled("tiff.DateTime", "2017:02:07 13:06:43")
    assert {"07/02/2017", "02/07/2017", "Feb 7 2017", "13:06"} <= ndpi
    assert "02:07" not in ndpi  # 2017:02:07 holds a date, not a time
    # A DICOM DT with its time and offset: its date and its time of day, every way.
    wg26 = _spelled("AcquisitionDateTime", "20120327165454+0200")
    assert {"20120327", "2012-03-27", "27/03/2012", "165454", "16:54:54", "16:54"} <= wg26
    # A DICOM TM in a time field; the same digits in another field are no time.
    assert {"173700", "17:37:00", "17:37"} <= _spelled("ContentTime", "173700.582996")
    assert _spelled("hamamatsu.NDP.S/N", "123456") == {"123456"}
    # Month names in any case and order; ctime puts the time between day and year.
    assert "20091229" in _spelled("comment", "scanned 29-DEC-2009")
    assert "20091229" in _spelled("comment", "Tue Dec 29 09:59:15 2009")
    # Digits that only look like a date: a version, a UID.
    assert _spelled("device", "4.1.12") == {"4.1.12"}
    uid = "2.25.109398059035240247996107284117126607398"
    assert _spelled("uid", uid) == {uid}


def test_each_new_spelling_is_found(tmp_path: Path) -> None:
    values = spellings(
        [
            IdentifyingValue("aperio.Date", "12/29/09"),
            IdentifyingValue("aperio.Time", "09:59:15"),
            IdentifyingValue("tiff.DateTime", "2017:02:07 13:06:43"),
            IdentifyingValue("AcquisitionDateTime", "20120327165454+0200"),
        ]
    )
    planted = {
        b"29/12/2009": "aperio.Date",
        b"Dec 29 2009": "aperio.Date",
        b"29-DEC-2009": "aperio.Date",
        b"29.12.09": "aperio.Date",
        b"09:59": "aperio.Time",
        b"07/02/2017": "tiff.DateTime",
        b"20120327": "AcquisitionDateTime",
        b"165454": "AcquisitionDateTime",
    }
    data = os.urandom(1000)
    offsets = {}
    for spelling, field in planted.items():
        offsets[len(data) + 1] = field
        data += b" " + spelling + b" " + os.urandom(100).replace(b":", b"").translate(_NO_DIGITS)
    path = tmp_path / "blob"
    path.write_bytes(data)
    findings, _ = ValueScanner(values).scan(path, "blob")
    found = {(f.offset, f.field) for f in findings if f.encoding == "ascii"}
    assert set(offsets.items()) <= found


# Random bytes without ASCII digits, so that no planted number runs into a random one.
_NO_DIGITS = bytes.maketrans(b"0123456789", b"abcdefghij")


def test_a_shifted_date_time_that_keeps_the_time_of_day_is_found(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"DT\x0e\x0020030306165454\x08\x00")
    values = spellings([IdentifyingValue("AcquisitionDateTime", "20120327165454+0200")])
    findings, _ = ValueScanner(values).scan(path, "blob")
    assert [(f.field, f.offset) for f in findings] == [("AcquisitionDateTime", 12)]


def test_the_profile_s_own_dummies_are_not_looked_for(tmp_path: Path) -> None:
    """A source de-identified before (a slide downloaded and sent back by STOW) holds the
    dummies as its values; every stored slide holds them too, so they prove nothing. A
    short number inside a dummy's digits is still found on its own."""
    path = tmp_path / "blob"
    path.write_bytes(b"DA\x08\x0019000101DT\x0e\x0019000101000000TM\x06\x00000000 10100 ")
    values = [
        IdentifyingValue("AcquisitionDateTime", "19000101000000"),
        IdentifyingValue("ContentDate", "19000101"),
        IdentifyingValue("ContentTime", "000000"),
        IdentifyingValue("InstitutionName", "REMOVED"),
        IdentifyingValue("serial", "10100"),
    ]
    findings, _ = ValueScanner(spellings(values)).scan(path, "blob")
    assert [f.field for f in findings] == ["serial"]
