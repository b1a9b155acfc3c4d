"""IIIF Image API 3.0 at compliance level 2: parsing a request and describing an image.

https://iiif.io/api/image/3.0/ — ``{region}/{size}/{rotation}/{quality}.{format}``. Parsing
is strict: anything the specification does not allow is an ``InvalidInput`` naming the
parameter, which the web layer answers with 400.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from slidebank.errors import InvalidInput
from slidebank.geometry import Point, Size
from slidebank.slides.model import SlideInfo
from slidebank.tiles.encoding import ImageFormat, luma
from slidebank.tiles.rendering import Region

IiifQuality = Literal["default", "color", "gray", "bitonal"]
CONTEXT = "http://iiif.io/api/image/3/context.json"
PROFILE = "http://iiif.io/api/image/3/level2.json"
FORMATS: dict[str, ImageFormat] = {"jpg": "jpeg", "png": "png", "webp": "webp"}
QUALITIES: tuple[IiifQuality, ...] = ("default", "color", "gray", "bitonal")
EXTRA_FEATURES = (
    "baseUriRedirect",
    "canonicalLinkHeader",
    "cors",
    "jsonldMediaType",
    "mirroring",
    "profileLinkHeader",
    "regionByPct",
    "regionByPx",
    "regionSquare",
    "rotationBy90s",
    "sizeByConfinedWh",
    "sizeByH",
    "sizeByPct",
    "sizeByW",
    "sizeByWh",
    "sizeUpscaling",
)
_NUMBER = r"\d+(?:\.\d+)?"
_PIXELS = re.compile(r"^(\d+),(\d+),(\d+),(\d+)$")
_PERCENT = re.compile(rf"^pct:({_NUMBER}),({_NUMBER}),({_NUMBER}),({_NUMBER})$")
_SIZE_WH = re.compile(r"^(!)?(\d+)?,(\d+)?$")
_SIZE_PCT = re.compile(rf"^pct:({_NUMBER})$")
_ROTATION = re.compile(r"^(!)?(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Limits:
    """The largest output the service renders (declared in info.json)."""

    max_width: int
    max_height: int
    max_area: int


@dataclass(frozen=True)
class Box:
    """A region of the full image in level-0 pixels."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class ImageRequest:
    region: Box
    size: Size
    rotation: int
    mirror: bool
    quality: IiifQuality
    format: ImageFormat

    def render_region(self) -> Region:
        """What to read: the region at the requested size (before rotation)."""
        return Region(
            Point(self.region.x, self.region.y),
            self.size,
            self.region.width / self.size.width,
            self.region.height / self.size.height,
        )

    def canonical(self, image: Size) -> str:
        """The canonical path of this request (section 4.7 of the specification)."""
        box = self.region
        full = box == Box(0, 0, image.width, image.height)
        region = "full" if full else f"{box.x},{box.y},{box.width},{box.height}"
        size = (
            "max"
            if self.size == Size(box.width, box.height)
            else f"{self.size.width},{self.size.height}"
        )
        if self.size.width > box.width or self.size.height > box.height:
            size = "^" + size
        rotation = ("!" if self.mirror else "") + str(self.rotation)
        quality = "default" if self.quality == "color" else self.quality
        extension = next(name for name, fmt in FORMATS.items() if fmt == self.format)
        return f"{region}/{size}/{rotation}/{quality}.{extension}"


def parse_request(
    image: Size, limits: Limits, region: str, size: str, rotation: str, quality_format: str
) -> ImageRequest:
    box = parse_region(region, image)
    out = parse_size(size, box, limits)
    degrees, mirror = parse_rotation(rotation)
    quality, fmt = parse_quality_format(quality_format)
    return ImageRequest(box, out, degrees, mirror, quality, fmt)


def parse_region(text: str, image: Size) -> Box:
    """``full``, ``square``, ``x,y,w,h`` or ``pct:x,y,w,h``, cut to the image."""
    if text == "full":
        return Box(0, 0, image.width, image.height)
    if text == "square":
        side = min(image)
        return Box((image.width - side) // 2, (image.height - side) // 2, side, side)
    if match := _PIXELS.match(text):
        x, y, w, h = (int(value) for value in match.groups())
    elif match := _PERCENT.match(text):
        px, py, pw, ph = (float(value) for value in match.groups())
        x, y = round(px * image.width / 100), round(py * image.height / 100)
        w, h = round(pw * image.width / 100), round(ph * image.height / 100)
    else:
        raise InvalidInput(
            f"region {text!r}: use full, square, x,y,w,h or pct:x,y,w,h (IIIF Image API 3.0)"
        )
    if w <= 0 or h <= 0:
        raise InvalidInput(f"region {text!r}: width and height must be greater than 0")
    if x >= image.width or y >= image.height:
        raise InvalidInput(
            f"region {text!r} lies outside the image of {image.width}x{image.height} px"
        )
    return Box(x, y, min(w, image.width - x), min(h, image.height - y))


def parse_size(text: str, region: Box, limits: Limits) -> Size:
    """``max``, ``w,``, ``,h``, ``pct:n``, ``w,h``, ``!w,h``, each optionally with ``^``."""
    upscale = text.startswith("^")
    body = text[1:] if upscale else text
    rw, rh = region.width, region.height
    if body == "max":
        scale = min(
            limits.max_width / rw, limits.max_height / rh, math.sqrt(limits.max_area / (rw * rh))
        )
        if not upscale:
            scale = min(scale, 1.0)
        size = Size(max(1, math.floor(rw * scale)), max(1, math.floor(rh * scale)))
        return size
    if match := _SIZE_PCT.match(body):
        percent = float(match.group(1))
        size = Size(round(rw * percent / 100), round(rh * percent / 100))
    elif (match := _SIZE_WH.match(body)) and (match.group(2) or match.group(3)):
        confined, w_text, h_text = match.groups()
        if confined:
            if not (w_text and h_text):
                raise InvalidInput(f"size {text!r}: !w,h needs both a width and a height")
            scale = min(int(w_text) / rw, int(h_text) / rh)
            size = Size(round(rw * scale), round(rh * scale))
        elif w_text and h_text:
            size = Size(int(w_text), int(h_text))
        elif w_text:
            size = Size(int(w_text), round(rh * int(w_text) / rw))
        else:
            size = Size(round(rw * int(h_text or 0) / rh), int(h_text or 0))
    else:
        raise InvalidInput(
            f"size {text!r}: use max, w,, ,h, pct:n, w,h or !w,h, with ^ to allow upscaling"
        )
    if size.width < 1 or size.height < 1:
        raise InvalidInput(f"size {text!r} gives an empty image ({size.width}x{size.height})")
    if not upscale and (size.width > rw or size.height > rh):
        raise InvalidInput(
            f"size {text!r} is larger than the region ({rw}x{rh}); prefix it with ^ to upscale"
        )
    if (
        size.width > limits.max_width
        or size.height > limits.max_height
        or size.area > limits.max_area
    ):
        raise InvalidInput(
            f"size {text!r} ({size.width}x{size.height}) exceeds the service's limits "
            f"({limits.max_width}x{limits.max_height}, {limits.max_area:,} px)"
        )
    return size


def parse_rotation(text: str) -> tuple[int, bool]:
    """``0``, ``90``, ``180`` or ``270``, with ``!`` in front to mirror first."""
    match = _ROTATION.match(text)
    if not match:
        raise InvalidInput(f"rotation {text!r}: use 0, 90, 180 or 270, optionally after '!'")
    degrees = float(match.group(2))
    if degrees > 360:
        raise InvalidInput(f"rotation {text!r}: must be between 0 and 360")
    if degrees % 90:
        raise InvalidInput(f"rotation {text!r}: only multiples of 90 degrees are supported")
    return int(degrees) % 360, match.group(1) == "!"


def parse_quality_format(text: str) -> tuple[IiifQuality, ImageFormat]:
    quality, dot, extension = text.rpartition(".")
    if not dot:
        raise InvalidInput(f"{text!r}: expected quality.format, for example default.jpg")
    if quality not in QUALITIES:
        raise InvalidInput(f"quality {quality!r}: use one of {', '.join(QUALITIES)}")
    if extension not in FORMATS:
        raise InvalidInput(f"format {extension!r}: use one of {', '.join(FORMATS)}")
    return quality, FORMATS[extension]  # type: ignore[return-value]


def finish(pixels: np.ndarray, request: ImageRequest) -> np.ndarray:
    """Mirror, rotate (clockwise) and apply the quality, in the order the specification gives."""
    if request.mirror:
        pixels = pixels[:, ::-1]
    if request.rotation:
        pixels = np.rot90(pixels, k=-request.rotation // 90)
    if request.quality == "gray":
        pixels = luma(pixels)
    elif request.quality == "bitonal":
        pixels = np.where(luma(pixels) >= 128, 255, 0).astype(np.uint8)
    return np.ascontiguousarray(pixels)


def info_json(
    base_id: str, info: SlideInfo, tile_size: int, limits: Limits, thumbnail_sizes: int = 6
) -> dict[str, Any]:
    """The image information document (``info.json``)."""
    full = info.dimensions
    factors = [1]
    while max(full) / (factors[-1] * 2) >= tile_size / 2:
        factors.append(factors[-1] * 2)
    sizes: list[dict[str, int]] = []
    for factor in reversed(factors):
        width, height = math.ceil(full.width / factor), math.ceil(full.height / factor)
        if width * height <= limits.max_area and len(sizes) < thumbnail_sizes:
            sizes.append({"width": width, "height": height})
    return {
        "@context": CONTEXT,
        "id": base_id,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level2",
        "width": full.width,
        "height": full.height,
        "maxWidth": limits.max_width,
        "maxHeight": limits.max_height,
        "maxArea": limits.max_area,
        "sizes": sizes,
        "tiles": [{"width": tile_size, "height": tile_size, "scaleFactors": factors}],
        "preferredFormats": ["jpg"],
        "extraFormats": ["webp"],
        "extraQualities": ["color", "gray", "bitonal"],
        "extraFeatures": list(EXTRA_FEATURES),
    }
