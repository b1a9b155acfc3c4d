"""De-identification on the real scanner files: nothing the testdata README lists as
identifying survives in any stored byte; the stored DICOM opens in wsidicom and OpenSlide;
stored tiles are passed through."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pydicom
import pytest
import tifffile

from slidebank.access.policy import COMMAND_LINE
from slidebank.catalog.queries import SlideFilter
from slidebank.config import Settings
from slidebank.services import browsing
from slidebank.services.ingesting import ingest_paths
from slidebank.services.repository import Repository, open_repository
from slidebank.slides import open_slide

# From ../shared/testdata/README.md: the identifying values each file carries.
IDENTIFYING = {
    "CMU-1-Small-Region.svs": [
        "CMU-1",
        "12/29/09",
        "09:59:15",
        "b414003d-95c6-48b0-9369-8010ed517ba7",
        "CPAPERIOCS",
        "2009-12-29",
        "20091229",
    ],
    "test3-DAPI-2-(387).ndpi": [
        "950291",
        "950410",
        "2017:02:07 13:06:43",
        "2017/01/27",
        "20170207",
        "20170127",
        "test3-DAPI-2-(387)",
    ],
}


def _stored(repository: Repository, public_id: str) -> tuple[dict[str, Any], Path]:
    record = browsing.show_slide(repository, COMMAND_LINE, public_id)["image"]
    return record, repository.store.object_dir(record["storage_key"])  # type: ignore[attr-defined]


def _all_bytes(folder: Path) -> list[tuple[Path, bytes]]:
    return [(path, path.read_bytes()) for path in sorted(folder.rglob("*")) if path.is_file()]


def _ingest_one(repository: Repository, files: list[Path]) -> str:
    report = ingest_paths(repository, files)
    assert [o.status for o in report.outcomes] == ["ingested"], report.outcomes[0].reason
    return report.outcomes[0].id or ""


@pytest.mark.parametrize(
    "relative", ["aperio/CMU-1-Small-Region.svs", "hamamatsu/test3-DAPI-2-(387).ndpi"]
)
def test_no_identifying_value_survives_in_any_stored_byte(
    repository: Repository, slides_dir: Path, relative: str
) -> None:
    source = slides_dir / relative
    public_id = _ingest_one(repository, [source])
    record, folder = _stored(repository, public_id)
    contents = _all_bytes(folder)
    assert any(path.suffix == ".dcm" for path, _ in contents)
    for value in IDENTIFYING[source.name]:
        for encoding in ("ascii", "utf-16-le", "utf-16-be"):
            needle = value.encode(encoding)
            for path, data in contents:
                assert needle not in data, f"{value!r} ({encoding}) in {path.name}"
                assert needle.lower() not in data.lower(), f"{value!r} in {path.name}"
    # nor in the catalogue's record of the slide
    assert not any(value in json.dumps(record) for value in IDENTIFYING[source.name])


def test_stored_dicom_has_no_label_or_overview_and_is_marked_deidentified(
    repository: Repository, slides_dir: Path
) -> None:
    public_id = _ingest_one(repository, [slides_dir / "aperio" / "CMU-1-Small-Region.svs"])
    record, folder = _stored(repository, public_id)
    types = set()
    for path in (folder / "content").iterdir():
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        types |= set(dataset.ImageType)
        assert dataset.PatientIdentityRemoved == "YES"
        assert dataset.PatientID.startswith("C-")
        assert dataset.ContainerIdentifier.startswith("S-")
    assert "VOLUME" in types and not types & {"LABEL", "OVERVIEW"}
    assert [a["name"] for a in record["associated_images"]] == ["thumbnail"]
    report = json.loads((folder / "deid" / "report.json").read_text())
    assert report["check"]["passed"] and report["check"]["findings"] == []
    assert {"aperio.Filename", "aperio.User", "aperio.ScanScope ID"} <= set(
        report["vendor_fields_not_carried"]
    )
    assert set(report["images_left_out"]) == {"label", "overview"}


def test_svs_level0_tiles_are_passed_through_byte_for_byte(
    repository: Repository, cmu_small: Path
) -> None:
    public_id = _ingest_one(repository, [cmu_small])
    _, folder = _stored(repository, public_id)
    with tifffile.TiffFile(cmu_small) as tiff:
        page = tiff.pages[0]
        handle = tiff.filehandle
        source_tiles = []
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            handle.seek(offset)
            source_tiles.append(handle.read(count))
    files = tuple((folder / "content").iterdir())
    with open_slide(files) as stored:
        grid = stored.info.levels[0].grid
        assert grid is not None and grid.area == len(source_tiles)
        for index, source_tile in enumerate(source_tiles):
            raw = stored.read_raw_tile(0, index % grid.width, index // grid.width)
            assert raw is not None
            # The scan (entropy-coded data after SOS) is the source tile's, byte for byte;
            # only the header around it may be completed with the shared tables.
            scan = source_tile[source_tile.index(b"\xff\xda") :]
            assert raw.data.endswith(scan), f"tile {index} was re-encoded"


@pytest.mark.parametrize(
    ("relative", "region"),
    [
        ("aperio/CMU-1-Small-Region.svs", ((1000, 1200), 0, (700, 500))),
        # NDPI stripes are cut into tiles in the DCT domain (lossless): same pixels.
        ("hamamatsu/test3-DAPI-2-(387).ndpi", ((1024, 1536), 0, (512, 512))),
    ],
)
def test_stored_dicom_opens_in_openslide_and_wsidicom_with_the_source_pixels(
    repository: Repository,
    slides_dir: Path,
    relative: str,
    region: tuple[tuple[int, int], int, tuple[int, int]],
) -> None:
    source = slides_dir / relative
    public_id = _ingest_one(repository, [source])
    _, folder = _stored(repository, public_id)
    stored_files = sorted((folder / "content").iterdir())
    with openslide.OpenSlide(source) as original, openslide.OpenSlide(stored_files[0]) as stored:
        assert stored.dimensions == original.dimensions
        a = np.asarray(original.read_region(*region).convert("RGB"), dtype=np.int16)
        b = np.asarray(stored.read_region(*region).convert("RGB"), dtype=np.int16)
        assert np.abs(a - b).max() == 0
    from wsidicom import WsiDicom

    with WsiDicom.open(stored_files) as wsi:
        (x, y), _, (width, height) = region
        c = np.asarray(wsi.read_region((x, y), 0, (width, height)).convert("RGB"), dtype=np.int16)
        assert np.abs(a - c).max() == 0


def test_a_level_off_the_power_of_two_scales_is_left_out_and_the_rest_stored(
    repository: Repository, slides_dir: Path
) -> None:
    # boxes.tiff: 300 x 250 px with levels 2, 4.016 and 8.086 times smaller; wsidicom builds
    # pyramids of power-of-two scales only (1 % tolerance), so the last level cannot go in.
    source = slides_dir / "synthetic" / "boxes.tiff"
    public_id = _ingest_one(repository, [source])
    record, folder = _stored(repository, public_id)
    assert [(level["width"], level["height"]) for level in record["levels"]] == [
        (300, 250),
        (150, 125),
        (75, 62),
    ]
    report = json.loads((folder / "deid" / "report.json").read_text())
    assert report["method"] == (
        "wsidicomizer (tiffslide); levels not at a power-of-two scale of the base left out "
        "(downsample 8.086)"
    )
    assert report["check"]["passed"]
    from wsidicom import WsiDicom

    # Transcoded (a generic TIFF's tiles are not passed through): close to the source.
    with (
        openslide.OpenSlide(source) as original,
        WsiDicom.open(sorted((folder / "content").iterdir())) as wsi,
    ):
        for level, size in ((0, (300, 250)), (2, (75, 62))):
            a = np.asarray(original.read_region((0, 0), level, size).convert("RGB"), np.int16)
            b = np.asarray(wsi.read_region((0, 0), level, size).convert("RGB"), np.int16)
            assert np.abs(a - b).mean() < 5, f"level {level}"


def test_wg26_dicom_keeps_its_frames_and_loses_label_and_map(
    repository: Repository, wg26_files: tuple[Path, ...]
) -> None:
    public_id = _ingest_one(repository, [wg26_files[0].parent])
    _, folder = _stored(repository, public_id)
    stored = sorted((folder / "content").iterdir())
    assert len(stored) == len(wg26_files) - 2  # the LABEL and the REGIONLOCALIZER are gone
    source_uids = set()
    for path in wg26_files:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        source_uids |= {dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID}
    data = b"".join(path.read_bytes() for path in stored)
    assert not any(uid.encode() in data for uid in source_uids)
    with open_slide(tuple(wg26_files)) as original, open_slide(tuple(stored)) as copy:
        assert copy.info.dimensions == original.info.dimensions
        base = len(copy.info.levels) - 1
        assert original.read_raw_tile(base, 0, 0) == copy.read_raw_tile(base, 0, 0)


def test_case_pseudonym_is_keyed_and_stable(
    tmp_path: Path, cmu_small: Path, database_url: str
) -> None:
    sidecar = tmp_path / "sidecar.csv"
    sidecar.write_text("file,case,slide\nCMU-1-Small-Region.svs,H-2024-0042,H-2024-0042-A1\n")

    def case_of(home: Path, key: str) -> str:
        settings = Settings(home=home, database_url=None, pseudonym_key=key)  # type: ignore[arg-type]
        repository = open_repository(settings)
        try:
            report = ingest_paths(repository, [cmu_small], sidecar_path=sidecar)
            record = browsing.show_slide(repository, COMMAND_LINE, report.outcomes[0].id or "")
            case = record["case"]
            assert isinstance(case, dict)
            return str(case["pseudonym"])
        finally:
            repository.close()

    first = case_of(tmp_path / "a", "k" * 32)
    assert first.startswith("C-") and "2024" not in first
    assert case_of(tmp_path / "b", "k" * 32) == first
    assert case_of(tmp_path / "c", "j" * 32) != first


def test_a_leak_fails_the_ingest_and_stores_nothing(
    repository: Repository, cmu_small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: a converter that lets the scanner's user id through (as UTF-16, in
    # a file of its own) must be caught by the check, and the ingest must leave nothing.
    from slidebank.ingest import deidentify as step

    real_convert = step.convert

    def leaky_convert(*args: object, **kwargs: object) -> object:
        result = real_convert(*args, **kwargs)  # type: ignore[arg-type]
        target = args[1]
        assert isinstance(target, Path)
        (target / "extra.bin").write_bytes(
            b"\0" * 100 + "b414003d-95c6-48b0-9369-8010ed517ba7".encode("utf-16-le")
        )
        return result

    monkeypatch.setattr(step, "convert", leaky_convert)
    outcome = ingest_paths(repository, [cmu_small]).outcomes[0]
    assert outcome.status == "failed"
    assert "de-identification check failed: aperio.User found" in (outcome.reason or "")
    assert list(repository.store.iter_keys()) == []
    assert browsing.page_of_slides(repository, COMMAND_LINE, SlideFilter())[1] == 0


def test_originals_are_kept_only_when_asked_and_apart_from_the_content(
    tmp_path: Path, cmu_small: Path
) -> None:
    for keep in (False, True):
        settings = Settings(home=tmp_path / f"keep-{keep}", keep_originals=keep)
        repository = open_repository(settings)
        try:
            public_id = _ingest_one(repository, [cmu_small])
            record, folder = _stored(repository, public_id)
            kept = sorted((folder / "original").rglob("*")) if keep else []
            assert (folder / "original").exists() is keep
            if keep:
                assert [p.read_bytes() == cmu_small.read_bytes() for p in kept] == [True]
            # the catalogue's files (what downloads and DICOMweb serve) are the DICOM only
            assert all(f["name"].endswith(".dcm") for f in record["files"])
            assert {p.name for p in (folder / "content").iterdir()} == {
                f["name"] for f in record["files"]
            }
        finally:
            repository.close()


def test_overview_is_stored_only_when_asked_and_the_label_never(
    tmp_path: Path, cmu_small: Path
) -> None:
    repository = open_repository(Settings(home=tmp_path / "keep-overview", keep_overview=True))
    try:
        public_id = _ingest_one(repository, [cmu_small])
        _, folder = _stored(repository, public_id)
        kinds = [
            pydicom.dcmread(path, stop_before_pixels=True).ImageType[2]
            for path in sorted((folder / "content").iterdir())
        ]
        assert sorted(kinds) == ["OVERVIEW", "THUMBNAIL", "VOLUME"]
        numbers = sorted(
            int(pydicom.dcmread(path, stop_before_pixels=True).InstanceNumber)
            for path in (folder / "content").iterdir()
        )
        assert len(set(numbers)) == len(numbers)  # each instance numbered apart
    finally:
        repository.close()


# Dates under SLIDEBANK_DATES=shift, on the real files. The shift of a case is 1 to 10 years
# (slidebank.deid.pseudonyms.SHIFT_DAYS).
SHIFT_DAYS = range(365, 3651)
EPOCH = dt.date(1970, 1, 1)
SVS_AND_NDPI = ["aperio/CMU-1-Small-Region.svs", "hamamatsu/test3-DAPI-2-(387).ndpi"]


def _dates_and_times(folder: Path) -> list[tuple[str, str, str, str]]:
    """(file, keyword, VR, value) of every date, date-time and time stored, at any depth."""
    found = []
    for path in sorted((folder / "content").iterdir()):
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        for element in dataset.iterall():
            if element.VR in ("DA", "DT", "TM"):
                found.append((path.name, element.keyword, element.VR, str(element.value or "")))
    assert found
    return found


def _day(value: str) -> dt.date:
    return dt.datetime.strptime(value[:8], "%Y%m%d").date()


def _shift_repository(tmp_path: Path, dates: str = "shift") -> Repository:
    return open_repository(Settings(home=tmp_path / "home", dates=dates))  # type: ignore[arg-type]


@pytest.mark.parametrize("relative", SVS_AND_NDPI)
def test_shift_moves_no_date_a_converted_slide_did_not_get_from_its_source(
    tmp_path: Path, slides_dir: Path, relative: str
) -> None:
    """SVS and NDPI sources carry no date into the conversion: wsidicom writes its epoch
    placeholder (and the conversion moment). Shifted, the epoch would publish the case's
    shift; every date and time is the fixed dummy instead, under shift as under remove."""
    repository = _shift_repository(tmp_path)
    try:
        _, folder = _stored(repository, _ingest_one(repository, [slides_dir / relative]))
    finally:
        repository.close()
    for name, keyword, vr, value in _dates_and_times(folder):
        if value and vr != "TM":
            assert (EPOCH - _day(value)).days not in SHIFT_DAYS, f"{name}: {keyword} {value}"
        expected = {"DA": "19000101", "DT": "19000101000000", "TM": "000000.000000"}[vr]
        assert value in ("", expected), f"{name}: {keyword} = {value}"
    report = json.loads((folder / "deid" / "report.json").read_text())
    assert report["dicom_profile"]["shifted_dates"] == []
    for path in (folder / "content").iterdir():
        codes = pydicom.dcmread(path, stop_before_pixels=True).DeidentificationMethodCodeSequence
        assert [item.CodeValue for item in codes] == ["113100"]  # no shifted-dates option


def test_a_case_s_shift_cannot_be_read_off_its_converted_slide(
    tmp_path: Path, cmu_small: Path, wg26_files: tuple[Path, ...]
) -> None:
    """The attack of the review: an SVS and a DICOM slide of one case share its shift; the
    SVS's stored dates must not give the shift, or the DICOM's real scan date comes back."""
    folder_name = wg26_files[0].parent.name
    sidecar = tmp_path / "sidecar.csv"
    sidecar.write_text(
        "file,case,slide\n"
        f"{cmu_small.name},H-2024-0042,H-2024-0042-A1\n"
        f"{folder_name},H-2024-0042,H-2024-0042-B1\n"
    )
    repository = _shift_repository(tmp_path)
    try:
        report = ingest_paths(repository, [cmu_small, wg26_files[0].parent], sidecar_path=sidecar)
        assert [o.status for o in report.outcomes] == ["ingested", "ingested"]
        svs_id, wg26_id = (o.id or "" for o in report.outcomes)
        _, svs = _stored(repository, svs_id)
        _, wg26 = _stored(repository, wg26_id)
    finally:
        repository.close()
    acquired = {v for _, k, _, v in _dates_and_times(wg26) if k == "AcquisitionDateTime"}
    assert len(acquired) == 1
    shift = dt.date(2012, 3, 27) - _day(acquired.pop())  # the scan was on 2012-03-27
    assert shift.days in SHIFT_DAYS
    for name, keyword, vr, value in _dates_and_times(svs):
        if value and vr != "TM":
            assert _day(value) + shift != EPOCH, f"{name}: {keyword} {value} gives the shift"


@pytest.mark.parametrize(
    ("relative", "source_time"),
    [("dicom/WG26-BPAEC-partial", "165454"), ("synthetic/boxes-dicom", "095915")],
)
def test_a_shifted_date_time_keeps_no_time_of_day(
    tmp_path: Path, slides_dir: Path, relative: str, source_time: str
) -> None:
    """WG26 was scanned at 2012-03-27 16:54:54+0200, boxes-dicom at 2009-12-29 09:59:15:
    stored, AcquisitionDateTime is the shifted date alone (no time, no offset), and no time
    of day survives in a TM either."""
    source = slides_dir / relative
    files = sorted(p for p in source.iterdir() if p.name != "readme.txt")
    scanned = {
        _day(str(pydicom.dcmread(p, stop_before_pixels=True).AcquisitionDateTime)) for p in files
    }
    repository = _shift_repository(tmp_path)
    try:
        _, folder = _stored(repository, _ingest_one(repository, [source]))
    finally:
        repository.close()
    stored = _dates_and_times(folder)
    for name, keyword, vr, value in stored:
        assert source_time not in value, f"{name}: {keyword} = {value} keeps the time of day"
        if vr == "DT" and value:
            assert re.fullmatch(r"[0-9]{8}", value), f"{name}: {keyword} = {value}"
        if vr == "TM":
            assert value in ("", "000000"), f"{name}: {keyword} = {value}"
    acquired = {_day(v) for _, k, _, v in stored if k == "AcquisitionDateTime"}
    assert len(scanned) == len(acquired) == 1
    assert (scanned.pop() - acquired.pop()).days in SHIFT_DAYS


@pytest.mark.parametrize("dates", ["remove", "shift"])
@pytest.mark.parametrize("relative", SVS_AND_NDPI)
def test_content_date_and_time_are_not_the_moment_of_ingest(
    tmp_path: Path, slides_dir: Path, relative: str, dates: str
) -> None:
    """wsidicom sets ContentDate and ContentTime when it writes each file, close to the scan
    when slides are ingested as they are scanned: they are the fixed dummies instead."""
    today = {dt.date.today(), dt.datetime.now(dt.UTC).date()}
    repository = _shift_repository(tmp_path, dates)
    try:
        _, folder = _stored(repository, _ingest_one(repository, [slides_dir / relative]))
    finally:
        repository.close()
    for path in sorted((folder / "content").iterdir()):
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        assert _day(dataset.ContentDate) not in today, path.name
        assert dataset.ContentDate == "19000101", path.name
        assert dataset.ContentTime == "000000.000000", path.name
    # the files were changed in place: they still open, every frame where it was
    with open_slide(tuple(sorted((folder / "content").iterdir()))) as stored:
        assert stored.read_raw_tile(0, 0, 0) is not None


def test_each_new_date_spelling_planted_in_a_stored_copy_is_found(
    tmp_path: Path, slides_dir: Path, cmu_small: Path, wg26_files: tuple[Path, ...]
) -> None:
    """`deid verify` finds each identifying date and time in the spellings vendors and people
    use, while the real slides stored from the same sources verify clean (the scan covers
    their compressed frames too)."""
    from slidebank.services import deidentification

    ndpi = slides_dir / "hamamatsu" / "test3-DAPI-2-(387).ndpi"
    planted = {
        cmu_small: {
            b"29/12/2009": "aperio.Date",
            b"Dec 29 2009": "aperio.Date",
            b"29-DEC-2009": "aperio.Date",
            b"29.12.09": "aperio.Date",
            b"09:59": "aperio.Time",
        },
        ndpi: {b"07/02/2017": "tiff.DateTime", b"07-Feb-2017": "tiff.DateTime"},
        wg26_files[0].parent: {
            b"20120327": "AcquisitionDateTime",
            b"165454": "AcquisitionDateTime",
            b"16:54": "AcquisitionDateTime",
        },
    }
    repository = open_repository(Settings(home=tmp_path / "home"))
    try:
        report = ingest_paths(repository, list(planted))
        assert [o.status for o in report.outcomes] == ["ingested"] * 3, report.outcomes
        ids = [o.id or "" for o in report.outcomes]
        checks = deidentification.verify_slides(repository, COMMAND_LINE, ids)
        assert [c.passed for c in checks] == [True, True, True]

        expected = {}
        for public_id, spellings in zip(ids, planted.values(), strict=True):
            _, folder = _stored(repository, public_id)
            content = folder / "content"
            copy = content / "planted.dcm"
            shutil.copyfile(sorted(content.iterdir())[0], copy)
            with copy.open("ab") as out:
                for spelling, field in spellings.items():
                    offset = out.tell() + 1
                    out.write(b" " + spelling + b" ")
                    expected[(public_id, offset)] = field
        found = {
            (check.id, finding.offset): finding.field
            for check in deidentification.verify_slides(repository, COMMAND_LINE, ids)
            for finding in (check.verification.findings if check.verification else [])
            if finding.file == "planted.dcm"
        }
    finally:
        repository.close()
    missing = {key: field for key, field in expected.items() if found.get(key) != field}
    assert not missing


def test_names_written_while_the_source_is_hashed_are_its_content_pseudonyms(
    repository: Repository, cmu_small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a sidecar, the case and slide are named by the source's checksum. The ingest
    # converts while it hashes, writing stand-ins, and must store the real names.
    from slidebank.deid.pseudonyms import Pseudonymizer, repository_key
    from slidebank.ingest import deidentify, pipeline

    checksums_given: list[object] = []
    real_convert_source = deidentify.convert_source

    def watched(*args: Any, **kwargs: Any) -> Any:
        checksums_given.append(args[6])
        return real_convert_source(*args, **kwargs)

    monkeypatch.setattr(pipeline, "convert_source", watched)
    public_id = _ingest_one(repository, [cmu_small])
    assert checksums_given == [None]  # converted before the checksum was known

    record, folder = _stored(repository, public_id)
    checksum = hashlib.sha256(cmu_small.read_bytes()).hexdigest()
    assert record["checksum"] == checksum
    names = Pseudonymizer(repository_key(repository.settings))
    case = names.pseudonym("case", f"content:{checksum}")
    slide = names.pseudonym("slide", f"content:{checksum}")
    files = sorted((folder / "content").iterdir())
    assert len(files) > 1
    for path in files:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        assert (dataset.PatientID, str(dataset.PatientName), dataset.StudyID) == (case,) * 3
        assert dataset.ContainerIdentifier == slide
        data = path.read_bytes()
        assert re.search(rb"[CS]-[0189]{12}", data) is None, f"a stand-in is left in {path}"
    report = json.loads((folder / "deid" / "report.json").read_text())
    assert report["pseudonyms"] == {"case": case, "slide": slide}
