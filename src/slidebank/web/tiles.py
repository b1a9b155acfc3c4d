"""Tile routes: DeepZoom for OpenSeadragon and the IIIF Image API 3.0 (level 2).

These are the hot path of the service. A tile that is exactly a stored JPEG tile is read and
answered on the event loop (one ``pread`` from the page cache, no decoding); anything that
must be decoded, resampled or encoded goes to the thread pool.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from slidebank.services import serving
from slidebank.tiles import iiif
from slidebank.tiles.encoding import image_format
from slidebank.web.caching import (
    IMMUTABLE,
    PICTURE_RESPONSES,
    get_and_head,
    not_modified,
    picture_response,
)
from slidebank.web.state import AppState

router = APIRouter()
IIIF_HEADERS = {"Access-Control-Allow-Origin": "*"}


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.slidebank
    return state


@get_and_head(
    router,
    "/deepzoom/{slide_id}.dzi",
    tags=["deepzoom"],
    summary="DeepZoom descriptor of a slide",
    responses={200: {"content": {"application/xml": {}}}},
)
async def deepzoom_descriptor(request: Request, slide_id: str) -> Response:
    state = _state(request)
    slide = await state.acquire(slide_id)
    try:
        etag = serving.entity_tag(slide, "dzi")
        cached = not_modified(request, etag)
        if cached is not None:
            return cached
        return Response(
            serving.dzi(slide, "jpeg"),
            media_type="application/xml",
            headers={"ETag": etag, "Cache-Control": IMMUTABLE},
        )
    finally:
        state.slides.release(slide)


@get_and_head(
    router,
    "/deepzoom/{slide_id}_files/{level:int}/{column:int}_{row:int}.{extension}",
    tags=["deepzoom"],
    summary="One DeepZoom tile (jpeg, png or webp)",
    responses=PICTURE_RESPONSES,
)
async def deepzoom_tile(
    request: Request, slide_id: str, level: int, column: int, row: int, extension: str
) -> Response:
    fmt = image_format(extension)
    state = _state(request)
    slide = await state.acquire(slide_id)
    try:
        slide.deepzoom.tile_region(level, column, row)  # NotFound outside the pyramid
        etag = serving.entity_tag(slide, "dz", level, column, row, fmt)
        cached = not_modified(request, etag)
        if cached is not None:
            return cached
        picture = serving.stored_deepzoom_tile(slide, level, column, row, fmt)
        if picture is None:
            picture = await run_in_threadpool(
                serving.deepzoom_tile, slide, level, column, row, fmt, state.options
            )
        return picture_response(picture, etag)
    finally:
        state.slides.release(slide)


@router.get("/iiif/3/{slide_id}", tags=["iiif"], summary="Redirect to info.json")
async def iiif_base(request: Request, slide_id: str) -> RedirectResponse:
    return RedirectResponse(
        str(request.url_for("iiif_info", slide_id=slide_id)), 303, headers=IIIF_HEADERS
    )


@router.get(
    "/iiif/3/{slide_id}/info.json",
    tags=["iiif"],
    summary="IIIF image information",
    name="iiif_info",
)
async def iiif_info(request: Request, slide_id: str) -> Response:
    state = _state(request)
    slide = await state.acquire(slide_id)
    try:
        base = str(request.url_for("iiif_base", slide_id=slide_id))
        document = serving.iiif_info(slide, base, state.options)
    finally:
        state.slides.release(slide)
    # JSON-LD when the client asks for it, plain JSON otherwise (section 5.1).
    media_type = (
        f'application/ld+json;profile="{iiif.CONTEXT}"'
        if "application/ld+json" in request.headers.get("accept", "")
        else "application/json"
    )
    return JSONResponse(
        document,
        media_type=media_type,
        headers={**IIIF_HEADERS, "Link": f'<{iiif.PROFILE}>;rel="profile"'},
    )


@get_and_head(
    router,
    "/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality_format}",
    tags=["iiif"],
    summary="IIIF image request: region/size/rotation/quality.format",
    responses=PICTURE_RESPONSES,
)
async def iiif_image(
    request: Request, slide_id: str, region: str, size: str, rotation: str, quality_format: str
) -> Response:
    state = _state(request)
    slide = await state.acquire(slide_id)
    try:
        wanted = serving.iiif_request(slide, region, size, rotation, quality_format, state.options)
        base = str(request.url_for("iiif_base", slide_id=slide_id))
        canonical = wanted.canonical(slide.reader.info.dimensions)
        headers = {
            **IIIF_HEADERS,
            "Link": f'<{iiif.PROFILE}>;rel="profile", <{base}/{canonical}>;rel="canonical"',
        }
        etag = serving.entity_tag(slide, "iiif", canonical)
        cached = not_modified(request, etag, headers)
        if cached is not None:
            return cached
        picture = serving.stored_iiif_image(slide, wanted)
        if picture is None:
            picture = await run_in_threadpool(serving.iiif_image, slide, wanted, state.options)
        return picture_response(picture, etag, headers)
    finally:
        state.slides.release(slide)
