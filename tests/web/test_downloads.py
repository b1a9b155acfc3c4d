"""Downloads of stored DICOM files: streamed ZIP archives and manifests, under the dataset's
policy, audited."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator

import pydicom
import pytest
from fastapi.testclient import TestClient

from slidebank.access.policy import COMMAND_LINE
from slidebank.services import accounts
from slidebank.services.repository import open_repository
from slidebank.web.app import create_app
from tests.access_world import DATASET, World, build_world


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> World:
    database_url = None
    if request.param == "postgresql":
        from tests.conftest import _fresh_postgres_database

        admin = request.getfixturevalue("postgres_admin")
        generator = _fresh_postgres_database(admin)
        database_url = next(generator)
        request.addfinalizer(lambda: next(generator, None))
    return build_world(tmp_path_factory.mktemp("downloads") / "repo", database_url)


@pytest.fixture
def web(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings), follow_redirects=False) as client:
        yield client


def _as(world: World, persona: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.tokens[persona]}"}


def test_a_grant_holder_downloads_the_slide_as_dicom_and_it_is_audited(
    web: TestClient, world: World
) -> None:
    archive = web.get(f"/api/slides/{world.slide_id}/download", headers=_as(world, "holder"))
    assert archive.status_code == 200, archive.text
    assert archive.headers["content-type"] == "application/zip"
    assert "attachment" in archive.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(archive.content)) as bundle:
        assert bundle.testzip() is None
        names = bundle.namelist()
        assert names and all(
            n.startswith(f"{world.slide_id}/") and n.endswith(".dcm") for n in names
        )
        for name in names:
            dataset = pydicom.dcmread(io.BytesIO(bundle.read(name)))
            assert dataset.PatientIdentityRemoved == "YES"

    manifest = web.get(f"/api/slides/{world.slide_id}/manifest", headers=_as(world, "holder"))
    files = manifest.json()["files"]
    assert sorted(f"{f['slide']}/{f['name']}" for f in files) == sorted(names)
    for item in files:
        one = web.get(item["url"].replace("http://testserver", ""), headers=_as(world, "holder"))
        assert one.status_code == 200
        assert hashlib.sha256(one.content).hexdigest() == item["sha256"]
        assert len(one.content) == item["size"]

    repository = open_repository(world.settings)
    try:
        events = accounts.audit_events(repository, COMMAND_LINE, DATASET, 1000, 0)
    finally:
        repository.close()
    downloads = [e for e in events if e["action"] == "download" and e["actor"] == "holder"]
    kinds = {e["detail"]["kind"] for e in downloads}
    assert {"zip", "manifest"} <= kinds and any(k.startswith("file ") for k in kinds)


def test_a_dataset_downloads_as_one_archive_with_a_folder_per_slide(
    web: TestClient, world: World
) -> None:
    archive = web.get(f"/api/datasets/{DATASET}/download", headers=_as(world, "steward"))
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as bundle:
        folders = {name.split("/")[0] for name in bundle.namelist()}
    manifest = web.get(f"/api/datasets/{DATASET}/manifest", headers=_as(world, "steward")).json()
    assert folders == {item["slide"] for item in manifest["files"]}
    assert world.slide_id in folders
    assert manifest["total_bytes"] == sum(item["size"] for item in manifest["files"])


@pytest.mark.parametrize("persona", ["anonymous", "plain", "revoked", "expired"])
def test_those_without_a_grant_download_nothing(
    web: TestClient, world: World, persona: str
) -> None:
    headers = {} if persona == "anonymous" else _as(world, persona)
    for path in (
        f"/api/slides/{world.slide_id}/download",
        f"/api/slides/{world.slide_id}/manifest",
        f"/api/slides/{world.slide_id}/files/{world.stored_file}",
    ):
        refused = web.get(path, headers=headers)
        assert refused.status_code in (401, 404), (path, refused.status_code)
        assert refused.headers["content-type"].startswith("application/problem+json")
    dataset = web.get(f"/api/datasets/{DATASET}/download", headers=headers)
    assert dataset.status_code in (401, 403)


def test_an_unknown_file_name_is_404_and_paths_do_not_escape(web: TestClient, world: World) -> None:
    for name in ("nope.dcm", "..%2F..%2Fcatalogue.sqlite", "%2Fetc%2Fpasswd"):
        answer = web.get(f"/api/slides/{world.slide_id}/files/{name}", headers=_as(world, "holder"))
        assert answer.status_code == 404, name


SLIDE_ROUTES = ("deidentification", "download", "manifest", "files/{file}")


@pytest.mark.parametrize("persona", ["anonymous", "plain", "revoked", "expired"])
@pytest.mark.parametrize("route", SLIDE_ROUTES)
def test_a_slide_one_may_not_read_is_answered_as_one_that_does_not_exist(
    web: TestClient, world: World, persona: str, route: str
) -> None:
    headers = {} if persona == "anonymous" else _as(world, persona)
    unknown = "sb-doesnotexist"
    answers = []
    for slide_id in (world.slide_id, unknown):
        path = f"/api/slides/{slide_id}/{route.format(file=world.stored_file)}"
        answer = web.get(path, headers=headers)
        assert answer.status_code == 404, (path, answer.text)
        body = answer.json()
        assert body["detail"] == f"no slide with id {slide_id!r}"
        answers.append({**body, "detail": body["detail"].replace(slide_id, "ID"), "instance": ""})
    assert answers[0] == answers[1]
    actor = "anonymous" if persona == "anonymous" else persona
    repository = open_repository(world.settings)
    try:
        events = accounts.audit_events(repository, COMMAND_LINE, DATASET, 1000, 0)
    finally:
        repository.close()
    assert not [e for e in events if e["action"] == "download" and e["actor"] == actor]


def test_a_featured_slide_is_refused_with_the_reason(web: TestClient, world: World) -> None:
    """Its landing page shows the slide, so its existence is no secret: 403 saying why."""
    repository = open_repository(world.settings)
    try:
        accounts.set_featured(repository, COMMAND_LINE, DATASET, [world.slide_id])
        for route in SLIDE_ROUTES:
            path = f"/api/slides/{world.slide_id}/{route.format(file=world.stored_file)}"
            refused = web.get(path)
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["detail"] == (
                f"dataset {DATASET!r} is controlled: sign in and request access"
            )
    finally:
        accounts.set_featured(repository, COMMAND_LINE, DATASET, [])
        repository.close()


def test_reading_the_deidentification_report_is_audited(web: TestClient, world: World) -> None:
    report = web.get(
        f"/api/slides/{world.slide_id}/deidentification", headers=_as(world, "annotator")
    )
    assert report.status_code == 200 and report.json()["check"]["passed"] is True
    rows = web.get(f"/api/datasets/{DATASET}/audit", headers=_as(world, "steward")).json()
    reads = [r for r in rows if r["actor"] == "annotator" and r["action"] == "read-metadata"]
    assert [(r["target"], r["count"]) for r in reads] == [(world.slide_id, 1)]
