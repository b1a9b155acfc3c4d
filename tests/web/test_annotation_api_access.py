"""The annotation API on a controlled dataset, on SQLite and PostgreSQL: a refusal says no
more than "not found" does, a refused upload is not received, and every read of
annotations reaches the audit trail."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from slidebank.access.policy import COMMAND_LINE
from slidebank.services import accounts
from slidebank.web.app import create_app
from slidebank.web.state import AppState
from tests.access_world import DATASET, World, build_world
from tests.conftest import _fresh_postgres_database
from tests.helpers import tallied_reads

MISSING_SLIDE = "sb-missing"
MISSING_SET = 987_654
WINDOW = "x0=0&y0=0&x1=1000&y1=1000"
POINT = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10, 10]}}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    home = tmp_path_factory.mktemp("annotation-access") / "repo"
    if request.param == "sqlite":
        yield build_world(home, None)
        return
    admin_url = request.getfixturevalue("postgres_admin")
    yield from (build_world(home, url) for url in _fresh_postgres_database(admin_url))


@pytest.fixture(scope="module")
def web(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings)) as client:
        yield client


def _state(web: TestClient) -> AppState:
    state: AppState = web.app.state.slidebank  # type: ignore[attr-defined]
    return state


# (method, path with {slide} or {set} and {other}, JSON body or raw bytes)
SLIDE_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/slides/{slide}/annotation-sets", None),
    ("GET", f"/api/slides/{{slide}}/annotations?{WINDOW}", None),
    ("GET", f"/api/slides/{{slide}}/annotations/counts?{WINDOW}", None),
    ("GET", f"/api/slides/{{slide}}/annotations/density?{WINDOW}&cell=100", None),
    ("POST", "/api/slides/{slide}/annotations/import?filename=a.geojson", b'{"features": []}'),
]
SET_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/annotation-sets/{set}", None),
    ("GET", "/api/annotation-sets/{set}/revisions", None),
    ("GET", "/api/annotation-sets/{set}/diff?start=0&end=1", None),
    ("GET", "/api/annotation-sets/{set}/export?format=geojson", None),
    ("GET", "/api/annotation-sets/{set}/agreement/{other}", None),
    ("POST", "/api/annotation-sets/{set}/edits", {"add": [POINT], "remove": [0]}),
]


def _ask(web: TestClient, method: str, url: str, body: Any) -> tuple[int, str]:
    if isinstance(body, bytes):
        response = web.request(method, url, content=body)
    else:
        response = web.request(method, url, json=body)
    assert response.headers["content-type"] == "application/problem+json", response.text
    return response.status_code, response.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), SLIDE_ROUTES)
def test_an_anonymous_request_for_a_controlled_slide_is_answered_as_for_a_missing_one(
    web: TestClient, world: World, method: str, path: str, body: Any
) -> None:
    """Before, the slide's answer was "dataset 'demo' is controlled: sign in and request
    access", telling that it exists; now both are 404 "no slide with id …"."""
    real = _ask(web, method, path.format(slide=world.slide_id), body)
    missing = _ask(web, method, path.format(slide=MISSING_SLIDE), body)
    assert real == (404, f"no slide with id {world.slide_id!r}")
    assert missing == (404, f"no slide with id {MISSING_SLIDE!r}")


@pytest.mark.parametrize(("method", "path", "body"), SET_ROUTES)
def test_an_anonymous_request_for_a_controlled_set_is_answered_as_for_a_missing_one(
    web: TestClient, world: World, method: str, path: str, body: Any
) -> None:
    own, other = world.annotation_sets["own"], world.annotation_sets["promote"]
    real = _ask(web, method, path.format(set=own, other=other), body)
    missing = _ask(web, method, path.format(set=MISSING_SET, other=other), body)
    assert real == (404, f"no annotation set {own}")
    assert missing == (404, f"no annotation set {MISSING_SET}")


def test_nothing_was_read_stored_or_exported_by_the_refused_requests(
    web: TestClient, world: World
) -> None:
    for method, path, body in SLIDE_ROUTES + SET_ROUTES:
        url = path.format(
            slide=world.slide_id,
            set=world.annotation_sets["own"],
            other=world.annotation_sets["promote"],
        )
        _ask(web, method, url, body)
    repository = _state(web).repository
    assert accounts.flush_reads(repository, _state(web).reads, everything=True) == 0
    events = accounts.audit_events(repository, COMMAND_LINE, DATASET, 1000, 0)
    assert not [e for e in events if e["action"].startswith(("annotations.", "read-annotations"))]
    annotator = {"Authorization": f"Bearer {world.tokens['annotator']}"}
    sets = web.get(f"/api/slides/{world.slide_id}/annotation-sets", headers=annotator).json()
    assert [(s["name"], s["annotations"]) for s in sets] == [("own", 1), ("promote", 1)]


def test_a_refused_upload_is_not_received(
    web: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the whole body (up to 4 GiB) was copied to a temporary file, and only then
    did the import ask the policy."""
    spooled: list[str] = []
    real = tempfile.TemporaryFile

    def watched(*args: Any, **kwargs: Any) -> Any:
        spooled.append(str(kwargs.get("prefix")))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", watched)
    url = f"/api/slides/{world.slide_id}/annotations/import?filename=a.geojson&set=mine"
    upload = json.dumps({"type": "FeatureCollection", "features": [POINT] * 2000}).encode()
    cases: list[tuple[str | None, int, str]] = [
        (None, 404, f"no slide with id {world.slide_id!r}"),  # anonymous
        ("plain", 404, f"no slide with id {world.slide_id!r}"),  # no grant
        ("holder", 403, "only a annotator or steward of dataset 'demo' may do this"),
    ]
    for persona, status, detail in cases:
        headers = {"Authorization": f"Bearer {world.tokens[persona]}"} if persona else {}
        response = web.post(url, content=upload, headers=headers)
        assert (response.status_code, response.json()["detail"]) == (status, detail)
    assert [p for p in spooled if p.startswith("slidebank-import")] == []
    annotator = {"Authorization": f"Bearer {world.tokens['annotator']}"}
    made = web.post(url, content=upload, headers=annotator)
    assert made.status_code == 201, made.text
    assert [p for p in spooled if p.startswith("slidebank-import")] == ["slidebank-import-"]
    # The set imported into here belongs to the annotator; another annotator's import
    # into it is refused before its body, too.
    steward = {"Authorization": f"Bearer {world.tokens['steward']}"}
    taken = web.post(url, content=upload, headers=steward)
    assert (taken.status_code, taken.json()["detail"]) == (
        403,
        "only the owner of this annotation set may change it",
    )
    assert len([p for p in spooled if p.startswith("slidebank-import")]) == 1


def test_every_read_of_annotations_is_audited(web: TestClient, world: World) -> None:
    holder = {"Authorization": f"Bearer {world.tokens['holder']}"}
    own, other = world.annotation_sets["own"], world.annotation_sets["promote"]
    slide = world.slide_id
    reads: list[tuple[str, str]] = [
        (f"/api/slides/{slide}/annotation-sets", slide),
        (f"/api/slides/{slide}/annotations?{WINDOW}", slide),
        (f"/api/slides/{slide}/annotations/counts?{WINDOW}", slide),
        (f"/api/slides/{slide}/annotations/density?{WINDOW}&cell=100", slide),
        (f"/api/annotation-sets/{own}", f"{slide}/own"),
        (f"/api/annotation-sets/{own}/revisions", f"{slide}/own"),
        (f"/api/annotation-sets/{own}/diff?start=0&end=1", f"{slide}/own"),
        (f"/api/annotation-sets/{own}/agreement/{other}", f"{slide}/own"),
    ]
    state = _state(web)
    accounts.flush_reads(state.repository, state.reads, everything=True)  # earlier tests'
    for url, _ in reads:
        response = web.get(url, headers=holder)
        assert response.status_code == 200, (url, response.text)
    assert web.get(f"/api/annotation-sets/{own}/export", headers=holder).status_code == 200
    accounts.flush_reads(state.repository, state.reads, everything=True)
    events = accounts.audit_events(state.repository, COMMAND_LINE, DATASET, 1000, 0)
    tallied = tallied_reads(events, "holder", "read-annotations")
    assert tallied == {slide: 4, f"{slide}/own": 4, f"{slide}/promote": 1}
    exports = [e for e in events if e["actor"] == "holder" and e["action"] == "annotations.export"]
    assert [e["target"] for e in exports] == [f"{slide}/own"]
