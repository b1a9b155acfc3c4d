"""The annotation API over HTTP: import, viewport reads, density, counts, export, edits,
history, diff, revert, promotion, agreement, label schemas — and bad requests answered with
problem details that name what is wrong (on SQLite; the use cases run on both databases in
tests/services/test_annotating.py)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pydicom
import pytest
from fastapi.testclient import TestClient

from slidebank.access.policy import COMMAND_LINE
from slidebank.annotations.formats.registry import IMPORT_FORMATS, WRITERS
from slidebank.config import Settings
from slidebank.services import accounts, ingesting
from slidebank.services.repository import open_repository
from slidebank.web.annotation_api import MAX_JSON_BODY_BYTES, ExportFormat, ImportFormat
from slidebank.web.app import create_app
from slidebank.web.auth import CSRF_COOKIE

DATASET = "histology"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, testdata: Path) -> Iterator[Any]:
    cmu_small_module = testdata / "slides" / "aperio" / "CMU-1-Small-Region.svs"
    settings = Settings(home=tmp_path_factory.mktemp("annotation-api") / "repo")
    repository = open_repository(settings)
    try:
        (outcome,) = ingesting.ingest_paths(repository, [cmu_small_module], DATASET).outcomes
        assert outcome.status == "ingested", outcome.reason
        tokens = {}
        for name, role in (("ann", "annotator"), ("stew", "steward"), ("plain", None)):
            accounts.add_user(repository, COMMAND_LINE, name, "a long password 1", False)
            if role:
                accounts.add_role(repository, COMMAND_LINE, DATASET, name, role)
            tokens[name] = accounts.create_token(repository, COMMAND_LINE, name, "write", 1).token
    finally:
        repository.close()
    with TestClient(create_app(settings)) as client:
        yield client, outcome.id, tokens


def _as(tokens: dict[str, str], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}"}


def _cells(count: int, label: str = "Tumor", x: float = 100) -> bytes:
    features = []
    for i in range(count):
        left, top = x + (i % 20) * 30, 100 + (i // 20) * 30
        ring = [[left, top], [left + 20, top], [left + 22, top + 18], [left, top + 20], [left, top]]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"objectType": "cell", "classification": {"name": label}},
            }
        )
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def test_the_formats_in_the_schema_are_the_registry_s() -> None:
    assert set(get_args(ImportFormat)) == set(IMPORT_FORMATS)
    assert set(get_args(ExportFormat)) == set(WRITERS)


def test_import_read_edit_and_export_over_http(api: Any) -> None:
    client, slide, tokens = api
    made = client.post(
        f"/api/slides/{slide}/annotations/import?filename=cells.geojson",
        content=_cells(100),
        headers=_as(tokens, "ann"),
    )
    assert made.status_code == 201, made.text
    report = made.json()
    assert (report["imported"], report["set"]["name"], report["format"]) == (100, "ann", "geojson")
    set_id = report["set"]["id"]

    window = "x0=0&y0=0&x1=400&y1=400"
    found = client.get(f"/api/slides/{slide}/annotations?{window}&sets={set_id}")
    assert found.headers["content-type"] == "application/geo+json"
    features = found.json()["features"]
    # Columns start at x = 100, 130, …: 11 of them reach into x <= 400 (the last touches
    # it), and all 5 rows do.
    assert len(features) == 55
    assert {f["properties"]["label"] for f in features} == {"Tumor"}
    simplified = client.get(f"/api/slides/{slide}/annotations?{window}&simplify=50").json()
    assert len(simplified["features"][0]["geometry"]["coordinates"][0]) < 6
    limited = client.get(f"/api/slides/{slide}/annotations?{window}&limit=5").json()
    assert len(limited["features"]) == 5 and limited["truncated"] is True
    counts = client.get(f"/api/slides/{slide}/annotations/counts?{window}").json()
    assert counts == {"Tumor": 55}
    density = client.get(f"/api/slides/{slide}/annotations/density?{window}&cell=200").json()
    assert sum(n for _, _, n in density["cells"]) == 50  # centres inside: 10 columns

    edit = client.post(
        f"/api/annotation-sets/{set_id}/edits",
        json={"remove": [0, 1], "add": [{"geometry": {"type": "Point", "coordinates": [5, 5]}}]},
        headers=_as(tokens, "ann"),
    )
    assert edit.status_code == 200 and edit.json()["number"] == 2
    history = client.get(f"/api/annotation-sets/{set_id}/revisions").json()
    assert [r["action"] for r in history] == ["import", "edit"]
    diff = client.get(f"/api/annotation-sets/{set_id}/diff?start=1&end=2").json()
    assert sorted(f["id"] for f in diff["removed"]) == [0, 1] and len(diff["added"]) == 1
    reverted = client.post(
        f"/api/annotation-sets/{set_id}/revert", json={"to": 1}, headers=_as(tokens, "ann")
    )
    assert reverted.status_code == 200
    assert client.get(f"/api/annotation-sets/{set_id}").json()["annotations"] == 100

    exported = client.get(f"/api/annotation-sets/{set_id}/export?format=dicom-ann")
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "application/dicom"
    assert "attachment" in exported.headers["content-disposition"]
    instance = pydicom.dcmread(io.BytesIO(exported.content))
    assert instance.SOPClassUID == "1.2.840.10008.5.1.4.1.1.91.1"
    asap = client.get(f"/api/annotation-sets/{set_id}/export?format=asap&revision=0")
    assert asap.status_code == 200 and b"<ASAP_Annotations" in asap.content
    assert b"<Annotation " not in asap.content  # the set was empty at revision 0


def test_promotion_agreement_and_label_schema(api: Any) -> None:
    client, slide, tokens = api
    first = client.post(
        f"/api/slides/{slide}/annotation-sets",
        json={"name": "reference draft"},
        headers=_as(tokens, "ann"),
    ).json()
    client.post(
        f"/api/annotation-sets/{first['id']}/edits",
        json={"add": [{"geometry": {"type": "Point", "coordinates": [50, 50]}}]},
        headers=_as(tokens, "ann"),
    )
    second = client.post(
        f"/api/slides/{slide}/annotation-sets", json={"name": "second"}, headers=_as(tokens, "stew")
    ).json()
    client.post(
        f"/api/annotation-sets/{second['id']}/edits",
        json={"add": [{"geometry": {"type": "Point", "coordinates": [53, 50]}}]},
        headers=_as(tokens, "stew"),
    )
    agreement = client.get(
        f"/api/annotation-sets/{first['id']}/agreement/{second['id']}?distance=5"
    ).json()
    assert agreement["detections"]["overall"]["f1"] == 1.0
    far = client.get(f"/api/annotation-sets/{first['id']}/agreement/{second['id']}?distance=2")
    assert far.json()["detections"]["overall"]["f1"] == 0.0

    refused = client.post(f"/api/annotation-sets/{first['id']}/promote", headers=_as(tokens, "ann"))
    assert refused.status_code == 403
    promoted = client.post(
        f"/api/annotation-sets/{first['id']}/promote", headers=_as(tokens, "stew")
    )
    assert promoted.status_code == 200 and promoted.json()["kind"] == "reference"
    frozen = client.post(
        f"/api/annotation-sets/{first['id']}/edits",
        json={"remove": [0]},
        headers=_as(tokens, "ann"),
    )
    assert frozen.status_code == 409 and "reference set" in frozen.json()["detail"]

    schema = [{"name": "Tumor", "color": "#aa0000", "code": "SCT:108369006"}]
    put = client.put(f"/api/datasets/{DATASET}/labels", json=schema, headers=_as(tokens, "stew"))
    assert put.status_code == 200
    assert client.get(f"/api/datasets/{DATASET}/labels").json()[0]["color"] == "#aa0000"
    not_steward = client.put(
        f"/api/datasets/{DATASET}/labels", json=schema, headers=_as(tokens, "ann")
    )
    assert not_steward.status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail"),
    [
        ("GET", "/api/slides/{slide}/annotations?x0=10&y0=0&x1=5&y1=5", None, 400, "is empty"),
        ("GET", "/api/slides/{slide}/annotations?x0=0&y0=0&x1=5", None, 422, "y1"),
        ("GET", "/api/slides/{slide}/annotations?x0=0&y0=0&x1=5&y1=5&sets=a", None, 400, "sets"),
        ("GET", "/api/slides/{slide}/annotations?x0=0&y0=0&x1=5&y1=5&sets=999", None, 404, "999"),
        ("GET", "/api/slides/sb-nope/annotations?x0=0&y0=0&x1=5&y1=5", None, 404, "sb-nope"),
        (
            "GET",
            "/api/slides/{slide}/annotations/density?x0=0&y0=0&x1=100000&y1=100000&cell=1",
            None,
            400,
            "more than 65,536",
        ),
        ("POST", "/api/slides/{slide}/annotations/import", b"<nonsense/>", 400, "upload"),
        ("POST", "/api/slides/{slide}/annotations/import?format=asap", b"{}", 400, "XML"),
        ("POST", "/api/slides/{slide}/annotations/import?format=word", b"{}", 422, "format"),
        ("POST", "/api/slides/{slide}/annotation-sets", {"name": ""}, 422, "name"),
        (
            "POST",
            "/api/slides/{slide}/annotation-sets",
            {"name": "x", "kind": "reference"},
            422,
            "kind",
        ),
        ("GET", "/api/annotation-sets/999999", None, 404, "no annotation set 999999"),
        ("GET", "/api/annotation-sets/999999/export?format=pdf", None, 422, "format"),
        ("POST", "/api/annotation-sets/{own}/edits", {"remove": [12345]}, 404, "annotation 12345"),
        (
            "POST",
            "/api/annotation-sets/{own}/edits",
            {"add": [{"geometry": {"type": "Polygon", "coordinates": [[[0, 0]]]}}]},
            400,
            "added feature 0: malformed geometry",
        ),
        ("POST", "/api/annotation-sets/{own}/revert", {"to": 99}, 404, "no revision 99"),
        ("GET", "/api/annotation-sets/{own}/diff?start=2&end=1", None, 400, "start after end"),
        ("PUT", "/api/datasets/histology/labels", [{"name": "A", "color": "red"}], 400, "#rrggbb"),
        # Windows that are no numbers, or grids no integer counts (500s before).
        (
            "GET",
            "/api/slides/{slide}/annotations?x0=0&y0=0&x1=inf&y1=inf",
            None,
            400,
            "viewport: x1 must be a finite number, not inf",
        ),
        (
            "GET",
            "/api/slides/{slide}/annotations?x0=0&y0=nan&x1=5&y1=5",
            None,
            400,
            "viewport: y0 must be a finite number, not nan",
        ),
        (
            "GET",
            "/api/slides/{slide}/annotations/counts?x0=-inf&y0=0&x1=5&y1=5",
            None,
            400,
            "viewport: x0 must be a finite number, not -inf",
        ),
        (
            "GET",
            "/api/slides/{slide}/annotations/density?x0=0&y0=0&x1=inf&y1=5&cell=1",
            None,
            400,
            "viewport: x1 must be a finite number, not inf",
        ),
        (
            "GET",
            "/api/slides/{slide}/annotations/density?x0=0&y0=0&x1=1e308&y1=1e308&cell=1e-300",
            None,
            400,
            "cell: a density grid of inf x inf cells",
        ),
        (
            "GET",
            "/api/slides/{slide}/annotations/density?x0=0&y0=0&x1=5&y1=5&cell=inf",
            None,
            400,
            "cell: a density cell must be positive and finite, got inf",
        ),
        (
            "GET",
            "/api/slides/{slide}/annotations?x0=0&y0=0&x1=5&y1=5&simplify=inf",
            None,
            400,
            "simplify: must be a finite number",
        ),
        # Numbers beyond 64 bits name nothing (OverflowError in the driver before).
        (
            "GET",
            "/api/annotation-sets/99999999999999999999",
            None,
            404,
            "no annotation set 99999999999999999999",
        ),
        (
            "GET",
            "/api/annotation-sets/{own}/diff?start=0&end=99999999999999999999",
            None,
            400,
            "end: revision 99999999999999999999 is not a revision number",
        ),
        (
            "GET",
            "/api/annotation-sets/{own}/export?revision=99999999999999999999",
            None,
            400,
            "revision: revision 99999999999999999999 is not a revision number",
        ),
        (
            "GET",
            "/api/annotation-sets/{own}/agreement/99999999999999999999",
            None,
            404,
            "no annotation set 99999999999999999999",
        ),
        (
            "POST",
            "/api/annotation-sets/{own}/edits",
            {"remove": [99999999999999999999]},
            404,
            "annotation 99999999999999999999 is not in set",
        ),
        (
            "POST",
            "/api/annotation-sets/{own}/edits",
            {
                "replace": {
                    "99999999999999999999": {"geometry": {"type": "Point", "coordinates": [1, 1]}}
                }
            },
            404,
            "annotation 99999999999999999999 is not in set",
        ),
        # Geometry GEOS refuses, or numbers JSON has no spelling for (500s before).
        (
            "POST",
            "/api/annotation-sets/{own}/edits",
            {"add": [{"geometry": {"type": "LineString", "coordinates": [[0, 0]]}}]},
            400,
            "added feature 0: malformed geometry (IllegalArgumentException",
        ),
        (
            "POST",
            "/api/annotation-sets/{own}/edits",
            b'{"add": [{"geometry": {"type": "Point", "coordinates": [1e400, 1]}}]}',
            400,
            "added feature 0: coordinates are not finite numbers",
        ),
        (
            "POST",
            "/api/annotation-sets/{own}/edits",
            b'{"add": [{"geometry": {"type": "Point", "coordinates": [1, 1]},'
            b' "properties": {"note": Infinity}}]}',
            400,
            "added feature 0: property 'note' is not a finite number",
        ),
        (
            "POST",
            "/api/annotation-sets/{own}/edits",
            b'{"replace": {"0": {"geometry": {"type": "Point", "coordinates": [1, 1]},'
            b' "properties": {"score": [1, NaN]}}}}',
            400,
            "annotation 0: property 'score[1]' is not a finite number",
        ),
        (
            "POST",
            "/api/annotation-sets/{own}/edits",
            {"remove": list(range(10_001))},
            422,
            "remove: List should have at most 10000 items",
        ),
        (
            "POST",
            "/api/slides/{slide}/annotations/import?format=dsa&filename=cells.json",
            b'{"elements": [{"type": "point", "center": [1, 2, 0], "user": {"n": -Infinity}}]}',
            400,
            "cells.json: element 1: user property 'n' is not a finite number",
        ),
    ],
)
def test_bad_requests_get_a_clear_problem(
    api: Any, method: str, path: str, body: Any, status: int, detail: str
) -> None:
    client, slide, tokens = api
    own = client.post(
        f"/api/slides/{slide}/annotations/import?filename=mine.geojson",
        content=_cells(3),
        headers=_as(tokens, "ann"),
    ).json()["set"]["id"]
    url = path.format(slide=slide, own=own)
    headers = _as(tokens, "stew" if "labels" in path else "ann")
    arguments: dict[str, Any] = {"headers": headers}
    if isinstance(body, bytes):
        arguments["content"] = body
        if "/edits" in path:  # JSON that json.dumps would not write
            headers["Content-Type"] = "application/json"
    elif body is not None:
        arguments["json"] = body
    response = client.request(method, url, **arguments)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert detail in problem["detail"], problem
    if status != 422:
        assert problem["status"] == status and "title" in problem


def test_an_upload_over_the_limit_is_refused_and_stores_nothing(
    tmp_path: Path, cmu_small: Path
) -> None:
    settings = Settings(home=tmp_path / "repo", max_annotation_import_bytes=2048)
    repository = open_repository(settings)
    try:
        (outcome,) = ingesting.ingest_paths(repository, [cmu_small], DATASET).outcomes
        accounts.add_user(repository, COMMAND_LINE, "ann", "a long password 1", False)
        accounts.add_role(repository, COMMAND_LINE, DATASET, "ann", "annotator")
        token = accounts.create_token(repository, COMMAND_LINE, "ann", "write", 1).token
    finally:
        repository.close()
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings)) as client:
        response = client.post(
            f"/api/slides/{outcome.id}/annotations/import", content=_cells(100), headers=headers
        )
        assert response.status_code == 413 and "2,048 bytes" in response.json()["detail"]
        assert client.get(f"/api/slides/{outcome.id}/annotation-sets", headers=headers).json() == []


def _new_set(client: TestClient, slide: str, tokens: dict[str, str], name: str) -> int:
    made = client.post(
        f"/api/slides/{slide}/annotation-sets", json={"name": name}, headers=_as(tokens, "ann")
    )
    assert made.status_code == 201, made.text
    set_id: int = made.json()["id"]
    return set_id


def test_json_bodies_are_bounded_and_a_larger_one_is_a_problem_document(api: Any) -> None:
    """Before, an anonymous 40 MB list of numbers grew the server by 440 MB before its 400."""
    client, slide, tokens = api
    set_id = _new_set(client, slide, tokens, "bounded")
    url = f"/api/annotation-sets/{set_id}/edits"
    limit = MAX_JSON_BODY_BYTES
    numbers = b'{"remove": [' + b"0," * (limit // 2) + b"0]}"
    declared = client.post(url, content=numbers, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413
    assert declared.headers["content-type"] == "application/problem+json"
    assert declared.json()["detail"] == f"the request body may be at most {limit:,} bytes"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield numbers[: limit // 2]
        yield numbers[limit // 2 :]

    streamed = client.post(url, content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert streamed.headers["content-type"] == "application/problem+json"
    for path, body in (
        (f"/api/slides/{slide}/annotation-sets", {"name": "x" * limit}),
        (f"/api/annotation-sets/{set_id}/revert", {"to": 0, "pad": "x" * limit}),
        (f"/api/datasets/{DATASET}/labels", [{"name": "x" * limit}]),
    ):
        refused = client.request(
            "PUT" if path.endswith("/labels") else "POST",
            path,
            json=body,
            headers=_as(tokens, "stew"),
        )
        assert refused.status_code == 413, path
    history = client.get(f"/api/annotation-sets/{set_id}/revisions").json()
    assert history == []  # nothing was stored


def test_imports_keep_their_own_larger_limit(api: Any) -> None:
    client, slide, tokens = api
    points = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [i % 2000, i // 2000]}}
        for i in range(120_000)
    ]
    upload = json.dumps({"type": "FeatureCollection", "features": points}).encode()
    assert len(upload) > MAX_JSON_BODY_BYTES
    made = client.post(
        f"/api/slides/{slide}/annotations/import?filename=many.geojson&set=many",
        content=upload,
        headers=_as(tokens, "ann"),
    )
    assert made.status_code == 201, made.text
    assert made.json()["imported"] == 120_000


def test_a_form_import_is_refused_with_a_clear_problem(api: Any) -> None:
    """Before, a browser session's form (CSRF token as a field) was parsed by the CSRF check
    and the import then failed on the consumed stream: 500."""
    client, slide, _ = api
    browser = TestClient(client.app)  # its own cookies; the application is the same
    csrf = browser.get("/sign-in").cookies[CSRF_COOKIE]
    signed_in = browser.post(
        "/sign-in",
        data={"name": "ann", "password": "a long password 1", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert signed_in.status_code == 303, signed_in.text
    page = browser.get("/account").text
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    url = f"/api/slides/{slide}/annotations/import?filename=form.geojson&set=form"
    for arguments in (
        {"data": {"csrf_token": token, "file": _cells(2).decode()}},
        {"data": {"csrf_token": token}, "files": {"file": ("form.geojson", _cells(2))}},
        # Without its token too: refused before the CSRF check would parse the form.
        {"data": {"file": _cells(2).decode()}},
    ):
        refused = browser.post(url, **arguments)  # type: ignore[arg-type]
        assert refused.status_code == 415, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert "not as a form" in refused.json()["detail"]
    body = browser.post(url, content=_cells(2), headers={"X-CSRF-Token": token})
    assert body.status_code == 201, body.text
