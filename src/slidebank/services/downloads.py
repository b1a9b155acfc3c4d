"""Downloads of stored DICOM files: one slide or a whole dataset, as a streamed ZIP archive
or as a manifest for scripts. Allowed by the policy's DOWNLOAD action and audited when the
download is granted, in one transaction with the decision."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from slidebank.access import audit
from slidebank.access.policy import Action, Principal, require, require_for_slide
from slidebank.access.principals import gate_of
from slidebank.catalog import queries
from slidebank.catalog.tables import Image, Slide
from slidebank.errors import NotFound
from slidebank.services.repository import Repository

CHUNK_BYTES = 1024 * 1024
MEDIA_TYPE_DICOM = "application/dicom"


@dataclass(frozen=True)
class DownloadFile:
    slide_id: str
    name: str
    path: Path
    size: int
    sha256: str

    @property
    def archive_name(self) -> str:
        return f"{self.slide_id}/{self.name}"


@dataclass(frozen=True)
class Download:
    """What one principal may take away: the files, and a name for the archive."""

    name: str
    files: list[DownloadFile]

    @property
    def size(self) -> int:
        return sum(item.size for item in self.files)


def slide_download(
    repository: Repository, principal: Principal, slide_id: str, kind: str, address: str | None
) -> Download:
    """The stored files of one slide, the download audited. A slide the principal may not
    know of is refused in the words used for one that does not exist."""
    with repository.catalogue.transaction() as session:
        image = queries.image_by_public_id(session, slide_id)
        dataset = image.slide.dataset
        require_for_slide(principal, Action.DOWNLOAD, gate_of(dataset), slide_id)
        download = Download(slide_id, _files(repository, [image]))
        _audit(session, principal, dataset.id, slide_id, kind, download, address)
        return download


def dataset_download(
    repository: Repository, principal: Principal, name: str, kind: str, address: str | None
) -> Download:
    with repository.catalogue.transaction() as session:
        dataset = queries.dataset_by_name(session, name)
        require(principal, Action.DOWNLOAD, gate_of(dataset), public=True)
        images = list(
            session.scalars(
                select(Image)
                .join(Image.slide)
                .where(Slide.dataset_id == dataset.id)
                .order_by(Image.public_id)
            )
        )
        download = Download(name, _files(repository, images))
        _audit(session, principal, dataset.id, name, kind, download, address)
        return download


def file_of(
    repository: Repository, principal: Principal, slide_id: str, name: str, address: str | None
) -> DownloadFile:
    download = slide_download(repository, principal, slide_id, f"file {name}", address)
    for item in download.files:
        if item.name == name:
            return item
    raise NotFound(f"slide {slide_id} has no stored file {name!r}")


def manifest(download: Download, base_url: str) -> dict[str, Any]:
    """A list a script can fetch and check file by file."""
    return {
        "name": download.name,
        "files": [
            {
                "slide": item.slide_id,
                "name": item.name,
                "size": item.size,
                "sha256": item.sha256,
                "media_type": MEDIA_TYPE_DICOM,
                "url": f"{base_url}/api/slides/{item.slide_id}/files/{item.name}",
            }
            for item in download.files
        ],
        "total_bytes": download.size,
    }


def zip_stream(download: Download) -> Iterator[bytes]:
    """The archive, produced as it is sent: stored (JPEG frames do not compress), ZIP64 so
    that datasets over 4 GB work, memory bounded by one chunk."""
    sink = _Sink()
    unseekable: Any = sink  # zipfile's typing wants a file; it needs only write/tell/flush
    with zipfile.ZipFile(unseekable, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for item in download.files:
            with (
                item.path.open("rb") as source,
                archive.open(
                    zipfile.ZipInfo(item.archive_name, date_time=(1980, 1, 1, 0, 0, 0)),
                    "w",
                    force_zip64=True,
                ) as target,
            ):
                while chunk := source.read(CHUNK_BYTES):
                    target.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


class _Sink:
    """A write-only, unseekable file for zipfile: it then writes data descriptors instead
    of seeking back, which is what lets the archive stream."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._written = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _files(repository: Repository, images: list[Image]) -> list[DownloadFile]:
    files = []
    for image in images:
        content = repository.store.content_dir(image.storage_key)
        for stored in image.files:
            files.append(
                DownloadFile(
                    image.public_id,
                    stored["name"],
                    content / stored["name"],
                    int(stored["size"]),
                    stored["sha256"],
                )
            )
    return files


def _audit(
    session: Any,
    principal: Principal,
    dataset_id: int,
    target: str,
    kind: str,
    download: Download,
    address: str | None,
) -> None:
    audit.append(
        session,
        principal,
        "download",
        dataset_id=dataset_id,
        target=target,
        address=address,
        detail={"kind": kind, "files": len(download.files), "bytes": download.size},
    )
