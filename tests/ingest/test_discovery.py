from __future__ import annotations

import shutil
from pathlib import Path

from slidebank.ingest.discovery import discover


def test_dicom_instances_of_one_slide_are_grouped_and_stray_files_skipped(slides_dir: Path) -> None:
    found = discover([slides_dir / "dicom"])
    assert len(found.sources) == 1
    source = found.sources[0]
    assert len(source.files) == 10
    assert source.display.endswith("WG26-BPAEC-partial")
    assert [Path(p.path).name for p in found.skipped] == ["readme.txt"]
    assert found.problems == []


def test_two_dicom_slides_in_one_folder_stay_apart(slides_dir: Path, tmp_path: Path) -> None:
    for folder in ("dicom/WG26-BPAEC-partial", "synthetic/boxes-dicom"):
        for path in (slides_dir / folder).iterdir():
            shutil.copyfile(path, tmp_path / f"{folder.replace('/', '_')}-{path.name}")
    found = discover([tmp_path])
    assert sorted(len(s.files) for s in found.sources) == [2, 10]


def test_mrxs_index_is_grouped_with_its_data_folder(tmp_path: Path) -> None:
    (tmp_path / "case7.mrxs").write_text("[GENERAL]\nSLIDE_VERSION=01.02\n")
    data = tmp_path / "case7"
    data.mkdir()
    (data / "Slidedat.ini").write_text("[GENERAL]\n")
    (data / "Data0000.dat").write_bytes(b"\0" * 64)
    found = discover([tmp_path])
    assert len(found.sources) == 1
    source = found.sources[0]
    assert source.names == ("slide.mrxs", "slide/Data0000.dat", "slide/Slidedat.ini")
    assert source.names_matter


def test_explicit_non_slide_files_are_candidates_but_folder_ones_are_skipped(
    tmp_path: Path,
) -> None:
    note = tmp_path / "note.txt"
    note.write_text("hello")
    assert [s.files[0] for s in discover([note]).sources] == [note]
    found = discover([tmp_path])
    assert found.sources == []
    assert [p.reason for p in found.problems] == ["no slides found in this folder"]


def test_the_same_file_through_a_folder_symlink_is_found_once(
    cmu_small: Path, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    shutil.copyfile(cmu_small, real / "a.svs")
    (tmp_path / "alias").symlink_to(real)
    found = discover([tmp_path])
    assert len(found.sources) == 1
    assert found.problems == []


def test_dicom_instances_named_one_by_one_make_one_slide(slides_dir: Path) -> None:
    instances = sorted((slides_dir / "synthetic" / "boxes-dicom").iterdir())
    found = discover(instances)
    assert [len(source.files) for source in found.sources] == [2]


def test_a_file_given_twice_is_one_slide(cmu_small: Path) -> None:
    found = discover([cmu_small, cmu_small.parent])
    assert [source.files for source in found.sources].count((cmu_small,)) == 1
