"""Ingest end to end on real scanner files, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from slidebank.access.policy import COMMAND_LINE
from slidebank.catalog.queries import SlideFilter
from slidebank.config import Settings
from slidebank.errors import InvalidInput
from slidebank.ingest.pipeline import Outcome
from slidebank.services import browsing, checking
from slidebank.services.ingesting import ingest_paths
from slidebank.services.repository import Repository, open_repository
from slidebank.slides import open_slide
from tests.helpers import (
    EMPTY,
    absurd_tiff,
    corrupt_tile_copy,
    stored_state,
    truncated_copy,
    unpyramided_tiff,
)


def _id_of(outcomes: list[Outcome], name: str) -> str:
    found = next(o for o in outcomes if o.source.rstrip("/").endswith(name))
    assert found.id is not None
    return found.id


def _reason_of(outcomes: list[Outcome], name: str) -> str:
    return next(o.reason or "" for o in outcomes if o.source.endswith(name))


def test_every_test_slide_is_stored_as_deidentified_dicom_with_the_facts_of_its_readme(
    repository: Repository, slides_dir: Path
) -> None:
    report = ingest_paths(repository, [slides_dir])
    statuses = {Path(o.source).name: o.status for o in report.outcomes}
    assert statuses == {
        "CMU-1-Small-Region.svs": "ingested",
        "small-crop.svs": "ingested",
        "test3-DAPI-2-(387).ndpi": "ingested",
        "WG26-BPAEC-partial": "ingested",
        # Its smallest level is 8.09x the base: stored without that level (test_deidentify).
        "boxes.tiff": "ingested",
        "boxes-dicom": "ingested",
        "kidney-stripped.tif": "failed",
    }
    assert "plain TIFF" in _reason_of(report.outcomes, "kidney-stripped.tif")
    assert [Path(p.path).name for p in report.skipped] == ["readme.txt"]

    svs = browsing.show_slide(
        repository, COMMAND_LINE, _id_of(report.outcomes, "CMU-1-Small-Region.svs")
    )
    image = svs["image"]
    assert (image["format"], image["vendor"], image["backend"]) == ("dicom", "aperio", "wsidicom")
    assert image["properties"]["slidebank.source-format"] == "aperio"
    assert (image["width"], image["height"]) == (2220, 2967)
    assert image["mpp"][0] == pytest.approx(0.499)
    assert image["objective_power"] == 20
    # the label and the macro are left out; the scanner's thumbnail stays
    assert {a["name"] for a in image["associated_images"]} == {"thumbnail"}
    source_sha = hashlib.sha256((slides_dir / "aperio" / "CMU-1-Small-Region.svs").read_bytes())
    assert image["checksum"] == source_sha.hexdigest()  # duplicates are found by source
    assert image["source_name"].startswith("S-")  # the file name is not kept

    ndpi = browsing.show_slide(repository, COMMAND_LINE, _id_of(report.outcomes, ".ndpi"))["image"]
    assert (ndpi["width"], ndpi["height"]) == (3968, 4864)
    assert ndpi["mpp"][0] == pytest.approx(0.228, abs=1e-3)
    assert ndpi["associated_images"] == []

    wg26 = browsing.show_slide(
        repository, COMMAND_LINE, _id_of(report.outcomes, "WG26-BPAEC-partial")
    )
    assert wg26["image"]["format"] == "dicom"
    assert (wg26["image"]["width"], wg26["image"]["height"]) == (3072, 2304)
    assert len(wg26["image"]["files"]) == 8  # every instance but the label and the map
    assert all(f["name"].endswith(".dcm") for f in wg26["image"]["files"])


def test_every_test_slide_is_stored_as_it_came_when_configured(
    tmp_path: Path, database_url: str, slides_dir: Path
) -> None:
    settings = Settings(home=tmp_path / "repo", database_url=database_url, stored_form="original")
    repository = open_repository(settings)
    try:
        report = ingest_paths(repository, [slides_dir])
        statuses = {Path(o.source).name: o.status for o in report.outcomes}
        assert statuses == {
            "CMU-1-Small-Region.svs": "ingested",
            "small-crop.svs": "ingested",
            "test3-DAPI-2-(387).ndpi": "ingested",
            "WG26-BPAEC-partial": "ingested",
            "boxes.tiff": "ingested",
            "boxes-dicom": "ingested",
            "kidney-stripped.tif": "failed",
        }
        svs = browsing.show_slide(
            repository, COMMAND_LINE, _id_of(report.outcomes, "CMU-1-Small-Region.svs")
        )["image"]
        assert (svs["format"], svs["vendor"]) == ("aperio", "aperio")
        assert {a["name"] for a in svs["associated_images"]} == {"label", "macro", "thumbnail"}
        ndpi = browsing.show_slide(repository, COMMAND_LINE, _id_of(report.outcomes, ".ndpi"))[
            "image"
        ]
        assert (ndpi["width"], ndpi["height"], len(ndpi["levels"])) == (3968, 4864, 7)
        assert [a["name"] for a in ndpi["associated_images"]] == ["macro"]
        wg26 = browsing.show_slide(
            repository, COMMAND_LINE, _id_of(report.outcomes, "WG26-BPAEC-partial")
        )["image"]
        assert len(wg26["files"]) == 10  # every instance, the label and the map
    finally:
        repository.close()


def test_stored_content_reopens_and_matches_the_source(
    repository: Repository, slides_dir: Path
) -> None:
    folder = slides_dir / "dicom" / "WG26-BPAEC-partial"
    report = ingest_paths(repository, [folder, slides_dir / "aperio" / "CMU-1-Small-Region.svs"])
    assert [o.status for o in report.outcomes] == ["ingested", "ingested"]
    for outcome in report.outcomes:
        record = browsing.show_slide(repository, COMMAND_LINE, outcome.id or "")
        content = repository.store.content_dir(record["image"]["storage_key"])
        files = tuple(content / f["name"] for f in record["image"]["files"])
        with open_slide(files) as reader:
            assert reader.info.dimensions == (record["image"]["width"], record["image"]["height"])
            assert reader.read_tile(0, 0, 0).size[0] > 0
        assert repository.store.thumbnail_path(record["image"]["storage_key"]).stat().st_size > 0


def test_same_content_again_is_a_duplicate_and_stores_nothing(
    repository: Repository, cmu_small: Path, tmp_path: Path
) -> None:
    first = ingest_paths(repository, [cmu_small]).outcomes[0]
    renamed = tmp_path / "another-name.svs"
    shutil.copyfile(cmu_small, renamed)
    before = stored_state(repository)
    second = ingest_paths(repository, [renamed]).outcomes[0]
    assert second.status == "duplicate"
    assert second.id == first.id
    assert stored_state(repository) == before


def test_renamed_dicom_instances_are_still_a_duplicate(
    repository: Repository, slides_dir: Path, tmp_path: Path
) -> None:
    folder = slides_dir / "synthetic" / "boxes-dicom"
    first = ingest_paths(repository, [folder]).outcomes[0]
    copy = tmp_path / "renamed"
    copy.mkdir()
    for index, path in enumerate(sorted(folder.iterdir(), reverse=True)):
        shutil.copyfile(path, copy / f"z{index}")
    again = ingest_paths(repository, [copy]).outcomes[0]
    assert (again.status, again.id) == ("duplicate", first.id)


def test_generated_slide_needs_no_shared_data(repository: Repository, generated_svs: Path) -> None:
    outcome = ingest_paths(repository, [generated_svs], dataset="generated").outcomes[0]
    assert outcome.status == "ingested"
    rows = browsing.list_slides(repository, COMMAND_LINE, SlideFilter(dataset="generated"))
    assert [(r["width"], r["height"], r["vendor"]) for r in rows] == [(6000, 4000, "aperio")]


def _bad_inputs(testdata: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    cmu = testdata / "slides" / "aperio" / "CMU-1-Small-Region.svs"
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    png = tmp_path / "picture.svs"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    text = tmp_path / "notes.svs"
    text.write_text("Patient: nobody\n")
    no_slides = tmp_path / "no-slides"
    no_slides.mkdir()
    (no_slides / "readme.txt").write_text("nothing here")
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "self").symlink_to(loop)
    file_loop = tmp_path / "a.svs"
    file_loop.symlink_to(tmp_path / "b.svs")
    (tmp_path / "b.svs").symlink_to(file_loop)
    return {
        "nonconformant DICOM": (
            testdata / "bad" / "nonconformant-wsi.dcm",
            "Level files not found",
        ),
        "empty file": (empty, "file is empty"),
        "truncated SVS": (truncated_copy(cmu, tmp_path / "truncated.svs", 0.6), "truncated"),
        "SVS cut near its end": (truncated_copy(cmu, tmp_path / "cut.svs", 0.98), "truncated"),
        "corrupted tile": (
            corrupt_tile_copy(cmu, tmp_path / "corrupt-tile.svs", 4, 6),
            "tile (4, 6)",
        ),
        "PNG renamed .svs": (png, "png image"),
        "text renamed .svs": (text, "text"),
        "folder with no slides": (no_slides, "no slides found"),
        "missing path": (tmp_path / "does-not-exist.svs", "no such file or folder"),
        "folder symlink loop": (loop, "symlink loop"),
        "file symlink loop": (file_loop, "symlink loop"),
        "absurd dimensions": (
            absurd_tiff(tmp_path / "absurd.tif"),
            "declares 3000000x3000000 px",
        ),
        "no pyramid for an overview": (
            unpyramided_tiff(tmp_path / "flat.tif", 9216, 8192),
            "smallest level is 9216x8192 px",
        ),
    }


BAD_CASES = [
    "nonconformant DICOM",
    "empty file",
    "truncated SVS",
    "SVS cut near its end",
    "corrupted tile",
    "PNG renamed .svs",
    "text renamed .svs",
    "folder with no slides",
    "missing path",
    "folder symlink loop",
    "file symlink loop",
    "absurd dimensions",
    "no pyramid for an overview",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_fails_clearly_and_stores_nothing(
    repository: Repository, testdata: Path, tmp_path: Path, case: str
) -> None:
    path, expected = _bad_inputs(testdata, tmp_path)[case]
    report = ingest_paths(repository, [path])
    assert report.failed
    failed = [o for o in report.outcomes if o.status == "failed"]
    assert failed, report.outcomes
    assert any(expected in (o.reason or "") for o in failed), [o.reason for o in failed]
    assert all(o.source for o in failed)
    assert stored_state(repository) == EMPTY


def test_a_failure_does_not_stop_the_next_slide(
    repository: Repository, testdata: Path, cmu_small: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    report = ingest_paths(repository, [empty, cmu_small])
    assert [o.status for o in report.outcomes] == ["failed", "ingested"]
    assert stored_state(repository)["images"] == 1


def test_sidecar_fills_the_hierarchy_and_filters_find_it(
    repository: Repository, slides_dir: Path, tmp_path: Path
) -> None:
    sidecar = tmp_path / "metadata.json"
    sidecar.write_text(
        json.dumps(
            {
                "dataset": {"title": "Toxicology pilot", "licence": "CC-BY-4.0"},
                "slides": [
                    {
                        "file": "CMU-1-Small-Region.svs",
                        "case": {"id": "C1", "species": "Homo sapiens"},
                        "specimen": {
                            "id": "S1",
                            "anatomical_site": "Skin of trunk",
                            "observations": [
                                {
                                    "kind": "diagnosis",
                                    "code": "254701007",
                                    "scheme": "SCT",
                                    "meaning": "Malignant melanoma of skin",
                                }
                            ],
                        },
                        "block": {"id": "B1"},
                        "slide": {"id": "S1-1", "staining": {"compound": "hematoxylin and eosin"}},
                    },
                    {
                        "file": "WG26-BPAEC-partial",
                        "case": {"id": "R7", "species": "Rattus norvegicus"},
                        "specimen": {"id": "liver", "anatomical_site": "Liver"},
                        "slide": {
                            "staining": {"compound": "DAPI", "method": "fluorescence"},
                            "observations": [
                                {"kind": "finding", "text": "hepatocellular hypertrophy"}
                            ],
                        },
                    },
                ],
            }
        )
    )
    report = ingest_paths(
        repository,
        [slides_dir / "aperio" / "CMU-1-Small-Region.svs", slides_dir / "dicom"],
        dataset="tox-pilot",
        sidecar_path=sidecar,
    )
    assert [o.status for o in report.outcomes] == ["ingested", "ingested"]
    assert report.unused_sidecar_entries == []

    def ids(**where: object) -> set[str]:
        rows = browsing.list_slides(repository, COMMAND_LINE, SlideFilter(**where))  # type: ignore[arg-type]
        return {row["id"] for row in rows}

    svs_id, dicom_id = (o.id for o in report.outcomes)
    assert ids(species="rattus") == {dicom_id}
    assert ids(anatomical_site="skin") == {svs_id}
    assert ids(stain="eosin") == {svs_id}
    assert ids(diagnosis="254701007") == {svs_id}
    assert ids(diagnosis="melanoma") == {svs_id}
    assert ids(diagnosis="carcinoma") == set()
    assert ids(format="dicom") == {svs_id, dicom_id}  # both are stored as DICOM
    assert ids(vendor="APERIO") == {svs_id}
    assert ids(mpp_min=0.4, mpp_max=0.6) == {svs_id}
    assert ids(dataset="tox-pilot") == {svs_id, dicom_id}
    assert ids(dataset="other") == set()

    record = browsing.show_slide(repository, COMMAND_LINE, svs_id or "")
    assert record["dataset"]["title"] == "Toxicology pilot"
    # the sidecar's case id is replaced by its keyed pseudonym
    assert record["case"]["pseudonym"].startswith("C-") and "C1" not in record["case"]["pseudonym"]
    assert record["specimen"]["observations"][0]["meaning"] == "Malignant melanoma of skin"
    assert record["slide"]["staining"]["compound"] == "hematoxylin and eosin"
    datasets = browsing.list_datasets(repository)
    assert [(d["short_name"], d["images"]) for d in datasets] == [("tox-pilot", 2)]


def test_bad_dataset_name_is_refused_before_anything_happens(
    repository: Repository, cmu_small: Path
) -> None:
    with pytest.raises(InvalidInput, match="dataset name 'no spaces please'"):
        ingest_paths(repository, [cmu_small], dataset="no spaces please")
    assert stored_state(repository) == EMPTY


def test_check_finds_a_consistent_repository(repository: Repository, cmu_small: Path) -> None:
    ingest_paths(repository, [cmu_small])
    report = checking.check_repository(repository, rehash=True)
    assert report.consistent
    assert report.images == 1


def test_registration_failure_after_storing_removes_the_stored_content(
    repository: Repository, slides_dir: Path, tmp_path: Path
) -> None:
    """The catalogue refuses the second slide (case species conflict) after its bytes were
    committed to the store: they must be removed again, and the first slide kept."""
    sidecar = tmp_path / "conflict.csv"
    sidecar.write_text(
        "file,case,species\nCMU-1-Small-Region.svs,C1,Homo sapiens\n"
        "small-crop.svs,C1,Mus musculus\n"
    )
    report = ingest_paths(
        repository,
        [
            slides_dir / "aperio" / "CMU-1-Small-Region.svs",
            slides_dir / "aperio" / "small-crop.svs",
        ],
        sidecar_path=sidecar,
    )
    assert [o.status for o in report.outcomes] == ["ingested", "failed"]
    assert "is 'Homo sapiens' in the catalogue, not 'Mus musculus'" in (
        report.outcomes[1].reason or ""
    )
    state = stored_state(repository)
    assert (state["images"], state["objects"], state["staging"]) == (1, 1, 0)
    assert checking.check_repository(repository, rehash=True).consistent


def _leave_orphan(repository: Repository, slide: Path) -> str:
    """What a kill between the rename into the store and the catalogue commit leaves."""
    key = hashlib.sha256(slide.read_bytes()).hexdigest()
    with repository.store.stage() as staging:
        shutil.copyfile(slide, staging.content_path("slide.svs"))
        repository.store.prepare(staging)
        assert repository.store.commit(staging, key)
    return key


def test_an_orphan_left_by_a_crash_is_replaced_by_the_rerun(
    repository: Repository, cmu_small: Path
) -> None:
    key = _leave_orphan(repository, cmu_small)
    assert checking.check_repository(repository).orphans == [key]
    outcome = ingest_paths(repository, [cmu_small]).outcomes[0]
    assert outcome.status == "ingested"
    report = checking.check_repository(repository, rehash=True)
    assert report.consistent and report.images == 1


def test_repair_removes_an_orphan(repository: Repository, cmu_small: Path) -> None:
    key = _leave_orphan(repository, cmu_small)
    report = checking.check_repository(repository, repair=True)
    assert report.orphans == [key]
    assert not repository.store.exists(key)
    assert checking.check_repository(repository).consistent


def test_a_slide_of_registered_dimensions_is_hashed_before_it_is_converted(
    repository: Repository, cmu_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new slide is converted while it is hashed; one with the dimensions of a registered
    # slide may be that slide, so it is hashed first: a duplicate costs no conversion, and
    # another slide of the same size is converted knowing its checksum.
    from slidebank.ingest import deidentify, pipeline

    checksums_given: list[object] = []
    real_convert_source = deidentify.convert_source

    def watched(*args: object, **kwargs: object) -> object:
        checksums_given.append(args[6])
        return real_convert_source(*args, **kwargs)  # type: ignore[arg-type]

    # The pipeline converts while hashing; ``deidentify`` converts after the hash.
    monkeypatch.setattr(pipeline, "convert_source", watched)
    monkeypatch.setattr(deidentify, "convert_source", watched)
    first = ingest_paths(repository, [cmu_small]).outcomes[0]
    assert first.status == "ingested" and checksums_given == [None]

    copy = tmp_path / "copy.svs"
    shutil.copyfile(cmu_small, copy)
    assert ingest_paths(repository, [copy]).outcomes[0].status == "duplicate"
    assert checksums_given == [None]  # nothing converted

    longer = tmp_path / "longer.svs"
    longer.write_bytes(cmu_small.read_bytes() + b"\0" * 16)  # TIFF readers ignore the tail
    outcome = ingest_paths(repository, [longer]).outcomes[0]
    assert outcome.status == "ingested", outcome.reason
    assert checksums_given == [None, hashlib.sha256(longer.read_bytes()).hexdigest()]


@pytest.mark.parametrize("tile_corrupted", [False, True])
def test_a_conversion_that_fails_beside_the_hash_stores_nothing_and_says_why(
    repository: Repository,
    cmu_small: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tile_corrupted: bool,
) -> None:
    # The conversion runs while the source is hashed and validated: when it fails, the
    # outcome gives the validation's reason if the source is broken, else the converter's.
    from slidebank.errors import UnsupportedFormat
    from slidebank.ingest import deidentify

    def failing(*args: object, **kwargs: object) -> object:
        raise UnsupportedFormat("converter refused the slide")

    monkeypatch.setattr(deidentify, "convert", failing)
    source = corrupt_tile_copy(cmu_small, tmp_path / "s.svs", 4, 6) if tile_corrupted else cmu_small
    outcome = ingest_paths(repository, [source]).outcomes[0]
    assert outcome.status == "failed"
    expected = "tile (4, 6)" if tile_corrupted else "converter refused the slide"
    assert expected in (outcome.reason or ""), outcome.reason
    assert stored_state(repository) == EMPTY
