"""The DICOMweb index: instances read from stored files' headers, registered with the slide
in the same transaction (SQLite and PostgreSQL), and rebuilt for slides stored before it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
from pydicom.uid import ImplicitVRLittleEndian
from sqlalchemy import delete, func, select

from slidebank.catalog import queries
from slidebank.catalog.dicom_tables import DicomInstance
from slidebank.ingest.dicom_index import EXPLICIT_LITTLE_ENDIAN, describe_instances
from slidebank.services import dicomweb, ingesting
from slidebank.services.repository import Repository

WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"


def test_instances_of_a_dicom_folder(wg26_files: tuple[Path, ...]) -> None:
    folder = wg26_files[0].parent
    found = describe_instances(folder)
    assert sorted(entry.file_name for entry in found) == sorted(p.name for p in wg26_files)
    by_name = {entry.file_name: entry for entry in found}
    assert by_name["5_0"].number_of_frames == 27
    assert by_name["1_Map"].number_of_frames == 1  # no NumberOfFrames: one frame
    assert {entry.sop_class_uid for entry in found} == {WSI}
    assert len({entry.study_uid for entry in found}) == 1
    header = pydicom.dcmread(wg26_files[0], stop_before_pixels=True)
    entry = by_name[wg26_files[0].name]
    assert entry.sop_uid == header.SOPInstanceUID
    assert entry.attributes["00080018"]["Value"] == [header.SOPInstanceUID]
    assert (entry.rows, entry.columns) == (header.Rows, header.Columns)


def test_non_dicom_files_have_no_instances(tmp_path: Path, slides_dir: Path) -> None:
    shutil.copy(slides_dir / "synthetic" / "boxes.tiff", tmp_path / "slide.tiff")
    (tmp_path / "notes.txt").write_text("not DICOM")
    assert describe_instances(tmp_path) == ()


def test_native_pixels_are_offered_as_explicit_little_endian(
    tmp_path: Path, slides_dir: Path
) -> None:
    source = slides_dir / "synthetic" / "boxes-dicom" / "boxes_1.dcm"
    dataset = pydicom.dcmread(source)
    dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    dataset.save_as(tmp_path / "implicit.dcm", implicit_vr=True, little_endian=True)
    (entry,) = describe_instances(tmp_path)
    assert entry.transfer_syntax_uid == EXPLICIT_LITTLE_ENDIAN


def _count(repository: Repository) -> int:
    with repository.catalogue.reading() as session:
        return int(session.scalar(select(func.count(DicomInstance.id))) or 0)


def test_ingest_registers_the_instances_and_old_slides_are_indexed_later(
    repository: Repository, wg26_files: tuple[Path, ...]
) -> None:
    report = ingesting.ingest_paths(repository, [wg26_files[0].parent], "dicom")
    (outcome,) = report.outcomes
    assert outcome.status == "ingested" and outcome.id is not None
    with repository.catalogue.reading() as session:
        image = queries.image_by_public_id(session, outcome.id)
        rows = list(
            session.scalars(select(DicomInstance).where(DicomInstance.image_id == image.id))
        )
    stored = describe_instances(repository.store.content_dir(image.storage_key))
    assert sorted(row.sop_uid for row in rows) == sorted(entry.sop_uid for entry in stored)
    assert rows and all(row.file_name for row in rows)
    # A slide stored before the index existed: indexed by the service, once.
    with repository.catalogue.transaction() as session:
        session.execute(delete(DicomInstance))
    assert dicomweb.index_stored_slides(repository) == len(rows)
    assert dicomweb.index_stored_slides(repository) == 0
    assert _count(repository) == len(rows)
