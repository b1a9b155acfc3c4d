"""Immutable responses: entity tags, conditional GET and the cache headers that go with them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response

from slidebank.services.serving import Picture

# Content is addressed by checksum, so a response never changes: caches may keep it a year.
IMMUTABLE = "public, max-age=31536000, immutable"
# Pictures of datasets that are not open: shared caches may not keep them, and the browser
# only for a while: after that it asks again (If-None-Match), and the policy decides again,
# so a revoked grant also ends what a browser may show from its cache.
PRIVATE_CACHE = "private, max-age=600"
# OpenAPI: what an image route answers.
PICTURE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}
}


Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def get_and_head(router: APIRouter, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """Register an endpoint for GET (documented) and HEAD (same answer, no body)."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.get(path, response_class=Response, **options)(endpoint)
        router.head(path, response_class=Response, include_in_schema=False)(endpoint)
        return endpoint

    return register


def not_modified(
    request: Request, etag: str, headers: Mapping[str, str] | None = None
) -> Response | None:
    """A 304 when the client already holds this entity tag (If-None-Match), else None."""
    # Read from the raw headers: most tile requests carry none, and building Starlette's
    # Headers object for every one of them costs more than this whole check.
    given = next(
        (
            value.decode("latin-1")
            for name, value in request.scope["headers"]
            if name == b"if-none-match"
        ),
        None,
    )
    if given is None:
        return None
    tags = {tag.strip().removeprefix("W/") for tag in given.split(",")}
    if etag in tags or "*" in tags:
        return Response(
            status_code=304, headers={"ETag": etag, "Cache-Control": IMMUTABLE, **(headers or {})}
        )
    return None


# The names every picture response carries, encoded once.
_RAW_NAMES = {name: name.lower().encode("latin-1") for name in ("ETag", "Cache-Control")}


class PictureResponse(Response):
    """A picture with its entity tag and caching headers. Its raw headers are built here
    directly: on the tile path, Starlette's general header handling cost about a fifth of
    serving a stored tile."""

    def __init__(self, body: bytes, media_type: str, headers: Mapping[str, str]) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", media_type.encode("latin-1")),
        ]
        for name, value in headers.items():
            raw_name = _RAW_NAMES.get(name) or name.lower().encode("latin-1")
            self.raw_headers.append((raw_name, value.encode("latin-1")))


def picture_response(
    picture: Picture, etag: str, headers: Mapping[str, str] | None = None
) -> Response:
    return PictureResponse(
        picture.data,
        picture.media_type,
        {"ETag": etag, "Cache-Control": IMMUTABLE, **(headers or {})},
    )


def cache_headers(request: Request) -> dict[str, str]:
    """Cache-Control for a picture of the slide this request acquired: public only when its
    dataset is open (``AppState.acquire`` records that on the request)."""
    shared = request.scope.get("slidebank.open_data", False)  # set by AppState.acquire
    return {"Cache-Control": IMMUTABLE if shared else PRIVATE_CACHE}
