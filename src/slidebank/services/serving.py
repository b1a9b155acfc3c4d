"""Use cases of serving pixels: DeepZoom and IIIF tiles, regions, associated images.

Every answer is immutable (what is stored never changes but by adding files), so each carries
an entity tag made from the stored files' digest and the request; the web layer answers conditional
requests from the tag alone. Work is split in two: ``stored_*`` functions only pass stored
bytes through (no decoding, safe to call on the event loop) and return None when the
request needs rendering, which the ``rendered_*`` functions then do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from slidebank.config import Settings
from slidebank.errors import InvalidInput
from slidebank.geometry import Point, Size
from slidebank.services.open_slides import ServedSlide
from slidebank.tiles import iiif
from slidebank.tiles.encoding import MEDIA_TYPES, ImageFormat, Quality, encode
from slidebank.tiles.rendering import Region, match_stored_tile, read_stored_tile, render

# Changes whenever rendering changes what bytes a request gives, so old tags stop matching.
RENDER_VERSION = "1"


@dataclass(frozen=True)
class Picture:
    data: bytes
    media_type: str


@dataclass(frozen=True)
class ServingOptions:
    jpeg_quality: int
    limits: iiif.Limits

    @classmethod
    def from_settings(cls, settings: Settings) -> ServingOptions:
        return cls(
            jpeg_quality=settings.jpeg_quality,
            limits=iiif.Limits(
                settings.max_output_side, settings.max_output_side, settings.max_output_pixels
            ),
        )


def entity_tag(slide: ServedSlide, options: ServingOptions, *request: object) -> str:
    """A strong ETag for one rendering of one slide's content (with the encoder's quality,
    which changes the bytes, and the number of stored levels: levels added later by
    ``slidebank pyramid`` change what some regions are rendered from)."""
    detail = "/".join(str(part) for part in request)
    digest = hashlib.blake2b(detail.encode(), digest_size=8).hexdigest()
    return f'"{slide.content_tag}-{_version(slide, options)}-{digest}"'


def _version(slide: ServedSlide, options: ServingOptions) -> str:
    return f"{RENDER_VERSION}q{options.jpeg_quality}p{slide.stored_levels}"


# DeepZoom


def dzi(slide: ServedSlide, fmt: ImageFormat) -> str:
    return slide.deepzoom.dzi(fmt)


def deepzoom_tag(
    slide: ServedSlide, options: ServingOptions, level: int, column: int, row: int, fmt: ImageFormat
) -> str:
    """The entity tag of a DeepZoom tile, without hashing (this is the hot path)."""
    return f'"{slide.content_tag}-{_version(slide, options)}-dz{level}-{column}-{row}-{fmt}"'


def stored_deepzoom_tile(slide: ServedSlide, where: tuple[int, int, int]) -> Picture | None:
    """The stored bytes of the tile ``where`` (``DeepZoom.stored_tile``: a whole, aligned
    stored tile) when they are a JPEG stream; else None."""
    tile = slide.reader.read_raw_tile(*where)
    if tile is None or tile.media_type != "image/jpeg":
        return None
    return Picture(tile.data, tile.media_type)


def rendered_deepzoom_tile(
    slide: ServedSlide,
    level: int,
    column: int,
    row: int,
    fmt: ImageFormat,
    options: ServingOptions,
) -> Picture:
    """The tile decoded, assembled and encoded: for what ``stored_deepzoom_tile`` declined."""
    pixels = render(slide.reader, slide.deepzoom.tile_region(level, column, row))
    return Picture(encode(pixels, fmt, options.jpeg_quality), MEDIA_TYPES[fmt])


# IIIF Image API


def iiif_info(slide: ServedSlide, base_id: str, options: ServingOptions) -> dict[str, Any]:
    return iiif.info_json(base_id, slide.reader.info, slide.deepzoom.tile_size, options.limits)


def iiif_request(
    slide: ServedSlide,
    region: str,
    size: str,
    rotation: str,
    quality_format: str,
    options: ServingOptions,
) -> iiif.ImageRequest:
    return iiif.parse_request(
        slide.reader.info.dimensions, options.limits, region, size, rotation, quality_format
    )


def stored_iiif_image(slide: ServedSlide, request: iiif.ImageRequest) -> Picture | None:
    """A IIIF tile request that is exactly a stored JPEG tile, passed through; else None."""
    plain = request.rotation == 0 and not request.mirror
    if not plain or request.quality not in ("default", "color") or request.format != "jpeg":
        return None
    match = match_stored_tile(slide.reader, request.render_region())
    if match is None:
        return None
    tile = read_stored_tile(slide.reader, match)
    return None if tile is None else Picture(tile.data, tile.media_type)


def rendered_iiif_image(
    slide: ServedSlide, request: iiif.ImageRequest, options: ServingOptions
) -> Picture:
    """The image rendered: for what ``stored_iiif_image`` declined."""
    pixels = iiif.finish(render(slide.reader, request.render_region()), request)
    return Picture(
        encode(pixels, request.format, options.jpeg_quality), MEDIA_TYPES[request.format]
    )


# Regions for scripts and algorithms


@dataclass(frozen=True)
class RegionQuery:
    """``width``×``height`` output pixels from level-0 (``x``, ``y``), at a level, a
    resolution in µm per pixel, or a downsample (exactly one)."""

    x: int
    y: int
    width: int
    height: int
    level: int | None = None
    mpp: float | None = None
    downsample: float | None = None
    format: ImageFormat = "png"
    quality: Quality = "color"


def region_scale(slide: ServedSlide, query: RegionQuery) -> float:
    """Level-0 pixels per output pixel, from whichever of level, mpp or downsample is given."""
    info = slide.reader.info
    given = [name for name in ("level", "mpp", "downsample") if getattr(query, name) is not None]
    if len(given) > 1:
        raise InvalidInput(f"give one of level, mpp or downsample, not {' and '.join(given)}")
    if query.level is not None:
        if not 0 <= query.level < len(info.levels):
            raise InvalidInput(
                f"level: the slide has levels 0 to {len(info.levels) - 1}, not {query.level}"
            )
        return info.levels[query.level].downsample
    if query.mpp is not None:
        if info.mpp is None:
            raise InvalidInput("mpp: this slide records no resolution; ask by level instead")
        if query.mpp <= 0:
            raise InvalidInput(f"mpp must be positive, got {query.mpp}")
        return query.mpp / info.mpp.x
    if query.downsample is not None:
        if query.downsample <= 0:
            raise InvalidInput(f"downsample must be positive, got {query.downsample}")
        return query.downsample
    return 1.0


def region(slide: ServedSlide, query: RegionQuery, options: ServingOptions) -> Picture:
    scale = region_scale(slide, query)
    full = slide.reader.info.dimensions
    limits = options.limits
    if query.width < 1 or query.height < 1:
        raise InvalidInput(f"width and height must be at least 1, got {query.width}x{query.height}")
    if (
        query.width > limits.max_width
        or query.height > limits.max_height
        or (query.width * query.height > limits.max_area)
    ):
        raise InvalidInput(
            f"a region of {query.width}x{query.height} px exceeds the limit of "
            f"{limits.max_width}x{limits.max_height} and {limits.max_area:,} px; read it in parts"
        )
    x1, y1 = query.x + query.width * scale, query.y + query.height * scale
    if query.x >= full.width or query.y >= full.height or x1 <= 0 or y1 <= 0:
        raise InvalidInput(
            f"region at ({query.x}, {query.y}) of {query.width}x{query.height} px at scale "
            f"{scale:g} lies outside the slide ({full.width}x{full.height} px)"
        )
    pixels = render(
        slide.reader, Region(Point(query.x, query.y), Size(query.width, query.height), scale)
    )
    data = encode(pixels, query.format, options.jpeg_quality, query.quality)
    return Picture(data, MEDIA_TYPES[query.format])


def associated_image(
    slide: ServedSlide, name: str, fmt: ImageFormat, options: ServingOptions
) -> Picture:
    image = slide.reader.associated_image(name)
    return Picture(encode(image, fmt, options.jpeg_quality), MEDIA_TYPES[fmt])
