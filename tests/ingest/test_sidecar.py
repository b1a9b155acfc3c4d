from __future__ import annotations

import json
from pathlib import Path

import pytest

from slidebank.errors import InvalidInput
from slidebank.ingest.sidecar import load_sidecar


def test_csv_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "meta.csv"
    path.write_text(
        "file,case,species,specimen,anatomical_site,block,slide,stain_compound,"
        "diagnosis_code,diagnosis_scheme,diagnosis_meaning,finding\n"
        "a.svs,P1,Homo sapiens,S1,colon,B2,A1,H&E,35917007,SCT,Adenocarcinoma,mucin\n"
        "folder/b.ndpi,,,,,,,PAS,,,,\n"
    )
    sidecar = load_sidecar(path, 10_000)
    first = sidecar.entry_for("dir/a.svs", "a.svs")
    assert first is not None
    assert (first.case, first.species, first.specimen, first.block) == (
        "P1",
        "Homo sapiens",
        "S1",
        "B2",
    )
    assert first.specimen_observations[0].code == "35917007"
    assert first.slide_observations[0].text == "mucin"
    second = sidecar.entry_for("dir/b.ndpi", "b.ndpi")
    assert second is not None and second.stain_compound == "PAS" and second.case is None
    assert sidecar.unused() == []


def test_json_sidecar_with_dataset(tmp_path: Path) -> None:
    path = tmp_path / "meta.json"
    path.write_text(
        json.dumps(
            {
                "dataset": {"title": "T", "licence": "CC0-1.0"},
                "slides": [
                    {"file": "x.svs", "case": {"id": "1", "species": "Canis lupus familiaris"}}
                ],
            }
        )
    )
    sidecar = load_sidecar(path, 10_000)
    assert sidecar.dataset_entry("d").licence == "CC0-1.0"
    entry = sidecar.entry_for("x.svs", "x.svs")
    assert entry is not None and entry.species == "Canis lupus familiaris"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "case,species\nP1,human\n", "needs a 'file' column"),
        ("b.csv", "file,colour\nx.svs,blue\n", "unknown CSV column(s) colour"),
        ("c.csv", "file,case\n,P1\n", "line 2: field 'file' is empty"),
        ("d.csv", "file,specimen\nx.svs,S1\n", "line 2: field 'case' is needed"),
        ("e.csv", "file,case\nx.svs,P1\nx.svs,P2\n", "file 'x.svs' is described twice"),
        ("f.csv", "file,diagnosis_code\nx.svs,123\n", "'diagnosis_scheme' is needed"),
        ("g.json", '{"slides": [{"file": "x", "slide": {"colour": 1}}]}', "slides.0.slide.colour"),
        ("h.json", '{"slides": [', "not valid JSON at line 1"),
        ("i.json", '{"slides": [{"file": "x", "case": {"id": ""}}]}', "slides.0.case.id"),
    ],
)
def test_sidecar_errors_name_file_and_field(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InvalidInput) as caught:
        load_sidecar(path, 10_000)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_sidecar_size_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("file\n" + "x.svs\n" * 1000)
    with pytest.raises(InvalidInput, match="the limit is 1,000"):
        load_sidecar(path, 1000)


def test_binary_sidecar_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "meta.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidInput, match="not UTF-8"):
        load_sidecar(path, 1000)


def test_one_entry_is_never_given_to_two_slides(tmp_path: Path) -> None:
    path = tmp_path / "meta.csv"
    path.write_text("file,case\nslide.svs,P1\n")
    sidecar = load_sidecar(path, 10_000)
    assert sidecar.entry_for("A/slide.svs", "slide.svs") is not None
    assert sidecar.entry_for("A/slide.svs", "slide.svs") is not None  # same slide again
    with pytest.raises(InvalidInput, match=r"'slide.svs' matches two slides \(A/slide.svs and B"):
        sidecar.entry_for("B/slide.svs", "slide.svs")
