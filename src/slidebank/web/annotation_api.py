"""Annotations under ``/api/``: sets of a slide, viewport reads and density maps for the
viewer, imports and exports in the pathologists' formats, edits, history, diff, revert,
promotion to reference, agreement between two sets, and each dataset's label schema."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from slidebank.access.policy import Action, Principal
from slidebank.annotations.formats.base import ImportLimits
from slidebank.annotations.model import Viewport
from slidebank.services import annotating
from slidebank.web import problems
from slidebank.web.auth import client_address, current_principal
from slidebank.web.state import AppState, app_state

# The JSON bodies of these routes are parsed whole, at about ten times their size in
# memory: an edit of the 10,000 annotations it may change (polygons of some 30 vertices)
# fits; more is an import, whose file is streamed to disk under its own limit
# (Settings.max_annotation_import_bytes).
MAX_JSON_BODY_BYTES = 8 * 1024 * 1024
EDIT_ITEMS = annotating.MAX_EDIT_ANNOTATIONS


class _DeclaredBodyLimit(APIRoute):
    """A route whose body limit (``max_body_size``) also refuses a declared Content-Length
    over it before anything runs, as a problem document: Starlette's limiter answers that
    case itself, in plain text, replacing the application's answer."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.max_body_size is not None:
            declared = Headers(scope=scope).get("content-length")
            problems.refuse_declared_body_over(declared, self.max_body_size)
        await super().handle(scope, receive, send)


router = APIRouter(prefix="/api", tags=["annotations"], route_class=_DeclaredBodyLimit)
State = Annotated[AppState, Depends(app_state)]
Asker = Annotated[Principal, Depends(current_principal)]
# Spelled out for the OpenAPI schema; tests/web/test_annotation_api.py keeps them equal to
# the registry's.
ImportFormat = Literal["auto", "dicom-ann", "asap", "imagescope", "dsa", "geojson", "qupath"]
ExportFormat = Literal["qupath", "geojson", "asap", "imagescope", "dsa", "dicom-ann"]
Sets = Annotated[
    str | None, Query(description="Comma-separated set ids (default: every set of the slide).")
]


class NewSet(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["manual", "semi-automatic", "automatic"] = "manual"
    author: str | None = Field(
        None, max_length=200, description="An algorithm run's provenance (default: you)."
    )


class Edit(BaseModel):
    """One revision: GeoJSON features to add, new versions by annotation number, deletions
    (at most 10,000 changes in all)."""

    add: list[dict[str, Any]] = Field(default_factory=list, max_length=EDIT_ITEMS)
    replace: dict[int, dict[str, Any]] = Field(default_factory=dict, max_length=EDIT_ITEMS)
    remove: list[int] = Field(default_factory=list, max_length=EDIT_ITEMS)


class Revert(BaseModel):
    to: int = Field(ge=0, description="The revision whose state becomes current.")


class LabelClassIn(BaseModel):
    name: str
    parent: str | None = None
    color: str | None = Field(None, description="#rrggbb")
    code: str | None = Field(None, description="A coded concept, e.g. SCT:4421005")
    code_meaning: str | None = None


def _window(
    x0: Annotated[float, Query(description="Left edge, level-0 px.")],
    y0: Annotated[float, Query(description="Top edge, level-0 px.")],
    x1: Annotated[float, Query(description="Right edge, level-0 px.")],
    y1: Annotated[float, Query(description="Bottom edge, level-0 px.")],
) -> Viewport:
    return Viewport(x0, y0, x1, y1)  # InvalidInput (400) names the edge that is wrong


Window = Annotated[Viewport, Depends(_window)]


Found = TypeVar("Found")


async def _read(
    state: AppState, request: Request, use_case: Callable[..., Found], *args: Any, **kwargs: Any
) -> Found:
    """Run a read use case of ``annotating`` in the thread pool and tally what it read for
    the audit trail, as every read of data is."""
    reads = annotating.Reads()
    found = await run_in_threadpool(use_case, state.repository, *args, reads=reads, **kwargs)
    await state.note_reads(request, Action.READ_ANNOTATIONS, reads.found)
    return found


def _set_ids(sets: str | None) -> list[int] | None:
    if sets is None or sets == "":
        return None
    try:
        return [int(part) for part in sets.split(",")]
    except ValueError as exc:
        raise HTTPException(400, f"sets: {sets!r} is not a comma-separated list of ids") from exc


def _labels(labels: str | None) -> list[str] | None:
    return None if labels is None else [part for part in labels.split(",") if part]


@router.get("/slides/{slide_id}/annotation-sets", summary="The slide's annotation sets")
async def list_sets(
    state: State, asker: Asker, request: Request, slide_id: str
) -> list[dict[str, Any]]:
    return await _read(state, request, annotating.list_sets, asker, slide_id)


@router.post(
    "/slides/{slide_id}/annotation-sets",
    summary="A new set of your own",
    status_code=201,
    max_body_size=MAX_JSON_BODY_BYTES,
)
async def create_set(state: State, asker: Asker, slide_id: str, body: NewSet) -> dict[str, Any]:
    return await run_in_threadpool(
        annotating.create_set,
        state.repository,
        asker,
        slide_id,
        body.name,
        body.kind,
        body.author,
    )


@router.get(
    "/slides/{slide_id}/annotations",
    summary="Annotations in a window, as GeoJSON",
    response_class=Response,
    responses={200: {"content": {"application/geo+json": {}}}},
)
async def viewport(
    state: State,
    asker: Asker,
    request: Request,
    slide_id: str,
    window: Window,
    sets: Sets = None,
    labels: Annotated[str | None, Query(description="Comma-separated class names.")] = None,
    min_area: Annotated[float | None, Query(ge=0)] = None,
    simplify: Annotated[
        float, Query(ge=0, description="Tolerance in level-0 px (about one screen pixel).")
    ] = 0.0,
    limit: Annotated[int, Query(ge=1, le=annotating.MAX_VIEWPORT_ANNOTATIONS)] = (
        annotating.MAX_VIEWPORT_ANNOTATIONS
    ),
) -> Response:
    body = await _read(
        state,
        request,
        annotating.viewport_geojson,
        asker,
        slide_id,
        window,
        set_ids=_set_ids(sets),
        labels=_labels(labels),
        min_area=min_area,
        simplify=simplify,
        limit=limit,
    )
    return Response(body, media_type="application/geo+json")


@router.get(
    "/slides/{slide_id}/annotations/density",
    summary="How many annotations per cell: the level of detail of zoomed-out views",
)
async def density(
    state: State,
    asker: Asker,
    request: Request,
    slide_id: str,
    window: Window,
    cell: Annotated[float, Query(gt=0, description="Cell side in level-0 px.")],
    sets: Sets = None,
) -> dict[str, Any]:
    return await _read(
        state, request, annotating.density, asker, slide_id, window, cell, set_ids=_set_ids(sets)
    )


@router.get("/slides/{slide_id}/annotations/counts", summary="Annotations per class in a window")
async def counts(
    state: State,
    asker: Asker,
    request: Request,
    slide_id: str,
    window: Window,
    sets: Sets = None,
) -> dict[str, int]:
    return await _read(
        state, request, annotating.count_by_label, asker, slide_id, window, set_ids=_set_ids(sets)
    )


def _upload(state: State, request: Request) -> int:
    """The import's size limit, once the request is a file body within it. Declared before
    the principal, so that a form is refused before the CSRF check would parse it."""
    kind = request.headers.get("content-type", "").lower()
    if kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        raise HTTPException(
            415,
            "send the annotation file itself as the request body (application/octet-stream, "
            "or the file's own type), not as a form; a session's CSRF token goes in the "
            "X-CSRF-Token header",
        )
    limit = state.settings.max_annotation_import_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"an annotation file may be at most {limit:,} bytes")
    return limit


@router.post(
    "/slides/{slide_id}/annotations/import",
    summary="Import an annotation file (the request body) into a set of your own",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {}, "application/json": {}},
            "description": "QuPath or plain GeoJSON, ASAP or ImageScope XML, DSA JSON, "
            "or a DICOM Microscopy Bulk Simple Annotations instance",
        }
    },
)
async def import_file(
    state: State,
    limit: Annotated[int, Depends(_upload)],
    asker: Asker,
    request: Request,
    slide_id: str,
    set: Annotated[
        str | None, Query(max_length=200, description="Set name (default: your name).")
    ] = None,
    format: Annotated[ImportFormat, Query()] = "auto",
    outside: Annotated[
        Literal["refuse", "clip"], Query(description="Geometry outside the slide.")
    ] = "refuse",
    filename: Annotated[str, Query(max_length=255)] = "upload",
) -> dict[str, Any]:
    set_name = set or asker.name
    # The policy before the body: a refused upload is not received, let alone stored.
    await run_in_threadpool(annotating.check_import, state.repository, asker, slide_id, set_name)
    with tempfile.TemporaryFile(prefix="slidebank-import-") as body:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"an annotation file may be at most {limit:,} bytes")
            await run_in_threadpool(body.write, chunk)
        body.seek(0)
        report = await run_in_threadpool(
            lambda: annotating.import_annotations(
                state.repository,
                asker,
                slide_id,
                body,
                filename,
                set_name=set_name,
                file_format=format,
                outside=outside,
                limits=ImportLimits(max_bytes=limit),
                address=client_address(request),
            )
        )
    return {
        "set": report.set,
        "format": report.format,
        "revision": report.revision,
        "imported": report.imported,
        "repaired": report.repaired,
        "clipped": report.clipped,
        "dropped": report.dropped,
        "new_classes": report.classes,
    }


@router.get("/annotation-sets/{set_id}", summary="One annotation set")
async def get_set(state: State, asker: Asker, request: Request, set_id: int) -> dict[str, Any]:
    return await _read(state, request, annotating.get_set, asker, set_id)


@router.get(
    "/annotation-sets/{set_id}/export",
    summary="The set as a file, now or at a revision",
    response_class=FileResponse,
)
async def export(
    state: State,
    asker: Asker,
    request: Request,
    set_id: int,
    format: Annotated[ExportFormat, Query()] = "geojson",
    revision: Annotated[int | None, Query(ge=0)] = None,
) -> FileResponse:
    spool = tempfile.NamedTemporaryFile(prefix="slidebank-export-", delete=False)  # noqa: SIM115 - removed after sending
    try:
        made = await run_in_threadpool(
            lambda: annotating.export_annotations(
                state.repository,
                asker,
                set_id,
                format,
                spool,
                at=revision,
                address=client_address(request),
            )
        )
        spool.close()
    except BaseException:
        spool.close()
        _remove(spool.name)
        raise
    return FileResponse(
        spool.name,
        media_type=made.media_type,
        filename=made.filename,
        headers={"Cache-Control": "private, no-store"},
        background=BackgroundTask(_remove, spool.name),
    )


def _remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)


@router.post(
    "/annotation-sets/{set_id}/edits",
    summary="Change your own set: one revision",
    max_body_size=MAX_JSON_BODY_BYTES,
)
async def edit(state: State, asker: Asker, set_id: int, body: Edit) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: annotating.edit(
            state.repository,
            asker,
            set_id,
            add=body.add,
            replace=body.replace,
            remove=body.remove,
        )
    )


@router.get("/annotation-sets/{set_id}/revisions", summary="The set's history")
async def revisions(
    state: State, asker: Asker, request: Request, set_id: int
) -> list[dict[str, Any]]:
    return await _read(state, request, annotating.history, asker, set_id)


@router.get("/annotation-sets/{set_id}/diff", summary="What changed between two revisions")
async def diff(
    state: State,
    asker: Asker,
    request: Request,
    set_id: int,
    start: Annotated[int, Query(ge=0)],
    end: Annotated[int, Query(ge=0)],
) -> dict[str, Any]:
    return await _read(state, request, annotating.diff, asker, set_id, start, end)


@router.post(
    "/annotation-sets/{set_id}/revert",
    summary="Make an earlier revision current",
    max_body_size=MAX_JSON_BODY_BYTES,
)
async def revert(state: State, asker: Asker, set_id: int, body: Revert) -> dict[str, Any]:
    return await run_in_threadpool(annotating.revert, state.repository, asker, set_id, body.to)


@router.post(
    "/annotation-sets/{set_id}/promote",
    summary="Promote to reference (stewards)",
    max_body_size=MAX_JSON_BODY_BYTES,
)
async def promote(state: State, asker: Asker, request: Request, set_id: int) -> dict[str, Any]:
    return await run_in_threadpool(
        annotating.promote, state.repository, asker, set_id, client_address(request)
    )


@router.get(
    "/annotation-sets/{set_id}/agreement/{other_id}",
    summary="Agreement of another set (test) with this one (reference)",
)
async def agreement(
    state: State,
    asker: Asker,
    request: Request,
    set_id: int,
    other_id: int,
    distance: Annotated[
        float, Query(ge=0, le=10_000, description="Match distance for points, in px.")
    ] = 10.0,
    cells: Annotated[bool, Query(description="Score polygons as cells (centroids).")] = False,
) -> dict[str, Any]:
    """Each set may hold at most 100,000 annotations (both are compared in memory)."""
    return await _read(
        state, request, annotating.compare, asker, set_id, other_id, distance=distance, cells=cells
    )


@router.get("/datasets/{name}/labels", summary="The dataset's label schema")
async def labels(state: State, asker: Asker, name: str) -> list[dict[str, Any]]:
    return await run_in_threadpool(annotating.label_schema, state.repository, asker, name)


@router.put(
    "/datasets/{name}/labels",
    summary="Replace the dataset's label schema (stewards)",
    max_body_size=MAX_JSON_BODY_BYTES,
)
async def set_labels(
    state: State,
    asker: Asker,
    request: Request,
    name: str,
    classes: Annotated[list[LabelClassIn], Body(max_length=10_000)],
) -> list[dict[str, Any]]:
    return await run_in_threadpool(
        annotating.set_label_schema,
        state.repository,
        asker,
        name,
        [item.model_dump() for item in classes],
        client_address(request),
    )
