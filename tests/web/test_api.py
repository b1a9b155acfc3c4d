"""The JSON API: every route, good and bad requests, and the problem-details shape."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from slidebank.access.policy import COMMAND_LINE
from slidebank.catalog.queries import MAX_OFFSET
from slidebank.config import Settings
from slidebank.geometry import Point, Size
from slidebank.services import browsing, ingesting
from slidebank.services.repository import open_repository
from slidebank.slides import open_slide
from slidebank.web.app import create_app
from tests.helpers import pseudonym_in
from tests.served import ServedRepository, stored_files

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


def assert_problem(response: Any, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["type"].startswith("https://slidebank.org/problems/")
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


def decoded(response: Any) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


def stored_reader(served: ServedRepository, slide_id: str, client: TestClient) -> Any:
    return open_slide(stored_files(served.settings, slide_id))


# Catalogue


def test_datasets_lists_each_with_its_slide_count(client: TestClient) -> None:
    body = client.get("/api/datasets").json()
    counts = {dataset["short_name"]: dataset["images"] for dataset in body}
    assert counts == {"demo": 1, "iiif": 1}
    demo = next(d for d in body if d["short_name"] == "demo")
    assert demo["licence"] == "CC0-1.0"


def test_one_dataset_has_counts_and_unknown_is_404(client: TestClient) -> None:
    body = client.get("/api/datasets/demo").json()
    assert (body["title"], body["images"], body["cases"]) == ("Slidebank demo", 1, 1)
    assert_problem(client.get("/api/datasets/nope"), 404, "nope")


def test_cases_of_a_dataset_and_one_case(client: TestClient, served: ServedRepository) -> None:
    page = client.get("/api/datasets/demo/cases").json()
    assert page["total"] == 1
    # the sidecar's case id DEMO-001, replaced by its keyed pseudonym
    pseudonym = pseudonym_in(served.settings, "case", "DEMO-001")
    assert page["items"][0]["pseudonym"] == pseudonym
    assert page["items"][0]["slides"] == [served.demo_id]
    assert client.get("/api/datasets/demo/cases/DEMO-001").status_code == 404
    case = client.get(f"/api/datasets/demo/cases/{pseudonym}").json()
    specimen = case["specimens"][0]
    assert (case["species"], specimen["anatomical_site"]) == ("Homo sapiens", "colon")
    assert specimen["observations"][0]["text"] == "Colonic glands with FHL2 expression"
    assert specimen["blocks"][0]["slides"][0]["images"] == [served.demo_id]
    assert_problem(client.get("/api/datasets/demo/cases/NOPE"), 404, "NOPE")
    assert_problem(client.get("/api/datasets/demo/cases?limit=0"), 422, "limit")
    # Beyond 64 bits SQLite's driver raised OverflowError (a 500); the deepest page is empty.
    huge = client.get("/api/datasets/demo/cases?offset=99999999999999999999")
    assert assert_problem(huge, 422, "offset")["errors"][0]["field"] == "offset"
    deepest = client.get(f"/api/datasets/demo/cases?offset={MAX_OFFSET}").json()
    assert deepest["items"] == [] and deepest["offset"] == MAX_OFFSET


def test_slides_filters_and_paginates(client: TestClient, served: ServedRepository) -> None:
    page = client.get("/api/slides").json()
    assert page["total"] == 2 and len(page["items"]) == 2
    assert client.get("/api/slides?stain=DAB").json()["items"][0]["id"] == served.demo_id
    assert client.get("/api/slides?site=colon&species=sapiens").json()["total"] == 1
    assert client.get("/api/slides?dataset=iiif").json()["items"][0]["id"] == served.grid_id
    assert client.get("/api/slides?vendor=nobody").json() == {
        "items": [],
        "total": 0,
        "limit": 100,
        "offset": 0,
    }
    first = client.get("/api/slides?limit=1").json()
    second = client.get("/api/slides?limit=1&offset=1").json()
    assert first["total"] == second["total"] == 2
    assert first["items"][0]["id"] != second["items"][0]["id"]
    assert client.get("/api/slides?mpp_min=0.4&mpp_max=0.6").json()["total"] == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=100000", "limit"), ("offset=-1", "offset"),
     ("offset=99999999999999999999", "offset"), (f"offset={MAX_OFFSET + 1}", "offset"),
     ("mpp_min=abc", "mpp_min"), ("mpp_max=-1", "mpp_max")],
)  # fmt: skip
def test_bad_slide_filters_name_the_field(client: TestClient, query: str, field: str) -> None:
    body = assert_problem(client.get(f"/api/slides?{query}"), 422, field)
    assert body["errors"][0]["field"] == field


def test_slide_record_is_complete_and_unknown_is_404(
    client: TestClient, served: ServedRepository
) -> None:
    record = client.get(f"/api/slides/{served.demo_id}").json()
    assert record["id"] == served.demo_id
    assert record["case"]["pseudonym"] == pseudonym_in(served.settings, "case", "DEMO-001")
    assert record["slide"]["staining"]["target"] == "FHL2"
    assert record["image"]["width"] == 8192 and record["image"]["vendor"] == "aperio"
    assert_problem(client.get("/api/slides/sb-doesnotexist"), 404, "sb-doesnotexist")


def test_the_source_files_checksum_is_for_stewards_only(
    client: TestClient, served: ServedRepository
) -> None:
    # The scanner file's SHA-256 would let anyone holding the identified original find its
    # de-identified slide: not in what readers get, nor in any entity tag.
    repository = open_repository(served.settings)
    try:
        steward_view = browsing.show_slide(repository, COMMAND_LINE, served.demo_id)["image"]
    finally:
        repository.close()
    source = steward_view["checksum"]
    assert len(source) == 64 and steward_view["storage_key"]
    answers = [
        client.get(f"/api/slides/{served.demo_id}"),
        client.get(f"/slides/{served.demo_id}"),
        client.get(f"/api/slides/{served.demo_id}/thumbnail"),
        client.get(f"/deepzoom/{served.demo_id}.dzi"),
        client.get(f"/deepzoom/{served.demo_id}_files/8/0_0.jpeg"),
        client.get(f"/iiif/3/{served.demo_id}/full/64,/0/default.jpg"),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.url
        assert source[:16] not in answer.headers.get("etag", ""), answer.url
        if answer.headers["content-type"].startswith(("application/json", "text/")):
            assert source[:16] not in answer.text, answer.url
    record = answers[0].json()["image"]
    assert "checksum" not in record and "storage_key" not in record
    # The entity tags still name the content: the same tile, the same tag.
    again = client.get(f"/deepzoom/{served.demo_id}_files/8/0_0.jpeg")
    assert again.headers["etag"] == answers[4].headers["etag"]


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/slides",
        "/api/slides/{slide_id}/region",
        "/deepzoom/{slide_id}_files/{level}/{column}_{row}.{extension}",
        "/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality_format}",
    ):
        assert path in paths
    page = client.get("/docs").text
    # Swagger UI comes from this server (npm), never from a CDN.
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in page
    assert "cdn" not in page
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200


# Pictures


def test_thumbnail_is_the_stored_jpeg_with_cache_headers(
    client: TestClient, served: ServedRepository
) -> None:
    response = client.get(f"/api/slides/{served.demo_id}/thumbnail")
    assert response.headers["content-type"] == "image/jpeg"
    assert "immutable" in response.headers["cache-control"]
    assert max(decoded(response).size) == served.settings.thumbnail_size
    etag = response.headers["etag"]
    again = client.get(f"/api/slides/{served.demo_id}/thumbnail", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert_problem(client.get("/api/slides/sb-nope/thumbnail"), 404)


def test_associated_images_and_unknown_names(client: TestClient, served: ServedRepository) -> None:
    names = [
        image["name"]
        for image in client.get(f"/api/slides/{served.demo_id}").json()["image"][
            "associated_images"
        ]
    ]
    assert names == ["thumbnail"]  # the label and the macro are not kept
    for name in names:
        response = client.get(f"/api/slides/{served.demo_id}/associated/{name}?format=png")
        assert response.status_code == 200
        assert decoded(response).format == "PNG"
    assert_problem(client.get(f"/api/slides/{served.demo_id}/associated/nothing"), 404, "nothing")
    assert_problem(
        client.get(f"/api/slides/{served.demo_id}/associated/thumbnail?format=bmp"), 422, "format"
    )


def test_region_at_level_zero_equals_the_reader(
    client: TestClient, served: ServedRepository
) -> None:
    response = client.get(f"/api/slides/{served.demo_id}/region?x=1000&y=800&width=300&height=200")
    assert response.headers["content-type"] == "image/png"
    got = np.asarray(decoded(response).convert("RGB"))
    with stored_reader(served, served.demo_id, client) as reader:
        expected = np.asarray(reader.read_region(Point(1000, 800), 0, Size(300, 200)))
    assert got.shape == (200, 300, 3)
    assert np.array_equal(got, expected)


def test_region_by_mpp_level_and_downsample(client: TestClient, served: ServedRepository) -> None:
    base = f"/api/slides/{served.demo_id}/region?x=0&y=0&width=256&height=128"
    by_mpp = decoded(client.get(f"{base}&mpp=1.996"))  # 4 × the slide's 0.499 µm
    by_level = decoded(client.get(f"{base}&level=1"))
    by_downsample = decoded(client.get(f"{base}&downsample=4&format=jpeg&quality=gray"))
    assert by_mpp.size == by_level.size == by_downsample.size == (256, 128)
    difference = np.abs(np.asarray(by_mpp, dtype=int) - np.asarray(by_level, dtype=int)).mean()
    assert difference < 2
    assert by_downsample.mode == "L" and by_downsample.format == "JPEG"


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("x=0&y=0&width=10&height=10&level=9", 400, ("level",)),
        ("x=0&y=0&width=10&height=10&level=0&mpp=1", 400, ("level", "mpp")),
        ("x=999999&y=0&width=10&height=10", 400, ("outside",)),
        ("x=0&y=0&width=20000&height=20000", 400, ("limit",)),
        ("x=0&y=0&width=0&height=10", 422, ("width",)),
        ("x=0&y=0&width=10&height=10&mpp=0", 422, ("mpp",)),
        ("x=0&y=0&width=10&height=10&format=gif", 422, ("format",)),
        ("y=0&width=10&height=10", 422, ("x",)),
    ],
)
def test_bad_regions_are_clear_4xx(
    client: TestClient, served: ServedRepository, query: str, status: int, words: tuple[str, ...]
) -> None:
    assert_problem(client.get(f"/api/slides/{served.demo_id}/region?{query}"), status, *words)


def test_region_partly_outside_is_white_there(client: TestClient, served: ServedRepository) -> None:
    response = client.get(f"/api/slides/{served.demo_id}/region?x=8092&y=0&width=200&height=50")
    pixels = np.asarray(decoded(response).convert("RGB"))
    assert (pixels[:, 100:] == 255).all()


def test_unknown_routes_are_problem_documents(client: TestClient) -> None:
    assert_problem(client.get("/api/nothing-here"), 404)
    body = client.post("/api/slides").json()
    assert body["status"] == 405


def test_head_gives_headers_without_body(client: TestClient, served: ServedRepository) -> None:
    url = f"/api/slides/{served.demo_id}/thumbnail"
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == client.get(url).headers["etag"]


def test_api_runs_on_postgresql_too(tmp_path: Path, database_url: str, generated_svs: Path) -> None:
    settings = Settings(home=tmp_path / "repo", database_url=database_url)
    repository = open_repository(settings)
    try:
        ingesting.ingest_paths(repository, [generated_svs], "pg", None)
    finally:
        repository.close()
    with TestClient(create_app(settings)) as client:
        page = client.get("/api/slides?dataset=pg").json()
        assert page["total"] == 1
        slide_id = page["items"][0]["id"]
        assert client.get(f"/deepzoom/{slide_id}.dzi").status_code == 200
        tile = client.get(f"/deepzoom/{slide_id}_files/8/0_0.jpeg")
        assert decoded(tile).size[0] > 0


def test_the_api_and_the_slide_browser_read_filters_alike() -> None:
    from slidebank.catalog.queries import TEXT_FILTER_FIELDS
    from slidebank.web.api import SlideFilters
    from slidebank.web.pages import PAGE_SIZE, parse_slide_query

    assert set(TEXT_FILTER_FIELDS) <= set(SlideFilters.model_fields)
    for name in TEXT_FILTER_FIELDS:
        params = {name: "x", "dataset": "demo", "mpp_min": "0.2", "limit": str(PAGE_SIZE)}
        from_page = parse_slide_query(params).where
        query = {name: "x", "dataset": "demo", "mpp_min": "0.2", "limit": str(PAGE_SIZE)}
        from_api = SlideFilters.model_validate(query)
        assert from_page == from_api.slide_filter(), name
        assert getattr(from_page, TEXT_FILTER_FIELDS[name]) == "x"


def test_openapi_documents_bearer_tokens(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert {"bearer": []} in schema["security"] and {} in schema["security"]


def test_the_deidentification_report_names_fields_not_values(
    client: TestClient, served: ServedRepository
) -> None:
    report = client.get(f"/api/slides/{served.demo_id}/deidentification").json()
    assert report["check"]["passed"] is True and report["check"]["findings"] == []
    assert set(report["images_left_out"]) == {"label", "overview"}
    assert report["pseudonyms"]["case"] == pseudonym_in(served.settings, "case", "DEMO-001")
    assert "DEMO-001" not in json.dumps(report)
    assert_problem(
        client.get("/api/slides/sb-doesnotexist/deidentification"), 404, "sb-doesnotexist"
    )
