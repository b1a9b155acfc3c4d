"""The JSON API under ``/api/``: datasets, cases, slides, and pictures of slides."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from slidebank.access.policy import Action, Principal
from slidebank.catalog.queries import (
    MAX_OFFSET,
    MAX_PAGE,
    TEXT_FILTER_FIELDS,
    SlideFilter,
    slide_filter,
)
from slidebank.services import browsing, deidentification, serving
from slidebank.services.open_slides import ServedSlide
from slidebank.services.serving import Picture, RegionQuery
from slidebank.tiles.encoding import image_format
from slidebank.web.auth import current_principal
from slidebank.web.caching import (
    PICTURE_RESPONSES,
    cache_headers,
    get_and_head,
    not_modified,
    picture_response,
)
from slidebank.web.state import AppState, app_state

router = APIRouter(prefix="/api", tags=["catalogue"])
State = Annotated[AppState, Depends(app_state)]
Asker = Annotated[Principal, Depends(current_principal)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")]


class Page(BaseModel):
    """One page of a listing."""

    items: list[dict[str, Any]]
    total: int = Field(description="Items matching, on all pages.")
    limit: int
    offset: int


class SlideFilters(BaseModel):
    """The filters of ``slidebank list``."""

    dataset: str | None = Field(None, description="Dataset short name.")
    site: str | None = Field(None, description="Anatomical site contains this text.")
    stain: str | None = Field(None, description="Stain compound or target contains this text.")
    species: str | None = Field(None, description="Species contains this text.")
    diagnosis: str | None = Field(None, description="Diagnosis code (exact) or text (contains).")
    vendor: str | None = Field(None, description="Scanner vendor contains this text.")
    format: str | None = Field(
        None, description="Stored format or the source's, e.g. dicom, aperio or svs."
    )
    mpp_min: float | None = Field(None, gt=0, description="Smallest µm per pixel.")
    mpp_max: float | None = Field(None, gt=0, description="Largest µm per pixel.")
    limit: int = Field(100, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)

    def slide_filter(self) -> SlideFilter:
        texts = {name: getattr(self, name) for name in TEXT_FILTER_FIELDS}
        return slide_filter(
            self.dataset, texts, self.mpp_min, self.mpp_max, self.limit, self.offset
        )


@router.get("/datasets", summary="Every dataset, with its number of slides")
def list_datasets(state: State) -> list[dict[str, Any]]:
    return browsing.list_datasets(state.repository)


@router.get("/datasets/{name}", summary="One dataset, with counts")
def show_dataset(state: State, name: str) -> dict[str, Any]:
    return browsing.show_dataset(state.repository, name)


@router.get("/datasets/{name}/cases", summary="A dataset's cases, by pseudonym")
async def list_cases(
    state: State,
    asker: Asker,
    request: Request,
    name: str,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page:
    items, total = await run_in_threadpool(
        browsing.list_cases, state.repository, asker, name, limit, offset
    )
    await state.note_read(request, Action.READ_METADATA, name, f"{name}/cases")
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/datasets/{name}/cases/{pseudonym}", summary="A case with its specimens and slides")
async def show_case(
    state: State, asker: Asker, request: Request, name: str, pseudonym: str
) -> dict[str, Any]:
    record = await run_in_threadpool(browsing.show_case, state.repository, asker, name, pseudonym)
    await state.note_read(request, Action.READ_METADATA, name, f"{name}/cases/{pseudonym}")
    return record


@router.get("/slides", summary="Slides matching the filters, newest first")
async def list_slides(
    state: State, asker: Asker, request: Request, filters: Annotated[SlideFilters, Query()]
) -> Page:
    where = filters.slide_filter()
    items, total = await run_in_threadpool(browsing.page_of_slides, state.repository, asker, where)
    for name in {item["dataset"] for item in items}:
        await state.note_read(request, Action.READ_METADATA, name, "slide list")
    return Page(items=items, total=total, limit=where.limit, offset=where.offset)


@router.get("/slides/{slide_id}", summary="A slide's full record")
async def show_slide(state: State, asker: Asker, request: Request, slide_id: str) -> dict[str, Any]:
    record = await run_in_threadpool(browsing.show_slide, state.repository, asker, slide_id)
    await state.note_read(request, Action.READ_METADATA, record["dataset"]["short_name"], slide_id)
    return record


@router.get(
    "/slides/{slide_id}/deidentification",
    summary="What de-identification removed or replaced in the slide, and how it was checked",
)
async def deidentification_report(
    state: State, asker: Asker, request: Request, slide_id: str
) -> dict[str, Any]:
    """Fields, never their values; 404 for a slide stored as it came."""
    found = await run_in_threadpool(deidentification.report_of, state.repository, asker, slide_id)
    await state.note_read(request, Action.READ_METADATA, found.dataset, slide_id)
    return found.report


@get_and_head(
    router,
    "/slides/{slide_id}/thumbnail",
    summary="The slide's stored JPEG thumbnail",
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def thumbnail(state: State, asker: Asker, request: Request, slide_id: str) -> Response:
    """Public for the slides a dataset features on its landing page."""

    def stored(_: ServedSlide) -> Picture:
        return Picture(browsing.thumbnail_of(state.repository, asker, slide_id), "image/jpeg")

    return await _picture(state, request, slide_id, ("thumbnail",), stored, landing=True)


@get_and_head(
    router,
    "/slides/{slide_id}/associated/{name}",
    summary="An associated image (label, macro, thumbnail) of the slide",
    responses=PICTURE_RESPONSES,
)
async def associated(
    state: State,
    request: Request,
    slide_id: str,
    name: str,
    format: Annotated[Literal["jpeg", "png", "webp"], Query()] = "jpeg",
) -> Response:
    fmt = image_format(format)

    def encoded(slide: ServedSlide) -> Picture:
        return serving.associated_image(slide, name, fmt, state.options)

    return await _picture(state, request, slide_id, ("associated", name, fmt), encoded)


@get_and_head(
    router,
    "/slides/{slide_id}/region",
    summary="Pixels of a region at any level, resolution or downsample",
    responses=PICTURE_RESPONSES,
)
async def region(
    state: State,
    request: Request,
    slide_id: str,
    x: Annotated[int, Query(description="Left edge in level-0 pixels.")],
    y: Annotated[int, Query(description="Top edge in level-0 pixels.")],
    width: Annotated[int, Query(ge=1, description="Output width in pixels.")],
    height: Annotated[int, Query(ge=1, description="Output height in pixels.")],
    level: Annotated[int | None, Query(ge=0, description="Pyramid level to read.")] = None,
    mpp: Annotated[float | None, Query(gt=0, description="Output µm per pixel.")] = None,
    downsample: Annotated[
        float | None, Query(gt=0, description="Level-0 pixels per output pixel.")
    ] = None,
    format: Annotated[Literal["png", "jpeg", "webp"], Query()] = "png",
    quality: Annotated[Literal["color", "gray"], Query()] = "color",
) -> Response:
    """Exactly one of `level`, `mpp` and `downsample` may be given (none means level 0).
    The output is `width`×`height` pixels; the parts outside the slide are white. PNG (the
    default) is lossless, for algorithms."""
    query = RegionQuery(x, y, width, height, level, mpp, downsample, image_format(format), quality)

    def rendered(slide: ServedSlide) -> Picture:
        return serving.region(slide, query, state.options)

    return await _picture(state, request, slide_id, ("region", query), rendered)


async def _picture(
    state: AppState,
    request: Request,
    slide_id: str,
    tag: tuple[object, ...],
    make: Callable[[ServedSlide], Picture],
    landing: bool = False,
) -> Response:
    """A picture of a slide: 304 when the client holds it, else made in the thread pool."""
    slide = await state.acquire(request, slide_id, landing=landing)
    try:
        etag = serving.entity_tag(slide, state.options, *tag)
        headers = cache_headers(request)
        cached = not_modified(request, etag, headers)
        if cached is not None:
            return cached
        return picture_response(await run_in_threadpool(make, slide), etag, headers)
    finally:
        state.slides.release(slide)
