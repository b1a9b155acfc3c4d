"""Errors as problem details (RFC 9457): one JSON shape for every failure.

``{"type", "title", "status", "detail", "instance"}``, plus ``errors`` (field, message) for
invalid parameters. ``type`` is a stable URI per kind of problem, so clients can branch on it.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
HTTP_TITLES = {404: "not-found", 405: "method-not-allowed", 406: "not-acceptable"}


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

    async def slidebank_error(request: Request, exc: Exception) -> JSONResponse:
        status, slug, title = next(
            (status, slug, title) for kind, status, slug, title in KINDS if isinstance(exc, kind)
        )
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

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        slug = HTTP_TITLES.get(exc.status_code, f"http-{exc.status_code}")
        title = slug.replace("-", " ").capitalize()
        response = problem(exc.status_code, slug, title, str(exc.detail), request.url.path)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    app.add_exception_handler(SlidebankError, slidebank_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
