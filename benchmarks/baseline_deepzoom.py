"""The baseline of the tile benchmark: DeepZoom as openslide-python's own example serves it.

A minimal Starlette application answering the same URLs as ``slidebank serve``::

    /deepzoom/{id}.dzi
    /deepzoom/{id}_files/{level}/{col}_{row}.jpeg
    /healthz                                        (a constant "ok": this stack's HTTP floor)

Each tile is ``openslide.deepzoom.DeepZoomGenerator.get_tile`` (OpenSlide reads and decodes
the region, Pillow composites and, between stored levels, shrinks it with Lanczos) encoded
by Pillow as JPEG at quality 85 (slidebank's default), in Starlette's thread pool as a real
server would do it. The slide is opened once per worker process and shared by its threads
(OpenSlide handles are thread-safe). Run by ``benchmarks/tiles.py`` under uvicorn::

    BASELINE_SLIDE=/path/slide.svs BASELINE_ID=sb-... \\
        uvicorn baseline_deepzoom:create_app --factory --app-dir benchmarks --workers 2
"""

from __future__ import annotations

import io
import os

import openslide
from openslide.deepzoom import DeepZoomGenerator
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

TILE_SIZE = 240  # slidebank uses the slide's stored tile size: 240 px for CMU-1 tiles
OVERLAP = 0
JPEG_QUALITY = 85


class Baseline:
    """One slide and its DeepZoom generator, answering tile requests."""

    def __init__(self, slide_id: str, path: str) -> None:
        self.slide_id = slide_id
        self.slide = openslide.OpenSlide(path)
        self.deepzoom = DeepZoomGenerator(
            self.slide, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=False
        )

    def tile_jpeg(self, level: int, column: int, row: int) -> bytes:
        tile = self.deepzoom.get_tile(level, (column, row))
        buffer = io.BytesIO()
        tile.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()

    async def dzi(self, request: Request) -> Response:
        if request.path_params["slide_id"] != self.slide_id:
            return PlainTextResponse("no such slide", status_code=404)
        return Response(self.deepzoom.get_dzi("jpeg"), media_type="application/xml")

    async def tile(self, request: Request) -> Response:
        params = request.path_params
        if params["slide_id"] != self.slide_id or params["extension"] != "jpeg":
            return PlainTextResponse("no such tile", status_code=404)
        try:
            data = await run_in_threadpool(
                self.tile_jpeg, params["level"], params["column"], params["row"]
            )
        except ValueError:  # invalid level or address
            return PlainTextResponse("no such tile", status_code=404)
        return Response(data, media_type="image/jpeg")


async def healthz(_: Request) -> Response:
    return PlainTextResponse("ok")


def create_app() -> Starlette:
    """The application for the slide named by ``BASELINE_SLIDE`` and ``BASELINE_ID``."""
    baseline = Baseline(os.environ["BASELINE_ID"], os.environ["BASELINE_SLIDE"])
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/deepzoom/{slide_id}.dzi", baseline.dzi),
            Route(
                "/deepzoom/{slide_id}_files/{level:int}/{column:int}_{row:int}.{extension}",
                baseline.tile,
            ),
        ]
    )
