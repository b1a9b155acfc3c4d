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
    date-time run is still found by its date."""
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
