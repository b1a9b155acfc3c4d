"""A Python client of the HTTP API, for notebooks and training scripts.

    from slidebank.client import SlidebankClient
    with SlidebankClient("http://127.0.0.1:8000") as bank:
        for slide in bank.slides(stain="H&E", species="rattus"):
            patch = bank.region(slide["id"], x=20_000, y=15_000, width=512, height=512, mpp=0.5)

Regions come back as ``numpy`` arrays (H×W×3 ``uint8``), read losslessly (PNG). Errors from
the server are raised as :class:`ApiError` carrying its problem document.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import numpy as np
from PIL import Image

PAGE = 500


class ApiError(Exception):
    """A problem document (RFC 9457) from the server."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")


class SlidebankClient:
    def __init__(self, base_url: str, timeout: float = 60.0, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)

    def datasets(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("/api/datasets")
        return result

    def slides(self, **filters: str | float) -> Iterator[dict[str, Any]]:
        """Every slide matching the filters of ``/api/slides``, page after page."""
        offset = 0
        while True:
            page = self._json("/api/slides", params={**filters, "limit": PAGE, "offset": offset})
            yield from page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return

    def slide(self, slide_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(f"/api/slides/{slide_id}")
        return result

    def region(
        self,
        slide_id: str,
        x: int,
        y: int,
        width: int,
        height: int,
        *,
        level: int | None = None,
        mpp: float | None = None,
        downsample: float | None = None,
    ) -> np.ndarray:
        """``width``×``height`` pixels from level-0 (``x``, ``y``) at a level, resolution in µm
        per pixel, or downsample (at most one; none means level 0)."""
        params: dict[str, int | float] = {"x": x, "y": y, "width": width, "height": height}
        for name, value in (("level", level), ("mpp", mpp), ("downsample", downsample)):
            if value is not None:
                params[name] = value
        data = self._bytes(f"/api/slides/{slide_id}/region", params)
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))

    def thumbnail(self, slide_id: str) -> Image.Image:
        data = self._bytes(f"/api/slides/{slide_id}/thumbnail", {})
        return Image.open(io.BytesIO(data))

    def download(
        self, folder: Path, *, slide_id: str | None = None, dataset: str | None = None
    ) -> list[Path]:
        """Fetch a slide's (or a whole dataset's) stored DICOM files into ``folder``, one
        sub-folder per slide, each checked against the manifest's SHA-256; files already
        there with the right checksum are not fetched again."""
        if (slide_id is None) == (dataset is None):
            raise ValueError("give slide_id or dataset")
        path = (
            f"/api/slides/{slide_id}/manifest" if slide_id else f"/api/datasets/{dataset}/manifest"
        )
        written = []
        for item in self._json(path)["files"]:
            target = folder / item["slide"] / item["name"]
            written.append(target)
            if target.is_file() and _sha256(target) == item["sha256"]:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            digest = hashlib.sha256()
            with self._http.stream("GET", httpx.URL(item["url"]).path) as response:
                if response.is_error:
                    response.read()  # the problem document, for the error
                self._checked(response)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                        out.write(chunk)
            if digest.hexdigest() != item["sha256"]:
                partial.unlink()
                raise OSError(f"{item['url']}: checksum differs from the manifest's")
            partial.replace(target)
        return written

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._checked(self._http.get(path, params=params)).json()

    def _bytes(self, path: str, params: dict[str, Any]) -> bytes:
        return self._checked(self._http.get(path, params=params)).content

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text[:500]}
        raise ApiError(response.status_code, problem)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
