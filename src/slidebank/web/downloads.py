"""Downloads under ``/api/``: a slide's or a dataset's stored DICOM files as a streamed ZIP
archive, as a manifest, or one file at a time (what the manifest points to)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from slidebank.access.policy import Principal
from slidebank.services import downloads
from slidebank.services.downloads import Download
from slidebank.web.auth import client_address, current_principal
from slidebank.web.state import AppState, app_state

router = APIRouter(prefix="/api", tags=["downloads"])
State = Annotated[AppState, Depends(app_state)]
Asker = Annotated[Principal, Depends(current_principal)]
ZIP: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {}}, "description": "a streamed ZIP64 archive"}
}


@router.get(
    "/slides/{slide_id}/download",
    summary="The slide's stored DICOM files as a ZIP archive",
    response_class=StreamingResponse,
    responses=ZIP,
)
async def download_slide(
    state: State, asker: Asker, request: Request, slide_id: str
) -> StreamingResponse:
    download = await run_in_threadpool(
        downloads.slide_download,
        state.repository,
        asker,
        slide_id,
        "zip",
        client_address(request),
    )
    return _archive(download)


@router.get("/slides/{slide_id}/manifest", summary="The slide's stored files, for scripts")
async def slide_manifest(
    state: State, asker: Asker, request: Request, slide_id: str
) -> dict[str, Any]:
    download = await run_in_threadpool(
        downloads.slide_download,
        state.repository,
        asker,
        slide_id,
        "manifest",
        client_address(request),
    )
    return downloads.manifest(download, _base(request))


@router.get(
    "/slides/{slide_id}/files/{name}",
    summary="One stored DICOM file of the slide",
    response_class=FileResponse,
    responses={200: {"content": {"application/dicom": {}}}},
)
async def slide_file(
    state: State, asker: Asker, request: Request, slide_id: str, name: str
) -> FileResponse:
    item = await run_in_threadpool(
        downloads.file_of, state.repository, asker, slide_id, name, client_address(request)
    )
    return FileResponse(
        item.path,
        media_type=downloads.MEDIA_TYPE_DICOM,
        filename=item.name,
        headers={"Cache-Control": "private, no-store", "Digest": f"sha-256={item.sha256}"},
    )


@router.get(
    "/datasets/{name}/download",
    summary="Every stored DICOM file of the dataset as a ZIP archive (one folder per slide)",
    response_class=StreamingResponse,
    responses=ZIP,
)
async def download_dataset(
    state: State, asker: Asker, request: Request, name: str
) -> StreamingResponse:
    download = await run_in_threadpool(
        downloads.dataset_download, state.repository, asker, name, "zip", client_address(request)
    )
    return _archive(download)


@router.get("/datasets/{name}/manifest", summary="Every stored file of the dataset, for scripts")
async def dataset_manifest(
    state: State, asker: Asker, request: Request, name: str
) -> dict[str, Any]:
    download = await run_in_threadpool(
        downloads.dataset_download,
        state.repository,
        asker,
        name,
        "manifest",
        client_address(request),
    )
    return downloads.manifest(download, _base(request))


def _archive(download: Download) -> StreamingResponse:
    return StreamingResponse(
        downloads.zip_stream(download),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{download.name}.zip"',
            "Cache-Control": "private, no-store",
        },
    )


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")
