"""IIIF Image API 3.0 request parsing, rotation and qualities, and info.json."""

from __future__ import annotations

import numpy as np
import pytest

from slidebank.errors import InvalidInput
from slidebank.geometry import Mpp, Size
from slidebank.slides.model import Level, SlideInfo
from slidebank.tiles import iiif
from slidebank.tiles.iiif import Box, Limits

IMAGE = Size(1000, 600)
LIMITS = Limits(4000, 4000, 4_000_000)


@pytest.mark.parametrize(
    ("text", "box"),
    [
        ("full", Box(0, 0, 1000, 600)),
        ("square", Box(200, 0, 600, 600)),
        ("10,20,30,40", Box(10, 20, 30, 40)),
        ("900,500,300,300", Box(900, 500, 100, 100)),  # cut to the image
        ("pct:10,50,20,25", Box(100, 300, 200, 150)),
        ("pct:0.5,0,99.5,100", Box(5, 0, 995, 600)),
    ],
)
def test_regions(text: str, box: Box) -> None:
    assert iiif.parse_region(text, IMAGE) == box


@pytest.mark.parametrize(
    "text", ["", "0,0,10", "0,0,0,10", "1000,0,10,10", "0,600,10,10", "-1,0,10,10", "pct:x", "all"]
)
def test_bad_regions(text: str) -> None:
    with pytest.raises(InvalidInput, match="region"):
        iiif.parse_region(text, IMAGE)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("max", Size(200, 100)),
        ("100,", Size(100, 50)),
        (",50", Size(100, 50)),
        ("pct:50", Size(100, 50)),
        ("20,90", Size(20, 90)),
        ("!100,100", Size(100, 50)),
        ("!100,10", Size(20, 10)),
        ("^400,", Size(400, 200)),
        ("^pct:150", Size(300, 150)),
        ("^!1000,1000", Size(1000, 500)),
        ("^max", Size(2828, 1414)),  # up to maxArea
    ],
)
def test_sizes(text: str, size: Size) -> None:
    assert iiif.parse_size(text, Box(0, 0, 200, 100), LIMITS) == size


def test_max_is_bounded_by_the_limits() -> None:
    huge = Box(0, 0, 100_000, 50_000)
    size = iiif.parse_size("max", huge, LIMITS)
    assert size.width <= 4000 and size.area <= 4_000_000
    assert abs(size.width / size.height - 2) < 0.01


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("300,", "^"),
        ("pct:101", "^"),
        ("!300,300", "^"),
        ("0,", "empty"),
        ("pct:0", "empty"),
        (",", "use max"),
        ("!100,", "both"),
        ("full", "use max"),
        ("^5000,", "limits"),
        ("abc", "use max"),
    ],
)
def test_bad_sizes(text: str, words: str) -> None:
    with pytest.raises(InvalidInput, match="size") as caught:
        iiif.parse_size(text, Box(0, 0, 200, 100), LIMITS)
    assert words in str(caught.value)


def test_rotation_quality_and_format() -> None:
    assert iiif.parse_rotation("0") == (0, False)
    assert iiif.parse_rotation("!270") == (270, True)
    assert iiif.parse_rotation("360") == (0, False)
    for bad in ("45", "abc", "-90", "720", ""):
        with pytest.raises(InvalidInput, match="rotation"):
            iiif.parse_rotation(bad)
    assert iiif.parse_quality_format("gray.png") == ("gray", "png")
    assert iiif.parse_quality_format("default.jpg") == ("default", "jpeg")
    with pytest.raises(InvalidInput, match="quality"):
        iiif.parse_quality_format("sepia.jpg")
    with pytest.raises(InvalidInput, match="format"):
        iiif.parse_quality_format("default.gif")
    with pytest.raises(InvalidInput, match=r"quality\.format"):
        iiif.parse_quality_format("default")


def request(rotation: int, mirror: bool, quality: iiif.IiifQuality) -> iiif.ImageRequest:
    return iiif.ImageRequest(Box(0, 0, 3, 2), Size(3, 2), rotation, mirror, quality, "png")


def test_mirroring_comes_before_clockwise_rotation() -> None:
    pixels = np.arange(6, dtype=np.uint8).reshape(2, 3, 1).repeat(3, axis=2)
    # 0 1 2 / 3 4 5
    assert iiif.finish(pixels, request(90, False, "color"))[:, :, 0].tolist() == [
        [3, 0],
        [4, 1],
        [5, 2],
    ]
    assert iiif.finish(pixels, request(0, True, "color"))[:, :, 0].tolist() == [
        [2, 1, 0],
        [5, 4, 3],
    ]
    assert iiif.finish(pixels, request(180, True, "color"))[:, :, 0].tolist() == [
        [3, 4, 5],
        [0, 1, 2],
    ]


def test_gray_and_bitonal() -> None:
    pixels = np.array([[[255, 0, 0], [10, 200, 30], [250, 250, 250]]], dtype=np.uint8)
    gray = iiif.finish(pixels, request(0, False, "gray"))
    assert gray.tolist() == [[76, 124, 250]]
    bitonal = iiif.finish(pixels, request(0, False, "bitonal"))
    assert bitonal.tolist() == [[0, 0, 255]]


def test_canonical_form() -> None:
    full = iiif.parse_request(IMAGE, LIMITS, "full", "max", "0", "color.jpg")
    assert full.canonical(IMAGE) == "full/max/0/default.jpg"
    part = iiif.parse_request(IMAGE, LIMITS, "pct:10,50,20,25", "100,", "!90", "gray.png")
    assert part.canonical(IMAGE) == "100,300,200,150/100,75/!90/gray.png"
    up = iiif.parse_request(IMAGE, LIMITS, "0,0,10,10", "^20,", "0", "default.webp")
    assert up.canonical(IMAGE) == "0,0,10,10/^20,20/0/default.webp"


def test_info_json_describes_levels_tiles_and_features() -> None:
    levels = (Level(Size(40_000, 30_000), 1.0, Size(240, 240)),)
    info = SlideInfo("aperio", "aperio", levels, Mpp(0.25, 0.25), 40)
    document = iiif.info_json("http://host/iiif/3/sb-x", info, 240, LIMITS)
    assert document["@context"] == iiif.CONTEXT
    assert (document["id"], document["type"], document["profile"]) == (
        "http://host/iiif/3/sb-x",
        "ImageService3",
        "level2",
    )
    assert (document["width"], document["height"]) == (40_000, 30_000)
    tiles = document["tiles"][0]
    assert tiles["width"] == 240
    assert tiles["scaleFactors"][0] == 1
    assert 40_000 / tiles["scaleFactors"][-1] <= 240  # the smallest level fits one tile
    assert all(s["width"] * s["height"] <= LIMITS.max_area for s in document["sizes"])
    assert "mirroring" in document["extraFeatures"]
    assert document["maxArea"] == LIMITS.max_area
