"""Sidecar free text is stored and served as written, so a slide whose sidecar text repeats
one of its identifying values (the source's, or the sidecar's own identifiers) is refused
before anything is stored; ordinary text is kept. Real CMU-1-Small-Region.svs, whose
identifying values ../shared/testdata/README.md lists (Filename CMU-1, Date 12/29/09,
ScanScope ID CPAPERIOCS, ...); SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slidebank.access.policy import COMMAND_LINE
from slidebank.config import Settings
from slidebank.deid.identifiers import IdentifyingValue
from slidebank.errors import InvalidInput
from slidebank.ingest.deidentify import check_sidecar_text
from slidebank.ingest.sidecar import load_sidecar
from slidebank.services import browsing
from slidebank.services.ingesting import ingest_paths
from slidebank.services.repository import Repository, open_repository
from tests.helpers import EMPTY, stored_state

CSV_HEADER = "file,case,specimen,block,slide,diagnosis_text,finding,description\n"


def _json_sidecar(folder: Path, record: dict[str, Any], **dataset: str) -> Path:
    path = folder / "metadata.json"
    document: dict[str, Any] = {"slides": [{"file": "CMU-1-Small-Region.svs", **record}]}
    if dataset:
        document["dataset"] = dataset
    path.write_text(json.dumps(document))
    return path


def _csv_sidecar(folder: Path, row: str) -> Path:
    path = folder / "metadata.csv"
    path.write_text(CSV_HEADER + "CMU-1-Small-Region.svs," + row + "\n")
    return path


def _refused(repository: Repository, slide: Path, sidecar: Path) -> str:
    report = ingest_paths(repository, [slide], sidecar_path=sidecar)
    [outcome] = report.outcomes
    assert outcome.status == "failed", outcome
    assert outcome.id is None
    assert stored_state(repository) == EMPTY
    return outcome.reason or ""


def test_observation_text_with_the_case_identifier_is_refused(
    repository: Repository, cmu_small: Path, tmp_path: Path
) -> None:
    sidecar = _json_sidecar(
        tmp_path,
        {
            "case": {"id": "MRN-4471923", "species": "Homo sapiens"},
            "specimen": {
                "id": "SPEC-A77",
                "observations": [
                    {"kind": "diagnosis", "text": "Adenocarcinoma in MRN-4471923 (Jane Roe)"}
                ],
            },
        },
    )
    reason = _refused(repository, cmu_small, sidecar)
    assert reason.startswith(f"{sidecar}: ")
    assert "field 'specimen.observations.0.text' holds the sidecar's case identifier" in reason
    assert "nothing was stored" in reason
    assert "4471923" not in reason and "Jane" not in reason


def test_finding_with_the_scanscope_id_is_refused(
    repository: Repository, cmu_small: Path, tmp_path: Path
) -> None:
    # lower case, as the byte check (ASCII in any case) would find it too
    sidecar = _csv_sidecar(tmp_path, "P-0031,,,,,scanned on cpaperiocs,")
    reason = _refused(repository, cmu_small, sidecar)
    assert "field 'finding' holds the source's aperio.ScanScope ID field" in reason
    assert "cpaperiocs" not in reason.lower()


def test_text_with_the_scan_date_is_refused(
    repository: Repository, cmu_small: Path, tmp_path: Path
) -> None:
    sidecar = _csv_sidecar(tmp_path, "P-0031,,,,,,scanned 12/29/09 at the core")
    reason = _refused(repository, cmu_small, sidecar)
    assert "field 'description' holds the source's aperio.Date field" in reason
    assert "12/29/09" not in reason and "2009" not in reason


def test_the_reviewed_sidecar_is_refused_naming_every_field(
    repository: Repository, cmu_small: Path, tmp_path: Path
) -> None:
    """The adversarial review's sidecar: all three texts, each for its own reason."""
    sidecar = _csv_sidecar(
        tmp_path,
        "MRN-4471923,SPEC-A77,BLK-A2X,,"
        '"Adenocarcinoma in MRN-4471923 (Jane Roe)",'
        "scanned 12/29/09 on CPAPERIOCS,"
        "slide CMU-1 block BLK-A2X specimen SPEC-A77",
    )
    reason = _refused(repository, cmu_small, sidecar)
    assert "field 'diagnosis_text' holds the sidecar's case identifier" in reason
    assert (
        "field 'finding' holds the source's aperio.Date field and the source's "
        "aperio.ScanScope ID field"
    ) in reason
    assert (
        "field 'description' holds the sidecar's block identifier and the sidecar's "
        "specimen identifier and the source's aperio.Filename field"
    ) in reason
    for value in ("MRN-4471923", "Jane Roe", "12/29/09", "CPAPERIOCS", "CMU-1", "A2X", "A77"):
        assert value not in reason


@pytest.mark.parametrize(
    ("record", "dataset", "field"),
    [
        pytest.param(
            {"slide": {"staining": {"method": "CMU-1-Small-Region, H&E"}}},
            {},
            "slide.staining.method",
            id="file name in a descriptive field",
        ),
        pytest.param(
            {"slide": {"observations": [{"kind": "finding", "meaning": "seen 20091229"}]}},
            {},
            "slide.observations.0.meaning",
            id="scan date spelled as DICOM does in a meaning",
        ),
        pytest.param(
            {},
            {"description": "Scans of CMU-1"},
            "dataset.description",
            id="vendor file name in the dataset stored with the slide",
        ),
        pytest.param(
            {
                "case": {
                    "id": "P-0031",
                    "observations": [{"kind": "description", "text": "ＳＬ-９９２２ recut"}],
                },
                "slide": {"id": "SL-9922"},
            },
            {},
            "case.observations.0.text",
            id="slide identifier in full-width letters",
        ),
    ],
)
def test_every_text_field_is_looked_at(
    repository: Repository,
    cmu_small: Path,
    tmp_path: Path,
    record: dict[str, Any],
    dataset: dict[str, str],
    field: str,
) -> None:
    reason = _refused(repository, cmu_small, _json_sidecar(tmp_path, record, **dataset))
    assert f"field '{field}' holds " in reason


def test_ordinary_diagnostic_text_is_stored(
    repository: Repository, cmu_small: Path, tmp_path: Path
) -> None:
    # The specimen is named by a word of the text ('liver', also its anatomical site): an
    # identifier without a digit names the part and is not looked for in the text.
    sidecar = _json_sidecar(
        tmp_path,
        {
            "case": {"id": "MRN-4471923", "species": "Homo sapiens"},
            "specimen": {
                "id": "liver",
                "anatomical_site": "Liver",
                "observations": [
                    {"kind": "diagnosis", "text": "Adenocarcinoma, moderately differentiated"}
                ],
            },
            "slide": {
                "id": "L1-1",
                "staining": {"compound": "hematoxylin and eosin"},
                "observations": [{"kind": "finding", "text": "liver capsule involved"}],
            },
        },
    )
    report = ingest_paths(repository, [cmu_small], sidecar_path=sidecar)
    [outcome] = report.outcomes
    assert outcome.status == "ingested", outcome.reason
    record = browsing.show_slide(repository, COMMAND_LINE, outcome.id or "")
    assert record["specimen"]["observations"][0]["text"] == (
        "Adenocarcinoma, moderately differentiated"
    )
    assert record["slide"]["observations"][0]["text"] == "liver capsule involved"
    assert "MRN-4471923" not in json.dumps(record)


def test_the_stored_form_original_keeps_the_text_as_given(
    tmp_path: Path, cmu_small: Path, database_url: str
) -> None:
    """With ``original`` the source is stored as it came, vendor fields included, and the
    sidecar's identifiers as written: its text is not looked at either."""
    settings = Settings(home=tmp_path / "repo", database_url=database_url, stored_form="original")
    repository = open_repository(settings)
    try:
        sidecar = _csv_sidecar(tmp_path, "P-0031,,,,,scanned on CPAPERIOCS,")
        [outcome] = ingest_paths(repository, [cmu_small], sidecar_path=sidecar).outcomes
        assert outcome.status == "ingested", outcome.reason
        record = browsing.show_slide(repository, COMMAND_LINE, outcome.id or "")
        assert record["slide"]["observations"][0]["text"] == "scanned on CPAPERIOCS"
    finally:
        repository.close()


def test_text_fields_are_named_as_the_sidecar_spells_them(tmp_path: Path) -> None:
    csv_path = _csv_sidecar(tmp_path, "P-0031,A,,,carcinoma,mucin,thin section")
    entry = load_sidecar(csv_path, 10_000).entries["CMU-1-Small-Region.svs"]
    assert load_sidecar(csv_path, 10_000).text_fields(entry) == [
        ("diagnosis_text", "carcinoma"),
        ("finding", "mucin"),
        ("description", "thin section"),
    ]
    json_path = _json_sidecar(
        tmp_path,
        {
            "case": {"id": "P-0031", "species": "Homo sapiens"},
            "specimen": {
                "id": "A",
                "sampling": "biopsy",
                "observations": [
                    {"kind": "diagnosis", "code": "35917007", "scheme": "SCT", "meaning": "Ca"}
                ],
            },
            "slide": {"staining": {"target": "Ki-67"}},
        },
        title="Study 7",
    )
    sidecar = load_sidecar(json_path, 10_000)
    assert sidecar.text_fields(sidecar.entries["CMU-1-Small-Region.svs"]) == [
        ("dataset.title", "Study 7"),
        ("case.species", "Homo sapiens"),
        ("specimen.sampling", "biopsy"),
        ("slide.staining.target", "Ki-67"),
        ("specimen.observations.0.meaning", "Ca"),
        ("specimen.observations.0.code", "35917007"),
        ("specimen.observations.0.scheme", "SCT"),
    ]


def test_short_values_and_worded_part_identifiers_are_not_looked_for(tmp_path: Path) -> None:
    found = [
        IdentifyingValue("sidecar case", "C1"),  # under 5 characters: as the byte check
        IdentifyingValue("sidecar specimen", "colon"),  # a word: names the part
        IdentifyingValue("sidecar block", "BLK-7"),
    ]
    check_sidecar_text([("finding", "C1 colon")], found, tmp_path / "m.csv")
    with pytest.raises(InvalidInput, match=r"'finding' holds the sidecar's block identifier\)"):
        check_sidecar_text([("finding", "colon, block blk-7")], found, tmp_path / "m.csv")
    # a case identifier is looked for even when it is a word
    with pytest.raises(InvalidInput, match="holds the sidecar's case identifier"):
        check_sidecar_text(
            [("finding", "see Smithson")],
            [IdentifyingValue("sidecar case", "SMITHSON")],
            tmp_path / "m.csv",
        )
