"""Errors as problem details (RFC 9457): one JSON shape for every failure.

``{"type", "title", "status", "detail", "instance"}``, plus ``errors`` (field, message) for
invalid parameters. ``type`` is a stable URI per kind of problem, so clients can branch on it.

One exception: a browser (a request whose ``Accept`` prefers HTML to JSON) that asks for a
page that is not there, outside the machine interfaces (``MACHINE_PREFIXES``), gets the web
interface's HTML "Not found" page (``use_html_pages``) with the same 404.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from slidebank.errors import (
    Conflict,
    CorruptSlide,
    Forbidden,
    InvalidInput,
    NotFound,
    SignInRequired,
    SlidebankError,
    StorageError,
    UnsupportedFormat,
)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://slidebank.org/problems/"
log = logging.getLogger("slidebank.web")

# (status, type slug, title) by error class, most specific first.
KINDS: list[tuple[type[SlidebankError], int, str, str]] = [
    (CorruptSlide, 500, "corrupt-slide", "Stored slide cannot be read"),
    (UnsupportedFormat, 415, "unsupported-format", "Unsupported format"),
    (InvalidInput, 400, "invalid-request", "Invalid request"),
    (NotFound, 404, "not-found", "Not found"),
    (SignInRequired, 401, "sign-in-required", "Sign-in required"),
    (Forbidden, 403, "forbidden", "Forbidden"),
    (Conflict, 409, "conflict", "Conflict"),
    (StorageError, 500, "storage-error", "Storage failure"),
    (SlidebankError, 500, "internal-error", "Internal error"),
]
HTTP_TITLES = {
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "content-too-large",
    415: "unsupported-media-type",
}

# Paths of the interfaces for programs: always problem documents, whatever Accept says.
MACHINE_PREFIXES = ("/api/", "/dicomweb/", "/iiif/", "/deepzoom/")
JSON_TYPES = ("application/json", "application/problem+json")
# The web pages' "Not found" page: (request, message) -> 404 response.
HtmlPage = Callable[[Request, str], Awaitable[Response]]


def refuse_declared_body_over(content_length: str | None, limit: int) -> None:
    """413 before a body is read, when its declared length is over ``limit`` bytes."""
    # ASCII digits only: str.isdigit() also accepts characters such as '²' that int() refuses.
    if (
        content_length is not None
        and content_length.isascii()
        and content_length.isdecimal()
        and int(content_length) > limit
    ):
        raise HTTPException(413, f"the request body may be at most {limit:,} bytes")


def use_html_pages(app: FastAPI, not_found_page: HtmlPage) -> None:
    """Answer a browser's request for a page that does not exist with ``not_found_page``."""
    app.state.html_not_found_page = not_found_page


def _quality(accept: str, media_type: str) -> float:
    """The quality ``accept`` gives ``media_type``: that of its most specific matching range
    (RFC 9110 12.5.1), 0 when none matches."""
    kind = media_type.split("/")[0]
    best_specificity, best_quality = -1, 0.0
    for item in accept.split(","):
        media_range, *parameters = (part.strip() for part in item.split(";"))
        media_range = media_range.lower()
        specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(media_range)
        if specificity is None or specificity < best_specificity:
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(1.0, max(0.0, float(value)))
                except ValueError:
                    quality = 0.0
        best_specificity, best_quality = specificity, quality
    return best_quality


def wants_html(request: Request) -> bool:
    """Whether the request is a browser's, for a page: its Accept prefers HTML to JSON, and
    its path is not one of the machine interfaces'."""
    path = request.url.path
    if any(path.startswith(prefix) or path == prefix[:-1] for prefix in MACHINE_PREFIXES):
        return False
    accept = request.headers.get("accept", "")
    html = max(_quality(accept, "text/html"), _quality(accept, "application/xhtml+xml"))
    return html > max(_quality(accept, media) for media in JSON_TYPES)


async def _html_not_found(request: Request, message: str) -> Response | None:
    page: HtmlPage | None = getattr(request.app.state, "html_not_found_page", None)
    if page is None or not wants_html(request):
        return None
    return await page(request, message)


def problem(
    status: int, slug: str, title: str, detail: str, instance: str, **extra: Any
) -> JSONResponse:
    body = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


def install(app: FastAPI) -> None:
    """Answer every error the application raises with a problem document."""

    async def slidebank_error(request: Request, exc: Exception) -> Response:
        status, slug, title = next(
            (status, slug, title) for kind, status, slug, title in KINDS if isinstance(exc, kind)
        )
        if status == 404:
            page = await _html_not_found(request, str(exc))
            if page is not None:
                return page
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        response = problem(status, slug, title, str(exc), request.url.path)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="slidebank"'
        return response

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "field": ".".join(str(part) for part in error["loc"][1:]) or str(error["loc"][0]),
                "in": str(error["loc"][0]),
                "message": error["msg"],
            }
            for error in exc.errors()
        ]
        detail = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
        return problem(
            422, "invalid-parameters", "Invalid parameters", detail, request.url.path, errors=errors
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            page = await _html_not_found(request, f"There is no page at {request.url.path}.")
            if page is not None:
                return page
        slug = HTTP_TITLES.get(exc.status_code, f"http-{exc.status_code}")
        title = slug.replace("-", " ").capitalize()
        response = problem(exc.status_code, slug, title, str(exc.detail), request.url.path)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    app.add_exception_handler(SlidebankError, slidebank_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
