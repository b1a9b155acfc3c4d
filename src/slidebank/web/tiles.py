"""Tile routes: DeepZoom for OpenSeadragon and the IIIF Image API 3.0 (level 2).

These are the hot path of the service. A tile that is exactly a stored JPEG tile is read and
answered on the event loop (one ``pread`` from the page cache, no decoding). DeepZoom tiles
assembled from a few stored tiles decoded at 1/2..1/8 are rendered on the event loop too:
about a millisecond, and handing them to the thread pool cost more than it saved (measured
with benchmarks/tiles.py: 21% fewer tiles/s at concurrency 8, a p99 twice as long at 32).
Anything larger (PNG and WebP encoding, IIIF regions, levels read and resampled) goes to the
thread pool.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from slidebank.access.policy import Action
from slidebank.services import serving
from slidebank.tiles import iiif
from slidebank.tiles.encoding import image_format
from slidebank.web.caching import (
    cache_headers,
    get_and_head,
    not_modified,
    picture_response,
)
from slidebank.web.state import AppState, app_state

router = APIRouter()
IIIF_HEADERS = {"Access-Control-Allow-Origin": "*"}


@get_and_head(
    router,
    "/deepzoom/{slide_id}.dzi",
    tags=["deepzoom"],
    summary="DeepZoom descriptor of a slide",
    responses={200: {"content": {"application/xml": {}}}},
)
async def deepzoom_descriptor(request: Request, slide_id: str) -> Response:
    state = app_state(request)
    slide = await state.acquire(request, slide_id, Action.READ_METADATA)
    try:
        etag = serving.entity_tag(slide, state.options, "dzi")
        cached = not_modified(request, etag, cache_headers(request))
        if cached is not None:
            return cached
        return Response(
            serving.dzi(slide, "jpeg"),
            media_type="application/xml",
            headers={"ETag": etag, **cache_headers(request)},
        )
    finally:
        state.slides.release(slide)


async def deepzoom_tile(state: AppState, request: Request) -> Response:
    """``/deepzoom/{slide_id}_files/{level}/{column}_{row}.{extension}``"""
    params = request.path_params
    level, column, row = params["level"], params["column"], params["row"]
    fmt = image_format(params["extension"])
    slide = await state.acquire(request, params["slide_id"])
    try:
        where = slide.deepzoom.stored_tile(level, column, row) if fmt == "jpeg" else None
        if where is None:
            slide.deepzoom.tile_region(level, column, row)  # NotFound outside the pyramid
        etag = serving.deepzoom_tag(slide, state.options, level, column, row, fmt)
        headers = cache_headers(request)
        cached = not_modified(request, etag, headers)
        if cached is not None:
            return cached
        picture = serving.stored_deepzoom_tile(slide, where) if where is not None else None
        if picture is None and fmt == "jpeg" and level in slide.quick_levels:
            picture = serving.rendered_deepzoom_tile(slide, level, column, row, fmt, state.options)
        elif picture is None:
            picture = await run_in_threadpool(
                serving.rendered_deepzoom_tile, slide, level, column, row, fmt, state.options
            )
        return picture_response(picture, etag, headers)
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
    state = app_state(request)
    slide = await state.acquire(request, slide_id, Action.READ_METADATA)
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


async def iiif_image(state: AppState, request: Request) -> Response:
    """``/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality_format}``"""
    params = request.path_params
    slide_id = params["slide_id"]
    slide = await state.acquire(request, slide_id)
    try:
        wanted = serving.iiif_request(
            slide,
            params["region"],
            params["size"],
            params["rotation"],
            params["quality_format"],
            state.options,
        )
        base = str(request.url_for("iiif_base", slide_id=slide_id))
        canonical = wanted.canonical(slide.reader.info.dimensions)
        headers = {
            **IIIF_HEADERS,
            **cache_headers(request),
            "Link": f'<{iiif.PROFILE}>;rel="profile", <{base}/{canonical}>;rel="canonical"',
        }
        etag = serving.entity_tag(slide, state.options, "iiif", canonical)
        cached = not_modified(request, etag, headers)
        if cached is not None:
            return cached
        picture = serving.stored_iiif_image(slide, wanted)
        if picture is None:
            picture = await run_in_threadpool(
                serving.rendered_iiif_image, slide, wanted, state.options
            )
        return picture_response(picture, etag, headers)
    finally:
        state.slides.release(slide)


# The two hottest routes are plain Starlette routes on the application itself, ahead of the
# included routers: FastAPI's parameter machinery and its matching of included routers cost
# several times more than serving a stored tile (about 50 µs against 15 µs a request,
# measured in-process; see benchmarks/tiles.py for the effect over HTTP). Starlette's
# convertors still parse the integers, errors still become problem documents, and the
# OpenAPI schema describes the routes by hand below. They are bound to the application's
# state once (``install``): looking it up through ``app.state`` took 4% of a stored tile.
DEEPZOOM_TILE = "/deepzoom/{slide_id}_files/{level:int}/{column:int}_{row:int}.{extension}"
IIIF_IMAGE = "/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality_format}"


def install(app: FastAPI, state: AppState) -> None:
    """Add the tile routes to ``app``, serving from ``state``: call before including other
    routers."""
    for path, endpoint in ((DEEPZOOM_TILE, deepzoom_tile), (IIIF_IMAGE, iiif_image)):
        # Starlette sees through the partial: a function of the request, like any route.
        app.add_route(
            path,
            partial(endpoint, state),
            methods=["GET", "HEAD"],
            name=endpoint.__name__,  # not "partial": url_for finds them by their own names
            include_in_schema=False,
        )
    app.include_router(router)


def _parameter(name: str, kind: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": kind},
        "description": description,
    }


def _picture_operation(
    tag: str, summary: str, description: str, parameters: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "tags": [tag],
        "summary": summary,
        "description": description,
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "The picture (immutable: ETag, Cache-Control; 304 on If-None-Match)",
                "content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}},
            },
            "304": {"description": "Not modified"},
            "400": {"description": "Invalid request (problem document)"},
            "404": {"description": "No such slide or tile (problem document)"},
        },
    }


OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/deepzoom/{slide_id}_files/{level}/{column}_{row}.{extension}": {
        "get": _picture_operation(
            "deepzoom",
            "One DeepZoom tile (jpeg, png or webp)",
            "Tiles that are exactly a tile stored in the slide are its stored JPEG bytes.",
            [
                _parameter("slide_id", "string", "Slide id"),
                _parameter("level", "integer", "DeepZoom level (0 is 1×1 px)"),
                _parameter("column", "integer", "Tile column"),
                _parameter("row", "integer", "Tile row"),
                _parameter("extension", "string", "jpeg, png or webp"),
            ],
        )
    },
    "/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality_format}": {
        "get": _picture_operation(
            "iiif",
            "IIIF image request: region/size/rotation/quality.format",
            "IIIF Image API 3.0, compliance level 2, with mirroring, upscaling and WebP.",
            [
                _parameter("slide_id", "string", "Slide id"),
                _parameter("region", "string", "full, square, x,y,w,h or pct:x,y,w,h"),
                _parameter("size", "string", "max, w,, ,h, pct:n, w,h or !w,h; ^ upscales"),
                _parameter("rotation", "string", "0, 90, 180 or 270; ! mirrors first"),
                _parameter("quality_format", "string", "default|color|gray|bitonal.jpg|png|webp"),
            ],
        )
    },
}
