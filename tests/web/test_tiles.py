"""Tile routes: DeepZoom and IIIF over HTTP — stored bytes passed through, caching headers,
conditional and HEAD requests, and clear 4xx answers to bad requests."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from defusedxml import ElementTree
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from slidebank.web.app import create_app
from tests.served import ServedRepository
from tests.web.test_api import assert_problem, stored_reader


def picture(response: Any) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def descriptor(client: TestClient, slide_id: str) -> tuple[int, int, int]:
    root = ElementTree.fromstring(client.get(f"/deepzoom/{slide_id}.dzi").content)
    size = root[0]
    return int(root.attrib["TileSize"]), int(size.attrib["Width"]), int(size.attrib["Height"])


def top_level(width: int, height: int) -> int:
    return int(np.ceil(np.log2(max(width, height))))


def test_dzi_describes_the_slide(client: TestClient, served: ServedRepository) -> None:
    response = client.get(f"/deepzoom/{served.demo_id}.dzi")
    assert response.headers["content-type"].startswith("application/xml")
    assert "immutable" in response.headers["cache-control"]
    assert descriptor(client, served.demo_id) == (256, 8192, 6144)


def test_a_stored_tile_is_passed_through_byte_for_byte(
    client: TestClient, served: ServedRepository
) -> None:
    _, width, height = descriptor(client, served.demo_id)
    top = top_level(width, height)
    response = client.get(f"/deepzoom/{served.demo_id}_files/{top}/3_2.jpeg")
    assert response.headers["content-type"] == "image/jpeg"
    with stored_reader(served, served.demo_id, client) as reader:
        raw = reader.read_raw_tile(0, 3, 2)
        expected = np.asarray(reader.read_tile(0, 3, 2))
    assert raw is not None and response.content == raw.data
    assert np.array_equal(np.asarray(picture(response)), expected)
    # The level 4× smaller is the slide's second stored level: passed through as well.
    quarter = client.get(f"/deepzoom/{served.demo_id}_files/{top - 2}/1_1.jpeg")
    with stored_reader(served, served.demo_id, client) as reader:
        raw = reader.read_raw_tile(1, 1, 1)
    assert raw is not None and quarter.content == raw.data


def test_the_tile_routes_keep_their_names(client: TestClient, served: ServedRepository) -> None:
    # They are bound to the application's state with a partial; url_for still finds them
    # by their own names.
    app = client.app
    assert isinstance(app, FastAPI)
    slide = served.demo_id
    dz = app.url_path_for(
        "deepzoom_tile", slide_id=slide, level=3, column=0, row=0, extension="png"
    )
    assert dz == f"/deepzoom/{slide}_files/3/0_0.png"
    iiif = app.url_path_for(
        "iiif_image",
        slide_id=slide,
        region="full",
        size="max",
        rotation="0",
        quality_format="gray.jpg",
    )
    assert iiif == f"/iiif/3/{slide}/full/max/0/gray.jpg"
    assert client.get(dz).headers["content-type"] == "image/png"
    assert client.get(iiif).headers["content-type"] == "image/jpeg"


def test_every_level_serves_tiles_of_the_right_size(
    client: TestClient, served: ServedRepository
) -> None:
    tile, width, height = descriptor(client, served.demo_id)
    top = top_level(width, height)
    for level in range(top, -1, -1):
        scale = 2 ** (top - level)
        level_w, level_h = -(-width // scale), -(-height // scale)
        last_column, last_row = (level_w - 1) // tile, (level_h - 1) // tile
        for extension in ("jpeg", "png"):
            image = picture(
                client.get(
                    f"/deepzoom/{served.demo_id}_files/{level}/{last_column}_{last_row}.{extension}"
                )
            )
            assert image.size == (level_w - last_column * tile, level_h - last_row * tile)
            assert image.format == extension.upper()


def test_tile_is_not_blank_and_matches_neighbouring_levels(
    client: TestClient, served: ServedRepository
) -> None:
    _, width, height = descriptor(client, served.demo_id)
    top = top_level(width, height)
    fine = np.asarray(picture(client.get(f"/deepzoom/{served.demo_id}_files/{top}/0_0.png")))
    half = np.asarray(picture(client.get(f"/deepzoom/{served.demo_id}_files/{top - 1}/0_0.png")))
    assert fine.std() > 5
    shrunk = np.asarray(Image.fromarray(fine).reduce(2))
    assert np.abs(half[:128, :128].astype(int) - shrunk.astype(int)).mean() < 6


def test_conditional_and_head_requests(client: TestClient, served: ServedRepository) -> None:
    url = f"/deepzoom/{served.demo_id}_files/10/0_0.jpeg"
    first = client.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('"') and "immutable" in first.headers["cache-control"]
    again = client.get(url, headers={"If-None-Match": f'"other", {etag}'})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(first.content))
    png = client.get(url.replace(".jpeg", ".png"))
    assert png.headers["etag"] != etag


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/deepzoom/sb-nothing.dzi", 404, ("sb-nothing",)),
        ("/deepzoom/sb-nothing_files/0/0_0.jpeg", 404, ("sb-nothing",)),
        ("/deepzoom/{id}_files/99/0_0.jpeg", 404, ("level",)),
        ("/deepzoom/{id}_files/13/999_0.jpeg", 404, ("999",)),
        ("/deepzoom/{id}_files/13/0_99999999999999999999.jpeg", 404, ()),
        ("/deepzoom/{id}_files/13/0_0.gif", 400, ("gif",)),
        ("/deepzoom/{id}_files/-1/0_0.jpeg", 404, ()),
        ("/deepzoom/{id}_files/x/0_0.jpeg", 404, ()),
    ],
)
def test_bad_tile_requests_are_4xx(
    client: TestClient, served: ServedRepository, path: str, status: int, words: tuple[str, ...]
) -> None:
    assert_problem(client.get(path.format(id=served.demo_id)), status, *words)


# IIIF


def test_info_json_and_redirect(client: TestClient, served: ServedRepository) -> None:
    base = f"/iiif/3/{served.demo_id}"
    info = client.get(f"{base}/info.json")
    assert info.headers["access-control-allow-origin"] == "*"
    assert info.headers["content-type"] == "application/json"
    document = info.json()
    assert document["id"] == f"http://testserver{base}"
    assert (document["width"], document["height"]) == (8192, 6144)
    linked = client.get(f"{base}/info.json", headers={"Accept": "application/ld+json"})
    assert linked.headers["content-type"].startswith("application/ld+json")
    redirect = client.get(base, follow_redirects=False)
    assert redirect.status_code == 303
    assert redirect.headers["location"].endswith(f"{base}/info.json")


def test_iiif_tile_is_passed_through_and_canonical(
    client: TestClient, served: ServedRepository
) -> None:
    response = client.get(f"/iiif/3/{served.demo_id}/256,512,256,256/256,/0/default.jpg")
    with stored_reader(served, served.demo_id, client) as reader:
        raw = reader.read_raw_tile(0, 1, 2)
    assert raw is not None and response.content == raw.data
    assert 'rel="canonical"' in response.headers["link"]
    assert "256,512,256,256/max/0/default.jpg" in response.headers["link"]


def test_iiif_rotation_mirroring_and_quality(client: TestClient, served: ServedRepository) -> None:
    base = f"/iiif/3/{served.demo_id}/0,0,400,200"
    plain = np.asarray(picture(client.get(f"{base}/max/0/default.png")))
    rotated = np.asarray(picture(client.get(f"{base}/max/90/default.png")))
    mirrored = np.asarray(picture(client.get(f"{base}/max/!0/default.png")))
    assert plain.shape == (200, 400, 3) and rotated.shape == (400, 200, 3)
    assert np.array_equal(rotated, np.rot90(plain, -1))
    assert np.array_equal(mirrored, plain[:, ::-1])
    gray = picture(client.get(f"{base}/200,/0/gray.webp"))
    assert gray.format == "WEBP" and gray.size == (200, 100)


@pytest.mark.parametrize(
    ("tail", "words"),
    [
        ("full/max/45/default.jpg", ("rotation",)),
        ("full/max/0/sepia.jpg", ("quality",)),
        ("full/max/0/default.gif", ("format",)),
        ("full/20000,/0/default.jpg", ("^",)),
        ("full/^20000,/0/default.jpg", ("limits",)),
        ("99999,0,10,10/max/0/default.jpg", ("outside",)),
        ("0,0,0,10/max/0/default.jpg", ("greater than 0",)),
        ("full/0,/0/default.jpg", ("empty",)),
    ],
)
def test_bad_iiif_requests_are_400(
    client: TestClient, served: ServedRepository, tail: str, words: tuple[str, ...]
) -> None:
    assert_problem(client.get(f"/iiif/3/{served.demo_id}/{tail}"), 400, *words)


def test_whole_slide_at_max_fits_the_limits(client: TestClient, served: ServedRepository) -> None:
    image = picture(client.get(f"/iiif/3/{served.demo_id}/full/max/0/default.jpg"))
    width, height = image.size
    # 8192 × 6144 is 50 Mpx: max shrinks it to the service's 25 Mpx, keeping the shape.
    assert width * height <= 25_000_000 and width * height > 24_000_000
    assert abs(width / height - 8192 / 6144) < 0.01


def test_a_different_encoder_quality_changes_the_entity_tag(
    client: TestClient, served: ServedRepository
) -> None:
    url = f"/deepzoom/{served.demo_id}_files/12/0_0.jpeg"  # rendered: re-encoded at the quality
    lower = served.settings.model_copy(update={"jpeg_quality": 60})
    with TestClient(create_app(lower)) as other:
        first, second = client.get(url), other.get(url)
    assert first.headers["etag"] != second.headers["etag"]
    assert len(second.content) < len(first.content)
