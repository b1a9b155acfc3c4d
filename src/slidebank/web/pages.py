"""The web interface: server-rendered pages (Jinja2) and the OpenSeadragon slide viewer.

Pages read the catalogue through the same service functions as the CLI and the JSON API,
in-process (no HTTP round trip). The service calls are synchronous and hit the database, so
the page routes are plain ``def``: FastAPI runs them in its threadpool.

Static files: ``/static/app/`` is this package's CSS and JavaScript;
``/static/vendor/openseadragon/`` is OpenSeadragon's npm build (``npm ci --prefix
src/slidebank/web/static``, run by ``make install``). When that build is missing the slide
page says so instead of failing silently.
"""

from __future__ import annotations

import ast
import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from slidebank.access.policy import Action, Principal
from slidebank.catalog.queries import (
    MAX_PAGE,
    SOURCE_FORMAT,
    TEXT_FILTER_FIELDS,
    SlideFilter,
    slide_filter,
)
from slidebank.errors import Forbidden, InvalidInput, NotFound, SlidebankError
from slidebank.services import annotating, browsing
from slidebank.web import problems
from slidebank.web.auth import SCOPE_KEY, credential, current_principal
from slidebank.web.state import AppState

Asker = Annotated[Principal, Depends(current_principal)]

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
APP_ASSETS = STATIC_DIR / "app"
# OpenSeadragon's npm build: the script and the images of its navigation buttons.
VENDOR_OPENSEADRAGON = STATIC_DIR / "node_modules" / "openseadragon" / "build" / "openseadragon"
INSTALL_HINT = "make install"
NPM_PREFIX = "src/slidebank/web/static"  # as the Makefile names it

PAGE_SIZE = 48
MAX_PAGE_SIZE = 500
THUMB_BOX = (256, 192)  # the grid's thumbnail box, CSS px

# OpenSeadragon 6 adds one <style> element to the page (a focus outline rule for touch
# screens); this is the hash of its text. Another OpenSeadragon version may change it: the
# browser test then fails on the console error that names the new hash.
OPENSEADRAGON_STYLE_HASH = "'sha256-9xTiqzfwFaL2SGb1rmr8gysEwVVjIvqWAgmZgqFqpEE='"
# Pages load scripts, styles and images only from this server. OpenSeadragon sets element
# styles from script (allowed by style-src 'self'), and draws tiles from blob:/data: URLs.
CONTENT_SECURITY_POLICY = (
    f"default-src 'self'; img-src 'self' data: blob:; style-src 'self' {OPENSEADRAGON_STYLE_HASH}; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="6" fill="#2b2d31"/>'
    '<rect x="5" y="11" width="22" height="10" rx="2" fill="#e9e4ec"/>'
    '<circle cx="13" cy="16" r="3.2" fill="#b0508a"/>'
    '<circle cx="19.5" cy="15.5" r="2.4" fill="#7a4aa8"/>'
    "</svg>"
)

# (query parameter, label) in the order of the filter form; the parameters are the API's
# (``catalog.queries.TEXT_FILTER_FIELDS``).
TEXT_FILTERS: list[tuple[str, str]] = [(name, name.capitalize()) for name in TEXT_FILTER_FIELDS]
NUMBER_FILTERS = ("mpp_min", "mpp_max")
FORM_FIELDS = ("dataset", *TEXT_FILTER_FIELDS, *NUMBER_FILTERS)


def _templates() -> Jinja2Templates:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html", "xml"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["thousands"] = lambda value: f"{value:,}".replace(",", "\u202f")
    environment.filters["filesize"] = filesize
    environment.filters["mpp"] = lambda value: "—" if value is None else f"{value:.4g} µm/px"
    environment.filters["vendor"] = vendor_name
    return Jinja2Templates(env=environment)


# How the vendors OpenSlide detects are spelled for people (the catalogue keeps OpenSlide's
# names, which the filters and the API use); DICOM sources give their Manufacturer as is.
VENDOR_NAMES = {
    "aperio": "Aperio",
    "dicom": "DICOM",
    "generic-tiff": "Generic TIFF",
    "hamamatsu": "Hamamatsu",
    "leica": "Leica",
    "mirax": "3DHISTECH (MIRAX)",
    "ome": "OME-TIFF",
    "philips": "Philips",
    "sakura": "Sakura",
    "synthetic": "Synthetic",
    "trestle": "Trestle",
    "ventana": "Ventana",
    "zeiss": "Zeiss",
}
# Values scanners write when they know nothing: not worth a row of the metadata panel.
PLACEHOLDERS = frozenset({"", "?", "-", "—", "unknown", "none", "null", "n/a", "na"})


def vendor_name(vendor: str | None) -> str | None:
    if vendor is None or is_placeholder(vendor):
        return None
    return VENDOR_NAMES.get(vendor.lower(), vendor)


def is_placeholder(value: str) -> bool:
    return value.strip().lower() in PLACEHOLDERS


def property_text(value: str) -> str:
    """A scanner property for people: a list (stored in Python's spelling, as DICOM's
    multi-valued attributes are) as comma-separated values, placeholders in it left out."""
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return text
    try:
        items = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    if not isinstance(items, list | tuple):
        return text
    return ", ".join(str(item) for item in items if not is_placeholder(str(item)))


def shown_properties(properties: dict[str, str]) -> list[tuple[str, str]]:
    """The scanner properties worth showing, by name: placeholder values left out."""
    shown = ((key, property_text(str(value))) for key, value in sorted(properties.items()))
    return [(key, text) for key, text in shown if not is_placeholder(text)]


def physical_size(width: int, height: int, mpp: list[float] | None) -> str | None:
    """The slide's scanned area: in mm from 1 mm up, else in µm (a 16 px slide at 0.5 µm
    per pixel is 8 × 8 µm, not "0.0 × 0.0 mm")."""
    if not mpp:
        return None
    x, y = width * mpp[0], height * mpp[1]
    if max(x, y) >= 1000:
        return f"{x / 1000:.1f} × {y / 1000:.1f} mm"
    digits = 1 if max(x, y) < 100 else 0
    return f"{x:.{digits}f} × {y:.{digits}f} µm"


def slide_panel(record: dict[str, Any]) -> dict[str, Any]:
    """What the slide page's metadata panel shows beyond the record itself.

    A de-identified slide's "source name" is its pseudonym (the source's file name is not
    kept): it is shown once, as the slide's identifier, never as a file name."""
    image = record["image"]
    slide = record["slide"]
    deidentified = SOURCE_FORMAT in image["properties"]
    identifier = slide["identifier"] or (image["source_name"] if deidentified else None)
    source_file = image["source_name"]
    if deidentified or source_file == identifier:
        source_file = None
    staining = slide["staining"]
    return {
        "slide_identifier": identifier,
        "slide_has_facts": bool(identifier or any(staining.values()) or slide["observations"]),
        "source_file": source_file,
        "physical_size": physical_size(image["width"], image["height"], image["mpp"]),
        "properties": shown_properties(image["properties"]),
    }


def filesize(size: int | None) -> str:
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def thumbnail_box(width: int, height: int) -> tuple[int, int]:
    """The thumbnail's size within the grid's box, keeping the slide's aspect ratio."""
    if width <= 0 or height <= 0:
        return THUMB_BOX
    scale = min(THUMB_BOX[0] / width, THUMB_BOX[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class SlideQuery:
    """The slide browser's query string, parsed leniently: problems become messages."""

    values: dict[str, str]
    where: SlideFilter
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def limit(self) -> int:
        return self.where.limit

    @property
    def offset(self) -> int:
        return self.where.offset

    def url(self, **changes: str | int | None) -> str:
        """``/slides`` with these filters and the given parameters changed."""
        params: dict[str, str | int] = {k: v for k, v in self.values.items() if v}
        if self.limit != PAGE_SIZE:
            params["limit"] = self.limit
        for key, value in changes.items():
            if value in (None, "", 0) and key in ("offset", *FORM_FIELDS):
                params.pop(key, None)
            elif value is not None:
                params[key] = value
        return "/slides" + (f"?{urlencode(params)}" if params else "")


def _number(raw: str, name: str, errors: dict[str, str]) -> float | None:
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        errors[name] = f"{raw!r} is not a number (µm per pixel, e.g. 0.25)"
        return None
    if not math.isfinite(value) or value < 0:
        errors[name] = f"{raw!r} must be a positive number of µm per pixel"
        return None
    return value


def _integer(raw: str, name: str, default: int, low: int, high: int, errors: dict[str, str]) -> int:
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        errors[name] = f"{raw!r} is not a whole number"
        return default
    if not low <= value <= high:
        errors[name] = f"must be between {low} and {high:,}, got {value}"
        return default
    return value


def parse_slide_query(params: dict[str, str]) -> SlideQuery:
    values = {name: params.get(name, "").strip() for name in FORM_FIELDS}
    errors: dict[str, str] = {}
    mpp_min = _number(values["mpp_min"], "mpp_min", errors)
    mpp_max = _number(values["mpp_max"], "mpp_max", errors)
    if mpp_min is not None and mpp_max is not None and mpp_min > mpp_max:
        errors["mpp_max"] = "must not be below the minimum"
    limit = _integer(params.get("limit", ""), "limit", PAGE_SIZE, 1, MAX_PAGE_SIZE, errors)
    offset = _integer(params.get("offset", ""), "offset", 0, 0, MAX_PAGE * 1000, errors)
    texts = {name: values[name] for name in TEXT_FILTER_FIELDS}
    where = slide_filter(values["dataset"], texts, mpp_min, mpp_max, limit, offset)
    return SlideQuery(values=values, where=where, errors=errors)


def render_page(
    templates: Jinja2Templates,
    request: Request,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> Response:
    """A page with the security headers, knowing who is signed in (for the top bar and the
    CSRF token of its forms)."""
    found = request.scope.get(SCOPE_KEY)
    context = {
        "asker": found.principal if found else None,
        "csrf_token": found.csrf_token if found else None,
        **context,
    }
    return _secured(templates.TemplateResponse(request, name, context, status_code=status_code))


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.slidebank
    return state


def _viewer_assets_present() -> bool:
    return (VENDOR_OPENSEADRAGON / "openseadragon.min.js").is_file()


def _secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def install(app: FastAPI) -> None:
    """Add the pages (left out of the OpenAPI schema) and the static files to ``app``."""
    templates = _templates()
    templates.env.globals["favicon_href"] = "data:image/svg+xml," + quote(FAVICON_SVG)

    def render(
        request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        return render_page(templates, request, name, context, status_code)

    def not_found(request: Request, message: str) -> Response:
        return render(request, "404.html", {"title": "Not found", "message": message}, 404)

    async def not_found_page(request: Request, message: str) -> Response:
        # No route ran, so nobody has looked at the credentials yet: the top bar should still
        # show who is signed in. A credential that fails its checks is just not shown.
        with contextlib.suppress(SlidebankError):
            await credential(request)
        return not_found(request, message)

    problems.use_html_pages(app, not_found_page)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def datasets_page(request: Request, asker: Asker) -> Response:
        datasets = browsing.list_datasets(_state(request).repository)
        return render(
            request,
            "datasets.html",
            {"title": "Datasets", "datasets": datasets, "nav": "datasets"},
        )

    @app.get("/slides", response_class=HTMLResponse, include_in_schema=False)
    async def slides_page(request: Request, asker: Asker) -> Response:
        state = _state(request)
        repository = state.repository
        query = parse_slide_query(dict(request.query_params))
        datasets = await run_in_threadpool(browsing.list_datasets, repository)
        slides: list[dict[str, Any]] = []
        total = 0
        if not query.errors:
            try:
                slides, total = await run_in_threadpool(
                    browsing.page_of_slides, repository, asker, query.where
                )
            except InvalidInput as exc:
                query.errors["query"] = str(exc)
        for name in {slide["dataset"] for slide in slides}:
            await state.note_read(request, Action.READ_METADATA, name, "slide list")
        for slide in slides:
            slide["thumb"] = thumbnail_box(slide["width"], slide["height"])
        context = {
            "title": "Slides",
            "nav": "slides",
            "query": query,
            "slides": slides,
            "datasets": datasets,
            "text_filters": TEXT_FILTERS,
            "page_size": PAGE_SIZE,
            "total": total,
            "has_next": query.offset + len(slides) < total,
            "has_previous": query.offset > 0,
            "filtered": any(query.values.values()),
        }
        return render(request, "slides.html", context, 400 if query.errors else 200)

    @app.get("/slides/{public_id}", response_class=HTMLResponse, include_in_schema=False)
    async def slide_page(request: Request, asker: Asker, public_id: str) -> Response:
        state = _state(request)
        try:
            record = await run_in_threadpool(
                browsing.show_slide, state.repository, asker, public_id
            )
        except NotFound:
            return not_found(request, f"There is no slide with id “{public_id}”.")
        except Forbidden as exc:
            return render(request, "404.html", {"title": "Not allowed", "message": str(exc)}, 403)
        await state.note_read(
            request, Action.READ_METADATA, record["dataset"]["short_name"], public_id
        )
        image = record["image"]
        mpp = image["mpp"]
        viewer = {
            "id": record["id"],
            "tileSource": f"/deepzoom/{record['id']}.dzi",
            "prefixUrl": "/static/vendor/openseadragon/images/",
            "mpp": mpp[0] if mpp else None,
            "objectivePower": image["objective_power"],
            "width": image["width"],
            "height": image["height"],
        }
        sets, classes, may_draw = await run_in_threadpool(
            annotating.readable_slide_sets, state.repository, asker, public_id
        )
        found = request.scope.get(SCOPE_KEY)
        # For static/app/annotations.js: what to draw, in which colours, and whether (and as
        # whom) the asker may draw; the CSRF token goes in the X-CSRF-Token header of writes.
        annotations = {
            "slide": record["id"],
            "width": image["width"],
            "height": image["height"],
            "sets": sets,
            "classes": [{"name": c["name"], "color": c["color"]} for c in classes],
            "mayDraw": may_draw and asker.user_id is not None,
            "user": None if asker.user_id is None else {"id": asker.user_id, "name": asker.name},
            "csrfToken": found.csrf_token if found else None,
        }
        context = {
            "title": f"{record['id']} · {record['dataset']['short_name']}",
            "nav": "slides",
            "record": record,
            "image": image,
            "viewer": viewer,
            "annotations": annotations,
            "panel": slide_panel(record),
            "assets_present": _viewer_assets_present(),
            "install_hint": INSTALL_HINT,
            "npm_prefix": NPM_PREFIX,
        }
        return render(request, "slide.html", context)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(
            FAVICON_SVG,
            media_type="image/svg+xml",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    # Only OpenSeadragon's build folder is served, not node_modules. check_dir=False lets the
    # application start without the npm build; the slide page explains what is missing.
    app.mount(
        "/static/vendor/openseadragon",
        StaticFiles(directory=VENDOR_OPENSEADRAGON, check_dir=False),
        name="openseadragon",
    )
    app.mount("/static/app", StaticFiles(directory=APP_ASSETS), name="static")
