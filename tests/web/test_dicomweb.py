"""DICOMweb, tested with clients this project did not write: dicomweb-client (QIDO-RS,
WADO-RS, STOW-RS) and wsidicom's ``WsiDicom.open_web`` (regions equal to local reads of the
stored files, pixel for pixel), against a live server on SQLite and PostgreSQL; access
refusals and the audit of reads."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
import shapely
from dicomweb_client import DICOMwebClient
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid
from sqlalchemy import delete, func, select
from wsidicom import WsiDicom
from wsidicom.web import WsiDicomWebClient

from slidebank.access.policy import (
    ANONYMOUS,
    COMMAND_LINE,
    Action,
    DatasetGate,
    DatasetPolicy,
    Principal,
    Role,
)
from slidebank.annotations.formats import dicom_ann
from slidebank.annotations.formats.base import ExportContext
from slidebank.annotations.model import Annotation
from slidebank.catalog import queries
from slidebank.catalog.annotation_tables import AnnotationSet
from slidebank.catalog.dicom_tables import DicomInstance
from slidebank.catalog.queries import MAX_OFFSET
from slidebank.config import Settings
from slidebank.errors import Forbidden, NotFound
from slidebank.services import accounts, dicomweb, ingesting
from slidebank.services.repository import open_repository
from slidebank.web import dicom_media
from slidebank.web.app import create_app
from tests.conftest import _fresh_postgres_database
from tests.served import running_server

OPEN, CLOSED = "open-dicom", "closed-dicom"
PASSWORD = "a long enough password"
JPEG = "1.2.840.10008.1.2.4.50"
EXPLICIT = "1.2.840.10008.1.2.1"


@dataclass
class Slide:
    public_id: str
    content: Path
    instances: list[DicomInstance]

    @property
    def study(self) -> str:
        return self.instances[0].study_uid

    @property
    def series(self) -> str:
        return self.instances[0].series_uid

    def largest(self) -> DicomInstance:
        return max(self.instances, key=lambda i: i.number_of_frames)


@dataclass
class DicomWorld:
    settings: Settings
    url: str
    wg26: Slide  # in an open dataset
    boxes: Slide  # in a controlled dataset
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, persona: str = "anonymous") -> DICOMwebClient:
        token = self.tokens.get(persona)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return DICOMwebClient(f"{self.url}/dicomweb", headers=headers)

    def get(self, path: str, persona: str = "anonymous", **headers: str) -> requests.Response:
        token = self.tokens.get(persona)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.get(f"{self.url}/dicomweb{path}", headers=headers, timeout=30)


def _build(
    home: Path, database_url: str | None, slides_dir: Path
) -> tuple[Settings, dict[str, str], dict[str, str]]:
    settings = Settings(home=home, database_url=database_url)
    repository = open_repository(settings)
    try:
        ids = {}
        for dataset, folder in (
            (OPEN, "dicom/WG26-BPAEC-partial"),
            (CLOSED, "synthetic/boxes-dicom"),
        ):
            report = ingesting.ingest_paths(repository, [slides_dir / folder], dataset)
            (outcome,) = report.outcomes
            assert outcome.status == "ingested", outcome.reason
            assert outcome.id is not None
            ids[dataset] = outcome.id
        # A slide that is not DICOM in its source: not in DICOMweb unless stored as DICOM.
        accounts.set_policy(repository, COMMAND_LINE, CLOSED, "controlled")
        tokens = {}
        for persona in ("plain", "steward"):
            accounts.add_user(repository, COMMAND_LINE, persona, PASSWORD, False)
            tokens[persona] = accounts.create_token(
                repository, COMMAND_LINE, persona, "write", 30
            ).token
        accounts.add_role(repository, COMMAND_LINE, CLOSED, "steward", "steward")
        return settings, ids, tokens
    finally:
        repository.close()


def _slide(settings: Settings, public_id: str) -> Slide:
    repository = open_repository(settings)
    try:
        with repository.catalogue.reading() as session:
            image = queries.image_by_public_id(session, public_id)
            rows = list(
                session.scalars(
                    DicomInstance.__table__.select()  # type: ignore[arg-type]
                    .where(DicomInstance.image_id == image.id)
                    .with_only_columns(DicomInstance)
                )
            )
            return Slide(public_id, repository.store.content_dir(image.storage_key), rows)
    finally:
        repository.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, slides_dir: Path
) -> Iterator[DicomWorld]:
    home = tmp_path_factory.mktemp("dicomweb") / "repo"
    urls: Iterator[str | None]
    if request.param == "sqlite":
        urls = iter([None])
    else:
        urls = _fresh_postgres_database(request.getfixturevalue("postgres_admin"))
    for database_url in urls:
        settings, ids, tokens = _build(home, database_url, slides_dir)
        with running_server(settings) as url:
            yield DicomWorld(
                settings, url, _slide(settings, ids[OPEN]), _slide(settings, ids[CLOSED]), tokens
            )


def _uid(item: dict[str, dict[str, list[str]]], tag: str) -> str:
    return item[tag]["Value"][0]


def test_qido_lists_what_the_principal_may_read(world: DicomWorld) -> None:
    anonymous, steward = world.client(), world.client("steward")
    studies = {_uid(s, "0020000D") for s in anonymous.search_for_studies()}
    assert world.wg26.study in studies and world.boxes.study not in studies
    studies = {_uid(s, "0020000D") for s in steward.search_for_studies()}
    assert {world.wg26.study, world.boxes.study} <= studies
    (study,) = steward.search_for_studies(search_filters={"StudyInstanceUID": world.boxes.study})
    assert study["00201208"]["Value"] == [len(world.boxes.instances)]
    assert study["00080061"]["Value"] == ["SM"]
    series = steward.search_for_series(world.boxes.study)
    assert [_uid(s, "0020000E") for s in series] == [world.boxes.series]
    # What wsidicom asks: SOP class, several series, modality, and the transfer syntaxes.
    found = anonymous.search_for_instances(
        world.wg26.study,
        fields=["AvailableTransferSyntaxUID"],
        search_filters={
            "00080016": "1.2.840.10008.5.1.4.1.1.77.1.6",
            "0020000E": [world.wg26.series, "1.2.3"],
            "00080060": "SM",
        },
    )
    assert {_uid(i, "00080018") for i in found} == {i.sop_uid for i in world.wg26.instances}
    assert {_uid(i, "00083002") for i in found} == {JPEG}
    assert anonymous.search_for_instances(world.boxes.study) == []
    # Wildcards, numbers, paging.
    assert len(anonymous.search_for_instances(search_filters={"Modality": "S*"})) == len(
        world.wg26.instances
    )
    assert len(anonymous.search_for_instances(limit=2, offset=1)) == 2
    assert anonymous.search_for_studies(search_filters={"StudyInstanceUID": "1.2.3"}) == []


def test_bad_queries_are_problems_not_errors(world: DicomWorld) -> None:
    for path in (
        "/studies?PatientWeight=70",
        "/instances?limit=x",
        "/instances?InstanceNumber=one",
        "/studies?StudyDate=2009",
        f"/studies/{world.wg26.study}/series/{world.wg26.series}/instances/"
        f"{world.wg26.largest().sop_uid}/frames/0",
        f"/studies/{world.wg26.study}/series/{world.wg26.series}/instances/"
        f"{world.wg26.largest().sop_uid}/frames/a,b",
    ):
        response = world.get(path)
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    # Numbers the catalogue cannot hold, and digits int() refuses, were 500s.
    for path, key in (
        ("/studies?offset=99999999999999999999", "offset"),
        (f"/studies?offset={MAX_OFFSET + 1}", "offset"),
        ("/studies?limit=\u00b2", "limit"),
        ("/series?limit=1001", "limit"),
        ("/instances?InstanceNumber=99999999999999999999", "InstanceNumber"),
        ("/studies?SeriesNumber=1,4294967296", "SeriesNumber"),
    ):
        response = world.get(path)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["detail"].startswith(key), (path, response.text)
    assert world.get(f"/studies?offset={MAX_OFFSET}").json() == []
    instance = world.wg26.largest()
    base = f"/studies/{world.wg26.study}/series/{world.wg26.series}/instances/{instance.sop_uid}"
    beyond = world.get(f"{base}/frames/{instance.number_of_frames + 1}")
    assert beyond.status_code == 404
    refused = world.get(f"{base}/frames/1", Accept='multipart/related; type="image/jp2"')
    assert refused.status_code == 406 and "image/jpeg" in refused.json()["detail"]


def _stored_frames(path: Path) -> list[bytes]:
    dataset = pydicom.dcmread(path)
    count = int(dataset.get("NumberOfFrames") or 1)
    if dataset.file_meta.TransferSyntaxUID.is_compressed:
        return list(generate_frames(dataset.PixelData, number_of_frames=count))
    size = len(dataset.PixelData) // count
    return [dataset.PixelData[i * size : (i + 1) * size] for i in range(count)]


def test_frames_are_the_stored_bytes(world: DicomWorld) -> None:
    instance = world.wg26.largest()
    stored = _stored_frames(world.wg26.content / instance.file_name)
    numbers = [1, len(stored), 2]
    got = world.client().retrieve_instance_frames(
        instance.study_uid,
        instance.series_uid,
        instance.sop_uid,
        frame_numbers=numbers,
        media_types=(("image/jpeg", JPEG),),
    )
    assert got == [stored[n - 1] for n in numbers]
    # Any type, and octet-stream with the stored transfer syntax, give the same bytes.
    client = world.client()
    uids = (instance.study_uid, instance.series_uid, instance.sop_uid)
    assert client.retrieve_instance_frames(*uids, frame_numbers=[1]) == stored[:1]
    octets = client.retrieve_instance_frames(
        *uids, frame_numbers=[1], media_types=(("application/octet-stream", "*"),)
    )
    assert octets == stored[:1]
    # A native (uncompressed) instance of the controlled dataset, for its steward.
    native = next(i for i in world.boxes.instances if i.transfer_syntax_uid == EXPLICIT)
    frames = world.client("steward").retrieve_instance_frames(
        native.study_uid,
        native.series_uid,
        native.sop_uid,
        frame_numbers=[1],
        media_types=(("application/octet-stream", EXPLICIT),),
    )
    assert frames == _stored_frames(world.boxes.content / native.file_name)


def test_metadata_bulk_data_rendered_and_thumbnails(world: DicomWorld) -> None:
    client = world.client()
    instance = world.wg26.largest()
    uids = (instance.study_uid, instance.series_uid, instance.sop_uid)
    metadata = pydicom.Dataset.from_json(client.retrieve_instance_metadata(*uids))
    stored = pydicom.dcmread(world.wg26.content / instance.file_name, stop_before_pixels=True)
    for keyword in ("SOPInstanceUID", "Rows", "Columns", "NumberOfFrames", "ImageType"):
        assert metadata[keyword].value == stored[keyword].value
    assert metadata.TotalPixelMatrixColumns == stored.TotalPixelMatrixColumns
    series = client.retrieve_series_metadata(instance.study_uid, instance.series_uid)
    assert len(series) == len(world.wg26.instances)
    assert len(client.retrieve_study_metadata(instance.study_uid)) == len(world.wg26.instances)
    uri = client.retrieve_instance_metadata(*uids)["7FE00010"]["BulkDataURI"]
    assert client.retrieve_bulkdata(uri) == _stored_frames(world.wg26.content / instance.file_name)
    rendered = client.retrieve_instance_frames_rendered(*uids, frame_numbers=[2])
    picture = Image.open(__import__("io").BytesIO(rendered))
    assert picture.format == "JPEG" and picture.size == (instance.columns, instance.rows)
    png = world.get(
        f"/studies/{instance.study_uid}/series/{instance.series_uid}/instances/"
        f"{instance.sop_uid}/frames/1/rendered",
        Accept="image/png",
    )
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    for path in (
        f"/studies/{instance.study_uid}/thumbnail",
        f"/studies/{instance.study_uid}/series/{instance.series_uid}/thumbnail",
        f"/studies/{instance.study_uid}/series/{instance.series_uid}/instances/"
        f"{instance.sop_uid}/thumbnail",
    ):
        thumbnail = world.get(path)
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert "public" in thumbnail.headers["cache-control"]
    # Whole instances, as stored.
    whole = client.retrieve_instance(*uids)
    on_disk = pydicom.dcmread(world.wg26.content / instance.file_name)
    assert whole.SOPInstanceUID == instance.sop_uid and whole.PixelData == on_disk.PixelData
    assert len(client.retrieve_series(instance.study_uid, instance.series_uid)) == len(
        world.wg26.instances
    )


def _local_and_web(world: DicomWorld, slide: Slide, persona: str) -> tuple[WsiDicom, WsiDicom]:
    local = WsiDicom.open(sorted(slide.content.iterdir()))
    web = WsiDicom.open_web(WsiDicomWebClient(world.client(persona)), slide.study, slide.series)
    return local, web


@pytest.mark.parametrize(("which", "persona"), [("wg26", "anonymous"), ("boxes", "steward")])
def test_wsidicom_reads_over_dicomweb_equal_local_reads(
    world: DicomWorld, which: str, persona: str
) -> None:
    slide: Slide = getattr(world, which)
    local, web = _local_and_web(world, slide, persona)
    with local, web:
        assert len(web.levels) == len(local.levels) and web.size == local.size
        for level in range(len(local.levels)):
            size = local.levels[level].size
            width, height = min(size.width, 700), min(size.height, 500)
            x, y = (size.width - width) // 3, (size.height - height) // 2
            here = np.asarray(local.read_region((x, y), level, (width, height)))
            there = np.asarray(web.read_region((x, y), level, (width, height)))
            assert np.array_equal(here, there), f"level {level} differs"
        tile = local.read_tile(0, (0, 0))
        assert np.array_equal(np.asarray(tile), np.asarray(web.read_tile(0, (0, 0))))


def test_refusals_follow_the_policy(world: DicomWorld) -> None:
    instance = world.boxes.instances[0]
    base = (
        f"/studies/{instance.study_uid}/series/{instance.series_uid}/instances/{instance.sop_uid}"
    )
    for path in (
        f"{base}/metadata",
        f"{base}/frames/1",
        f"{base}/rendered",
        f"{base}/thumbnail",
        f"{base}/bulkdata/7FE00010",
        base,
        f"/studies/{instance.study_uid}/metadata",
        f"/studies/{instance.study_uid}/thumbnail",
    ):
        for persona in ("anonymous", "plain"):
            refused = world.get(path, persona)
            assert refused.status_code == 404, (persona, path, refused.status_code)
            assert refused.headers["content-type"] == "application/problem+json"
        allowed = world.get(path, "steward")
        assert allowed.status_code == 200, (path, allowed.text[:200])
        assert "private" in allowed.headers["cache-control"]
    bad = world.get(f"{base}/metadata", "anonymous", Authorization="Bearer sbk_nope_nope")
    assert bad.status_code == 401
    assert (
        world.client("plain").search_for_studies(
            search_filters={"StudyInstanceUID": instance.study_uid}
        )
        == []
    )


def test_reads_are_audited(world: DicomWorld) -> None:
    instance = world.boxes.instances[0]
    steward = world.client("steward")
    steward.retrieve_instance_frames(
        instance.study_uid, instance.series_uid, instance.sop_uid, frame_numbers=[1]
    )
    steward.retrieve_instance_metadata(instance.study_uid, instance.series_uid, instance.sop_uid)
    rows = requests.get(
        f"{world.url}/api/datasets/{CLOSED}/audit",
        headers={"Authorization": f"Bearer {world.tokens['steward']}"},
        timeout=30,
    ).json()
    actions = {
        r["action"]
        for r in rows
        if r["actor"] == "steward" and r["target"] == world.boxes.public_id
    }
    assert {"read-pixels", "read-metadata"} <= actions


def _new_copy(source: Path, target: Path) -> list[Path]:
    """The boxes instances under new UIDs: content the repository has not seen."""
    target.mkdir()
    study, series = generate_uid(), generate_uid()
    paths = []
    for path in sorted(source.iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.save_as(target / path.name, enforce_file_format=True)
        paths.append(target / path.name)
    return paths


def test_stow_by_a_steward_goes_through_ingest(
    world: DicomWorld, slides_dir: Path, tmp_path: Path
) -> None:
    paths = _new_copy(slides_dir / "synthetic" / "boxes-dicom", tmp_path / "copy")
    datasets = [pydicom.dcmread(path) for path in paths]
    for persona, status in (("anonymous", 401), ("plain", 403)):
        with pytest.raises(requests.HTTPError) as refused:
            world.client(persona).store_instances(datasets)
        assert refused.value.response is not None
        assert refused.value.response.status_code == status
    answer = world.client("steward").store_instances(datasets)
    assert "FailedSOPSequence" not in answer
    assert {item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence} == {
        d.SOPInstanceUID for d in datasets
    }
    # The stored copy (converted and de-identified by ingest) is served to the steward only.
    series_url = answer.ReferencedSOPSequence[0].RetrieveURL
    assert requests.get(f"{series_url}/metadata", timeout=30).status_code == 404
    metadata = requests.get(
        f"{series_url}/metadata",
        headers={"Authorization": f"Bearer {world.tokens['steward']}"},
        timeout=30,
    )
    assert metadata.status_code == 200 and len(metadata.json()) >= 1
    # Not DICOM, or not multipart: refused as bad input.
    headers = {"Authorization": f"Bearer {world.tokens['steward']}"}
    for content_type, body in (
        ("application/json", b"{}"),
        (
            'multipart/related; type="application/dicom"; boundary=x',
            b"--x\r\n\r\nnot dicom\r\n--x--",
        ),
    ):
        response = requests.post(
            f"{world.url}/dicomweb/studies",
            data=body,
            headers={**headers, "Content-Type": content_type},
            timeout=30,
        )
        assert response.status_code in (409, 415), response.text
    shutil.rmtree(tmp_path / "copy")


def test_stow_of_an_annotation_instance_imports_it_into_a_set_of_its_slide(
    world: DicomWorld, tmp_path: Path
) -> None:
    """A client that read the stored slide here posts DICOM annotations of it back: they
    land in an annotation set of that slide (the steward's dataset), not as a new slide."""
    cells = [
        Annotation(shapely.Point(1 + i, 3), "point", "Nucleus", number=i) for i in range(7)
    ] + [Annotation(shapely.box(1, 1, 8, 6), "rectangle", "Tumor", number=7)]
    target = tmp_path / "annotations.dcm"
    largest = world.boxes.largest()
    with target.open("wb") as out:
        dicom_ann.writer.write(
            cells,
            out,
            ExportContext(
                "reviewed",
                _level0_size(world.boxes)[0],
                _level0_size(world.boxes)[1],
                source_dicom=world.boxes.content / largest.file_name,
            ),
        )
    posted = pydicom.dcmread(target)
    posted.SeriesDescription = "reviewed by Dr A"
    with pytest.raises(requests.HTTPError) as refused:
        world.client("plain").store_instances([posted])
    assert refused.value.response is not None and refused.value.response.status_code == 403
    answer = world.client("steward").store_instances([posted])
    assert "FailedSOPSequence" not in answer, answer
    sets = requests.get(
        f"{world.url}/api/slides/{world.boxes.public_id}/annotation-sets",
        headers={"Authorization": f"Bearer {world.tokens['steward']}"},
        timeout=30,
    ).json()
    (made,) = [s for s in sets if s["name"] == "reviewed by Dr A"]
    assert made["annotations"] == 8 and made["kind"] == "automatic"
    # An instance that references no stored slide is refused, and stores nothing.
    stray = pydicom.dcmread(target)
    _reference_nothing(stray)
    with pytest.raises(requests.HTTPError) as none_stored:
        world.client("steward").store_instances([stray])
    response = none_stored.value.response
    assert response is not None and response.status_code == 409
    assert "annotation instance references no stored slide" in response.text


def _level0_size(slide: Slide) -> tuple[int, int]:
    header = pydicom.dcmread(slide.content / slide.largest().file_name, stop_before_pixels=True)
    return int(header.TotalPixelMatrixColumns), int(header.TotalPixelMatrixRows)


def test_stow_bodies_over_the_limit_are_refused_and_store_nothing(world: DicomWorld) -> None:
    settings = world.settings.model_copy(update={"max_stow_bytes": 1024 * 1024})
    headers = {
        "Authorization": f"Bearer {world.tokens['steward']}",
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=x',
    }
    body = b"--x\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * (2 * 1024 * 1024)
    repository = open_repository(settings)
    try:
        with repository.catalogue.reading() as session:
            before = queries.count_images(session, queries.SlideFilter())
    finally:
        repository.close()
    with TestClient(create_app(settings)) as web:
        declared = web.post("/dicomweb/studies", content=body + b"\r\n--x--", headers=headers)
        assert declared.status_code == 413 and "at most 1,048,576 bytes" in declared.text

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(3):
                yield b"\0" * (1024 * 1024)

        streamed = web.post("/dicomweb/studies", content=chunks(), headers=headers)
        assert streamed.status_code == 413 and "at most 1,048,576 bytes" in streamed.text
    repository = open_repository(settings)
    try:
        with repository.catalogue.reading() as session:
            assert queries.count_images(session, queries.SlideFilter()) == before
    finally:
        repository.close()


def _annotation_instance(world: DicomWorld, target: Path) -> pydicom.Dataset:
    """DICOM annotations of the boxes slide (controlled), as a client that read it writes."""
    cells = [Annotation(shapely.Point(1 + i, 3), "point", "Nucleus", number=i) for i in range(3)]
    width, height = _level0_size(world.boxes)
    with target.open("wb") as out:
        dicom_ann.writer.write(
            cells,
            out,
            ExportContext(
                "probe",
                width,
                height,
                source_dicom=world.boxes.content / world.boxes.largest().file_name,
            ),
        )
    return pydicom.dcmread(target)


def _failure_reasons(response: requests.Response | None) -> list[str]:
    assert response is not None and response.status_code == 409, response
    failed = response.json()["00081198"]["Value"]
    return [item["00091001"]["Value"][0] for item in failed]


def _sets_of(world: DicomWorld, public_id: str) -> int:
    repository = open_repository(world.settings)
    try:
        with repository.catalogue.reading() as session:
            image = queries.image_by_public_id(session, public_id)
            query = select(func.count()).where(AnnotationSet.image_id == image.id)
            return int(session.scalar(query) or 0)
    finally:
        repository.close()


def test_stow_tells_a_steward_nothing_of_datasets_they_cannot_read(
    world: DicomWorld, tmp_path: Path
) -> None:
    """A steward of the open dataset posts annotations referencing the controlled dataset's
    stored instances: answered as if the UIDs were unknown, and nothing is stored."""
    repository = open_repository(world.settings)
    try:
        accounts.add_user(repository, COMMAND_LINE, "open-steward", PASSWORD, False)
        accounts.add_role(repository, COMMAND_LINE, OPEN, "open-steward", "steward")
        token = accounts.create_token(repository, COMMAND_LINE, "open-steward", "write", 1).token
    finally:
        repository.close()
    client = DICOMwebClient(f"{world.url}/dicomweb", headers={"Authorization": f"Bearer {token}"})
    hidden = _annotation_instance(world, tmp_path / "hidden.dcm")
    stray = _annotation_instance(world, tmp_path / "stray.dcm")
    _reference_nothing(stray)
    before = _sets_of(world, world.boxes.public_id)
    reasons = []
    for posted in (hidden, stray):
        with pytest.raises(requests.HTTPError) as refused:
            client.store_instances([posted])
        reasons.append(_failure_reasons(refused.value.response))
    assert reasons == [["annotation instance references no stored slide"]] * 2
    assert world.boxes.public_id not in str(reasons)
    assert _sets_of(world, world.boxes.public_id) == before


def test_stow_requests_of_too_many_parts_are_refused_and_store_nothing(
    world: DicomWorld,
) -> None:
    headers = {
        "Authorization": f"Bearer {world.tokens['steward']}",
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=x',
    }
    part = b"--x\r\nContent-Type: application/dicom\r\n\r\nnot dicom\r\n"

    def post(parts: int) -> requests.Response:
        return requests.post(
            f"{world.url}/dicomweb/studies",
            data=part * parts + b"--x--",
            headers=headers,
            timeout=60,
        )

    repository = open_repository(world.settings)
    try:
        with repository.catalogue.reading() as session:
            before = queries.count_images(session, queries.SlideFilter())
        limit = dicom_media.MAX_STOW_PARTS
        refused = post(limit + 1)
        assert refused.status_code == 413, refused.text[:300]
        assert refused.headers["content-type"] == "application/problem+json"
        assert f"at most {limit} parts" in refused.json()["detail"]
        # At the limit the parts are read (and refused one by one: none is DICOM).
        read = post(limit)
        assert read.status_code == 409 and len(_failure_reasons(read)) == limit
        with repository.catalogue.reading() as session:
            assert queries.count_images(session, queries.SlideFilter()) == before
    finally:
        repository.close()


def test_an_instance_stored_twice_is_answered_with_one_copy(world: DicomWorld) -> None:
    """A SOP instance UID is unique per image only: the same UID under the controlled
    slide too, for a steward who reads both datasets."""
    original = world.wg26.largest()
    columns = [column.key for column in DicomInstance.__table__.columns if column.key != "id"]
    repository = open_repository(world.settings)
    try:
        with repository.catalogue.transaction() as session:
            twin = DicomInstance(**{key: getattr(original, key) for key in columns})
            twin.image_id = world.boxes.instances[0].image_id
            session.add(twin)
            session.flush()
            twin_id = twin.id
        uids = f"{original.study_uid}/series/{original.series_uid}/instances/{original.sop_uid}"
        base = f"/dicomweb/studies/{uids}"
        steward = {"Authorization": f"Bearer {world.tokens['steward']}"}
        stored = _stored_frames(world.wg26.content / original.file_name)
        with TestClient(create_app(world.settings)) as web:  # no cached locations
            frame = web.get(f"{base}/frames/1", headers={**steward, "Accept": "image/jpeg"})
            assert frame.status_code == 200 and frame.content == stored[0]
            for path in ("/rendered", "/thumbnail", "/bulkdata/7FE00010", ""):
                assert web.get(base + path, headers=steward).status_code == 200, path
            (metadata,) = web.get(f"{base}/metadata", headers=steward).json()
            assert metadata["00080018"]["Value"] == [original.sop_uid]
            # Anyone else reads the open copy alone, as before.
            assert (
                web.get(f"{base}/frames/1", headers={"Accept": "image/jpeg"}).content == (stored[0])
            )
    finally:
        with repository.catalogue.transaction() as session:
            session.execute(delete(DicomInstance).where(DicomInstance.id == twin_id))
        repository.close()


def _instance(public_id: str, dataset_id: int) -> dicomweb.Instance:
    return dicomweb.Instance(
        "1.2", "1.2.3", "1.2.3.4", "1.2.840.10008.5.1.4.1.1.77.1.6", JPEG, 4,
        public_id, dataset_id, Path("/nowhere.dcm"), Path("/nowhere.jpg"),
    )  # fmt: skip


def test_the_service_decides_which_instances_a_request_reads() -> None:
    """What the web layer asks for every WADO-RS request (its gates cached)."""
    gates = {
        1: DatasetGate(1, "open", DatasetPolicy.OPEN),
        2: DatasetGate(2, "closed", DatasetPolicy.CONTROLLED),
        3: DatasetGate(3, "shown", DatasetPolicy.CONTROLLED, frozenset({"sb-shown"})),
    }
    uids = ("1.2", "1.2.3", "1.2.3.4")
    unknown = dicomweb.no_such_instances(*uids)
    with pytest.raises(NotFound) as hidden:
        dicomweb.readable(ANONYMOUS, Action.READ_PIXELS, [_instance("sb-c", 2)], gates, *uids)
    assert str(hidden.value) == str(unknown) == "no instance 1.2.3.4"
    with pytest.raises(Forbidden, match="controlled: sign in"):
        dicomweb.readable(ANONYMOUS, Action.READ_PIXELS, [_instance("sb-shown", 3)], gates, *uids)
    both = [_instance("sb-o", 1), _instance("sb-c", 2)]
    public = dicomweb.readable(ANONYMOUS, Action.READ_PIXELS, both, gates, "1.2")
    assert [i.public_id for i in public.instances] == ["sb-o"] and public.open_data
    steward = Principal(user_id=7, name="s", roles={2: frozenset({Role.STEWARD})}, via="token")
    private = dicomweb.readable(steward, Action.READ_PIXELS, both, gates, "1.2")
    assert [i.public_id for i in private.instances] == ["sb-o", "sb-c"]
    assert not private.open_data  # then not publicly cacheable
    first = dicomweb.readable(steward, Action.READ_PIXELS, both[::-1], gates, *uids)
    assert [i.public_id for i in first.instances] == ["sb-c"] and not first.open_data


def _reference_nothing(instance: pydicom.Dataset) -> None:
    """Point an annotation instance at a study and images that nobody stored."""
    instance.StudyInstanceUID = generate_uid()
    for series in instance.ReferencedSeriesSequence:
        for referenced in series.ReferencedInstanceSequence:
            referenced.ReferencedSOPInstanceUID = generate_uid()
    for item in instance.ReferencedImageSequence:
        item.ReferencedSOPInstanceUID = generate_uid()
