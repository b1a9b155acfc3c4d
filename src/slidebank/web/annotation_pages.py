"""The page of a slide's annotation sets: each set with its history (who changed what, when),
a diff between two revisions, revert (the set's owner) and promotion to reference
(stewards), exports in every format, and the agreement between two sets.

Every figure and every change goes through ``services.annotating`` with the request's
principal: the policy refuses, this module only maps its refusals to pages (401, 403, 404).
Changes are HTML forms (with the session's CSRF token) that redirect back to the page with
a notice; a change refused for what it asks (a reference set is not reverted, a set is
promoted once) shows the page again with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response
from shapely.geometry import shape
from starlette.concurrency import run_in_threadpool

from slidebank.access.policy import Action, Principal
from slidebank.errors import Conflict, Forbidden, InvalidInput, NotFound, SignInRequired
from slidebank.services import annotating, browsing
from slidebank.services.repository import Repository
from slidebank.web.annotation_api import ExportFormat
from slidebank.web.auth import client_address, current_principal
from slidebank.web.pages import _templates, render_page
from slidebank.web.state import AppState, app_state

Asker = Annotated[Principal, Depends(current_principal)]
State = Annotated[AppState, Depends(app_state)]

EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
DIFF_ROWS = 200  # shown of each of added, removed and changed; the counts are complete
HISTORY_ROWS = 100  # the newest revisions of a set shown; the API lists them all
DEFAULT_DISTANCE = 10.0
MAX_DISTANCE = 10_000.0  # as the API's agreement route
NOT_COVERED = "not covered"


@dataclass
class PageQuery:
    """The page's query string, parsed leniently: problems become messages on the page
    (``diff_errors`` of the diff form, ``agreement_errors`` of the agreement form)."""

    diff_set: int | None = None
    start: int | None = None
    end: int | None = None
    reference: int | None = None
    test: int | None = None
    distance: float = DEFAULT_DISTANCE
    cells: bool = False
    diff_errors: list[str] = field(default_factory=list)
    agreement_errors: list[str] = field(default_factory=list)


def _whole(params: dict[str, str], name: str, errors: list[str], label: str) -> int | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        errors.append(f"{label}: {raw!r} is not a whole number")
        return None
    if value < 0:
        errors.append(f"{label}: must not be negative, got {value}")
        return None
    return value


def _distance(raw: str, errors: list[str]) -> float:
    if not raw:
        return DEFAULT_DISTANCE
    try:
        distance = float(raw)
    except ValueError:
        errors.append(f"Distance: {raw!r} is not a number of pixels")
        return DEFAULT_DISTANCE
    if not (math.isfinite(distance) and 0 <= distance <= MAX_DISTANCE):
        errors.append(f"Distance: must be between 0 and {MAX_DISTANCE:,.0f} px, got {raw}")
        return DEFAULT_DISTANCE
    return distance


def parse_page_query(params: dict[str, str]) -> PageQuery:
    query = PageQuery()
    diff, agreement = query.diff_errors, query.agreement_errors
    query.diff_set = _whole(params, "diff", diff, "Set")
    query.start = _whole(params, "start", diff, "From revision")
    query.end = _whole(params, "end", diff, "To revision")
    if query.diff_set is not None and not diff and (query.start is None or query.end is None):
        diff.append("give both revisions, from and to")
    query.reference = _whole(params, "reference", agreement, "Reference set")
    query.test = _whole(params, "test", agreement, "Test set")
    if (query.reference is None) != (query.test is None) and not agreement:
        agreement.append("choose a reference set and a test set")
    query.distance = _distance(params.get("distance", "").strip(), agreement)
    query.cells = params.get("cells", "") in ("1", "true", "on", "yes")
    return query


def _where(geometry: dict[str, Any]) -> str:
    """A geometry's bounding box, in whole level-0 pixels."""
    x0, y0, x1, y1 = shape(geometry).bounds
    if (x0, y0) == (x1, y1):
        return f"{x0:.0f}, {y0:.0f}"
    return f"{x0:.0f}, {y0:.0f} – {x1:.0f}, {y1:.0f}"


def _row(item: dict[str, Any]) -> dict[str, Any]:
    properties = item["properties"]
    return {
        "number": item["id"],
        "label": properties.get("label"),
        "shape": properties.get("shape"),
        "where": _where(item["geometry"]),
    }


def _what_changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changed = []
    if before["geometry"] != after["geometry"]:
        changed.append("geometry")
    old, new = before["properties"], after["properties"]
    for key in ("label", "shape", "confidence"):
        if old.get(key) != new.get(key):
            changed.append(key)
    others = {k for k in (*old, *new) if k not in ("label", "shape", "confidence")}
    if any(old.get(k) != new.get(k) for k in others):
        changed.append("properties")
    return changed


def diff_view(found: dict[str, Any]) -> dict[str, Any]:
    """The first ``DIFF_ROWS`` of each kind of change, and how many there are."""
    changed = [
        {
            "number": pair["after"]["id"],
            "before": _row(pair["before"]),
            "after": _row(pair["after"]),
            "what": _what_changed(pair["before"], pair["after"]),
        }
        for pair in found["changed"][:DIFF_ROWS]
    ]
    return {
        "start": found["start"],
        "end": found["end"],
        "counts": {kind: len(found[kind]) for kind in ("added", "removed", "changed")},
        "added": [_row(item) for item in found["added"][:DIFF_ROWS]],
        "removed": [_row(item) for item in found["removed"][:DIFF_ROWS]],
        "changed": changed,
    }


def agreement_view(result: dict[str, Any]) -> dict[str, Any]:
    """The service's result with the kappa's categories named (the last is "not covered")."""
    kappa = result["kappa"]
    if kappa is not None:
        names = [*kappa["labels"], NOT_COVERED]
        kappa = {
            **kappa,
            "categories": names,
            "rows": list(zip(names, kappa["confusion"], strict=True)),
        }
    return {**result, "kappa": kappa}


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def install(app: FastAPI) -> None:
    templates = _templates()

    def render(
        request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        return render_page(templates, request, name, context, status_code)

    def refused(request: Request, exc: Exception, public_id: str, message: str = "") -> Response:
        """The policy's refusal as a page: 401 (sign in), 403 or 404. A 404 says no more
        than that the slide is not there (as the slide's own page does)."""
        if isinstance(exc, SignInRequired):
            context = {
                "title": "Sign in required",
                "message": str(exc),
                "sign_in": f"/slides/{public_id}/annotations",
            }
            response = render(request, "404.html", context, 401)
            response.headers["WWW-Authenticate"] = 'Bearer realm="slidebank"'
            return response
        if isinstance(exc, Forbidden):
            return render(request, "404.html", {"title": "Not allowed", "message": str(exc)}, 403)
        message = message or f"There is no slide with id “{public_id}”."
        return render(request, "404.html", {"title": "Not found", "message": message}, 404)

    def here(public_id: str, **params: Any) -> str:
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return f"/slides/{public_id}/annotations" + (f"?{query}" if query else "")

    async def page(
        request: Request,
        state: AppState,
        asker: Principal,
        public_id: str,
        params: dict[str, str],
        problem: str | None = None,
        status_code: int = 200,
    ) -> Response:
        repository = state.repository
        query = parse_page_query(params)
        # The page's reads of annotations (the sets, their histories, a diff, an agreement)
        # go to the audit trail as the API's do.
        reads = annotating.Reads()
        try:
            record = await run_in_threadpool(browsing.show_slide, repository, asker, public_id)
            sets = await run_in_threadpool(
                annotating.list_sets, repository, asker, public_id, reads=reads
            )
            rights = await run_in_threadpool(annotating.slide_rights, repository, asker, public_id)
            histories = {
                s["id"]: await run_in_threadpool(
                    annotating.history, repository, asker, s["id"], reads=reads
                )
                for s in sets
            }
        except (NotFound, Forbidden) as exc:
            return refused(request, exc, public_id)
        dataset = record["dataset"]["short_name"]
        await state.note_read(request, Action.READ_METADATA, dataset, public_id)
        names = {s["id"]: s["name"] for s in sets}
        latest = {k: (v[-1]["number"] if v else 0) for k, v in histories.items()}
        diff, diff_errors = await _diff(repository, asker, query, names, latest, reads)
        agreement, agreement_errors = await _agreement(repository, asker, query, names, reads)
        await state.note_reads(request, Action.READ_ANNOTATIONS, reads.found)
        notice = _notice(params, names)
        chosen_reference, chosen_test = _choices(sets, query)
        context = {
            "title": f"Annotations · {record['id']}",
            "nav": "slides",
            "record": record,
            "sets": sets,
            "histories": {k: v[::-1][:HISTORY_ROWS] for k, v in histories.items()},
            "revisions": {k: len(v) for k, v in histories.items()},
            "latest": latest,
            "rights": rights,
            "export_formats": EXPORT_FORMATS,
            "query": query,
            "diff": diff,
            "diff_rows": DIFF_ROWS,
            "agreement": agreement,
            "chosen_reference": chosen_reference,
            "chosen_test": chosen_test,
            "notice": notice,
            "problem": problem,
            "diff_errors": diff_errors,
            "agreement_errors": agreement_errors,
            "open_set": query.diff_set if diff else _int(params.get("done_set")),
        }
        if (diff_errors or agreement_errors) and status_code == 200:
            status_code = 400
        return render(request, "annotation_sets.html", context, status_code)

    @app.get("/slides/{public_id}/annotations", include_in_schema=False)
    async def annotation_sets_page(
        request: Request, state: State, asker: Asker, public_id: str
    ) -> Response:
        return await page(request, state, asker, public_id, dict(request.query_params))

    async def change(
        request: Request,
        state: AppState,
        asker: Principal,
        public_id: str,
        set_id: int,
        act: Callable[[], dict[str, Any]],
        done: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> Response:
        """Run ``act`` on a set of this slide: back to the page with a notice, the page with
        the reason when the change is refused for what it asks, a refusal page otherwise."""
        try:
            sets = await run_in_threadpool(annotating.list_sets, state.repository, asker, public_id)
        except (NotFound, Forbidden) as exc:
            return refused(request, exc, public_id)
        if set_id not in {s["id"] for s in sets}:
            missing = f"Slide {public_id} has no annotation set {set_id}."
            return refused(request, NotFound(missing), public_id, missing)
        try:
            outcome = await run_in_threadpool(act)
        except Forbidden as exc:
            return refused(request, exc, public_id)
        except (Conflict, InvalidInput, NotFound) as exc:
            # The set is there (listed above): a NotFound now is a revision it lacks.
            status = 409 if isinstance(exc, Conflict) else 400
            params = {"done_set": str(set_id)}
            return await page(request, state, asker, public_id, params, str(exc), status)
        url = here(public_id, **done(outcome), done_set=set_id)
        return _see_other(f"{url}#set-{set_id}")

    @app.post("/slides/{public_id}/annotations/{set_id}/revert", include_in_schema=False)
    async def revert_set(
        request: Request,
        state: State,
        asker: Asker,
        public_id: str,
        set_id: int,
        to: Annotated[int, Form(ge=0)],
    ) -> Response:
        return await change(
            request,
            state,
            asker,
            public_id,
            set_id,
            lambda: annotating.revert(state.repository, asker, set_id, to),
            lambda revision: {"done": "reverted", "to": to, "revision": revision["number"]},
        )

    @app.post("/slides/{public_id}/annotations/{set_id}/promote", include_in_schema=False)
    async def promote_set(
        request: Request, state: State, asker: Asker, public_id: str, set_id: int
    ) -> Response:
        address = client_address(request)
        return await change(
            request,
            state,
            asker,
            public_id,
            set_id,
            lambda: annotating.promote(state.repository, asker, set_id, address),
            lambda _: {"done": "promoted"},
        )


async def _diff(
    repository: Repository,
    asker: Principal,
    query: PageQuery,
    names: dict[int, str],
    latest: dict[int, int],
    reads: annotating.Reads,
) -> tuple[dict[str, Any] | None, list[str]]:
    """The diff the query asks for (or None), and what is wrong with the request."""
    errors = list(query.diff_errors)
    set_id, start, end = query.diff_set, query.start or 0, query.end or 0
    if set_id is None or errors:
        return None, errors
    if set_id not in names:
        return None, [f"this slide has no annotation set {set_id}"]
    if max(start, end) > latest[set_id]:
        return None, [f"set {names[set_id]!r} has revisions 0 to {latest[set_id]}"]
    try:
        found = await run_in_threadpool(
            annotating.diff, repository, asker, set_id, start, end, reads=reads
        )
    except InvalidInput as exc:
        return None, [str(exc)]
    return {"set": set_id, "name": names[set_id], **diff_view(found)}, []


async def _agreement(
    repository: Repository,
    asker: Principal,
    query: PageQuery,
    names: dict[int, str],
    reads: annotating.Reads,
) -> tuple[dict[str, Any] | None, list[str]]:
    """The agreement the query asks for (or None), and what is wrong with the request."""
    errors = list(query.agreement_errors)
    reference, test = query.reference, query.test
    if reference is None or test is None or errors:
        return None, errors
    for set_id in (reference, test):
        if set_id not in names:
            return None, [f"this slide has no annotation set {set_id}"]
    try:
        result = await run_in_threadpool(
            lambda: annotating.compare(
                repository,
                asker,
                reference,
                test,
                distance=query.distance,
                cells=query.cells,
                reads=reads,
            )
        )
    except InvalidInput as exc:
        return None, [str(exc)]
    return agreement_view(result), []


def _choices(sets: list[dict[str, Any]], query: PageQuery) -> tuple[int | None, int | None]:
    """The agreement form's selection: the sets asked for, or else a reference set (the
    first set when there is none) against the first other set."""
    ordered = sorted(sets, key=lambda s: (s["kind"] != "reference", s["id"]))
    reference = query.reference
    if reference is None and ordered:
        reference = ordered[0]["id"]
    others = [s["id"] for s in sets if s["id"] != reference]
    test = query.test if query.test is not None else (others[0] if others else None)
    return reference, test


def _int(raw: str | None) -> int | None:
    return int(raw) if raw is not None and raw.isascii() and raw.isdigit() else None


def _notice(params: dict[str, str], names: dict[int, str]) -> str | None:
    """The notice after a change, from fixed wording and numbers only (a link cannot make
    the page say something else)."""
    done, set_id = params.get("done"), _int(params.get("done_set"))
    if set_id is None or set_id not in names:
        return None
    name = names[set_id]
    if done == "promoted":
        return f"“{name}” is now a reference set."
    to, revision = _int(params.get("to")), _int(params.get("revision"))
    if done == "reverted" and to is not None and revision is not None:
        return f"“{name}” reverted to revision {to}: its state is now revision {revision}."
    return None
