"""The application factory: ``create_app(settings)`` builds one FastAPI application.

Nothing is created at import time; ``web.server`` builds one application per worker process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse
from fastapi.telemetry import TelemetryConfig
from starlette.concurrency import run_in_threadpool

from slidebank import __version__
from slidebank.config import Settings
from slidebank.services import accounts
from slidebank.services.open_slides import OpenSlides
from slidebank.services.repository import open_repository
from slidebank.services.serving import ServingOptions
from slidebank.web import (
    access_api,
    account_pages,
    annotation_api,
    annotation_pages,
    api,
    dicomweb,
    docs,
    downloads,
    pages,
    problems,
    tiles,
)
from slidebank.web.state import AppState, ForgetAccessOnWrites

READ_FLUSH_S = 10.0
# FastAPI's native OpenTelemetry, unless the deployment asks for it (SLIDEBANK_TELEMETRY):
# left on, every request asks the global providers whether one is configured, about 4 µs of
# a 25 µs stored tile in a direct ASGI loop, while the embedded repository configures none.
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
log = logging.getLogger("slidebank.web")

DESCRIPTION = """\
Slidebank's HTTP API: datasets, cases and slides of the catalogue; thumbnails, associated
images and regions of slides at any level or resolution; DeepZoom tiles for OpenSeadragon
under `/deepzoom/`, the IIIF Image API 3.0 (level 2) under `/iiif/3/`, and DICOMweb (QIDO-RS,
WADO-RS, STOW-RS) under `/dicomweb/`.

Errors are problem details (RFC 9457, `application/problem+json`). Image responses are
immutable: they carry an `ETag` and `Cache-Control: immutable`, and answer `If-None-Match`
with 304.
"""


def _first(app: FastAPI, paths: list[str]) -> None:
    """Move the routes of ``paths`` to the front of the routing table, in that order.
    Starlette tries routes in order, and DeepZoom tiles are nearly every request a viewer
    makes: first, they match at once instead of after three other routes (27.5 to 25.3 µs
    a tile, measured in-process). /healthz and DICOMweb frames keep their distance from
    the front."""
    routes = app.router.routes
    front = [route for path in paths for route in routes if getattr(route, "path", None) == path]
    routes[:] = [*front, *(route for route in routes if route not in front)]


def create_app(settings: Settings) -> FastAPI:
    repository = open_repository(settings)
    state = AppState(
        settings=settings,
        repository=repository,
        slides=OpenSlides(
            repository,
            max_open=settings.open_slides,
            max_bytes=settings.open_slides_bytes,
            decoded_cache_bytes=settings.decoded_cache_bytes,
        ),
        options=ServingOptions.from_settings(settings),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        flusher = asyncio.create_task(_flush_reads_forever(state))
        try:
            yield
        finally:
            flusher.cancel()
            state.close()

    app = FastAPI(
        title="Slidebank",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry=None if settings.telemetry else NO_TELEMETRY,
    )
    app.state.slidebank = state
    app.add_middleware(ForgetAccessOnWrites, state=state)
    problems.install(app)

    # A plain Starlette route, first in the routing table like the tile routes: liveness
    # checks, and the HTTP floor of benchmarks/tiles.py (a constant answer, same stack).
    async def healthz(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app.add_route("/healthz", healthz, include_in_schema=False)
    dicomweb.install(app)  # frames ahead of the routers, like the tiles
    tiles.install(app, state)
    _first(app, [tiles.DEEPZOOM_TILE, "/healthz", dicomweb.FRAMES_PATH])
    app.include_router(api.router)
    app.include_router(access_api.router)
    app.include_router(dicomweb.router)
    app.include_router(downloads.router)
    app.include_router(annotation_api.router)
    pages.install(app)
    annotation_pages.install(app)
    account_pages.install(app)
    docs.install(app)
    _document(app, tiles.OPENAPI_PATHS)
    return app


async def _flush_reads_forever(state: AppState) -> None:
    """Write the tallied reads of finished minutes to the audit trail, every few seconds."""
    while True:
        await asyncio.sleep(READ_FLUSH_S)
        try:
            await run_in_threadpool(accounts.flush_reads, state.repository, state.reads)
        except Exception:  # kept in the tally and retried; a failing catalogue is logged
            log.exception("writing data reads to the audit trail failed; will retry")


def _document(app: FastAPI, paths: dict[str, dict[str, Any]]) -> None:
    """Add hand-written OpenAPI entries for routes FastAPI does not describe itself."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema["paths"].update(paths)
            # API tokens (`slidebank token create`, or the account page) as bearer tokens, so
            # that the documentation's "Authorize" button works; every route also answers
            # without one, as far as the dataset's policy allows.
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token: sbk_<key>_<secret>",
                }
            }
            schema["security"] = [{}, {"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """The application configured by ``SLIDEBANK_*`` variables, for running under another
    ASGI server: ``uvicorn --factory slidebank.web.app:app_from_env``."""
    return create_app(Settings.from_env())
