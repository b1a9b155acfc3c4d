"""The authorization matrix, generated from the application's route table: every route ×
every kind of principal × every dataset policy, on SQLite and PostgreSQL.

A route added later without a rule here fails ``test_every_route_has_a_rule`` until someone
says who may use it. The expected answers come from the rules below and
``tests.access_world.can_read_data``, written without calling the policy function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete
from starlette.routing import BaseRoute, Mount

from slidebank.access.policy import COMMAND_LINE
from slidebank.catalog.access_tables import Membership, TermsAcceptance
from slidebank.services import accounts
from slidebank.services.repository import open_repository
from slidebank.web.app import create_app
from slidebank.web.auth import CSRF_COOKIE, SESSION_COOKIE
from tests.access_world import DATASET, PASSWORD, PERSONAS, World, build_world, can_read_data
from tests.conftest import _fresh_postgres_database

POLICIES = ("open", "registered", "controlled")
# Credentials that must not work beyond what they are: the steward's expired token, the
# steward's read-only token, and the plain user's browser session without its CSRF token.
BAD_CREDENTIALS = ("expired-token", "read-token", "no-csrf")
SAFE = ("GET", "HEAD")
ALLOW = "allow"
REFUSED = (401, 403, 404)

# An expectation: ALLOW, or the refusal status, for (persona, policy).
Rule = Callable[[str, str], "str | int"]


def public(_: str, __: str) -> str | int:
    return ALLOW


def slide_data(persona: str, policy: str) -> str | int:
    # The slide is not featured, so a refusal does not admit that it exists.
    return ALLOW if can_read_data(persona, policy) else 404


def dataset_data(persona: str, policy: str) -> str | int:
    # The dataset is public (its landing page), so a refusal says so: 403.
    return ALLOW if can_read_data(persona, policy) else 403


def signed_in(persona: str, _: str) -> str | int:
    return 401 if persona == "anonymous" else ALLOW


def browser_session_only(persona: str, _: str) -> str | int:
    """Creating tokens: signed-in browsers only (every persona here uses a bearer token, which
    must not mint tokens; the session path is tested in tests/web/test_access_api.py)."""
    return 401 if persona == "anonymous" else 403


def signed_in_page(persona: str, _: str) -> str | int:
    return 303 if persona == "anonymous" else ALLOW  # redirected to /sign-in


def committee_decides(persona: str, _: str) -> str | int:
    """Deciding the grant holder's (already approved) request: the committee and admins get
    past the policy (and then 409); its author may see it but not decide (403)."""
    if persona == "anonymous":
        return 401
    if persona in ("committee", "admin"):
        return ALLOW
    return 403 if persona == "holder" else 404


def committee_revokes(persona: str, _: str) -> str | int:
    if persona == "anonymous":
        return 401
    return ALLOW if persona in ("committee", "admin") else 404


def request_seen(persona: str, _: str) -> str | int:
    if persona == "anonymous":
        return 401
    return ALLOW if persona in ("holder", "committee", "admin") else 404


def steward(persona: str, _: str) -> str | int:
    if persona == "anonymous":
        return 401
    return ALLOW if persona in ("steward", "admin") else 403


def steward_page(persona: str, policy: str) -> str | int:
    return 303 if persona == "anonymous" else steward(persona, policy)


def admin_page(persona: str, policy: str) -> str | int:
    return 303 if persona == "anonymous" else admin(persona, policy)


def admin(persona: str, _: str) -> str | int:
    if persona == "anonymous":
        return 401
    return ALLOW if persona == "admin" else 403


def annotator_writes(persona: str, policy: str) -> str | int:
    """Writing annotations: the dataset's annotators and stewards (and admins), once they may
    see the slide at all."""
    if not can_read_data(persona, policy):
        return 404
    if persona == "anonymous":
        return 401
    return ALLOW if persona in ("annotator", "steward", "admin") else 403


def owner_writes(persona: str, policy: str) -> str | int:
    """Changing the annotator's own set: the annotator (and admins); a steward is refused."""
    if not can_read_data(persona, policy):
        return 404
    if persona == "anonymous":
        return 401
    return ALLOW if persona in ("annotator", "admin") else 403


def steward_promotes(persona: str, policy: str) -> str | int:
    if not can_read_data(persona, policy):
        return 404
    if persona == "anonymous":
        return 401
    return ALLOW if persona in ("steward", "admin") else 403


def listing(_: str, __: str) -> str | int:
    return ALLOW  # always answered; what it lists is checked separately


PIXELS = "pixels"  # allowed answers must be images
LISTS = "lists"  # allowed answers list the slide iff the persona may read it
DICOM_LISTS = "dicom-lists"  # allowed answers list the DICOM study iff the persona may read it
DICOM_INSTANCE = "/dicomweb/studies/{study}/series/{series}/instances/{instance}"
WINDOW = "?x0=0&y0=0&x1=1000&y1=1000"
POINT = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10, 10]}}


@dataclass(frozen=True)
class Case:
    rule: Rule
    kind: str | None = None
    query: str = ""
    json: Any = None
    form: dict[str, str] | None = None
    status: tuple[int, ...] = ()  # the allowed answers' statuses when not any 2xx/3xx


RULES: dict[tuple[str, str], Case] = {
    ("GET", "/"): Case(public),
    ("GET", "/healthz"): Case(public),
    ("HEAD", "/healthz"): Case(public),
    ("GET", "/openapi.json"): Case(public),
    ("HEAD", "/openapi.json"): Case(public),
    ("GET", "/docs"): Case(public),
    ("GET", "/favicon.ico"): Case(public),
    ("GET", "/sign-in"): Case(public),
    ("POST", "/sign-in"): Case(public, form={"name": "plain", "password": PASSWORD}),
    ("POST", "/sign-out"): Case(public),
    # OpenID Connect is not configured in this application: 404 for everyone.
    ("GET", "/auth/oidc/start"): Case(public, status=(404,)),
    ("GET", "/auth/oidc/callback"): Case(public, status=(404,)),
    ("GET", "/api/datasets"): Case(public),
    ("GET", "/api/datasets/{name}"): Case(public),
    ("GET", "/datasets/{name}"): Case(public),
    ("GET", "/api/me"): Case(public),
    ("GET", "/iiif/3/{slide_id}"): Case(public),  # a redirect to info.json, which decides
    ("GET", "/slides"): Case(listing, LISTS),
    ("GET", "/api/slides"): Case(listing, LISTS),
    ("GET", "/api/slides/{slide_id}"): Case(slide_data),
    ("GET", "/api/slides/{slide_id}/deidentification"): Case(slide_data),
    ("GET", "/slides/{public_id}"): Case(slide_data),
    ("GET", "/api/slides/{slide_id}/thumbnail"): Case(slide_data, PIXELS),
    ("HEAD", "/api/slides/{slide_id}/thumbnail"): Case(slide_data),
    ("GET", "/api/slides/{slide_id}/associated/{name}"): Case(slide_data, PIXELS),
    ("HEAD", "/api/slides/{slide_id}/associated/{name}"): Case(slide_data),
    ("GET", "/api/slides/{slide_id}/region"): Case(
        slide_data, PIXELS, query="?x=0&y=0&width=64&height=64"
    ),
    ("HEAD", "/api/slides/{slide_id}/region"): Case(
        slide_data, query="?x=0&y=0&width=64&height=64"
    ),
    ("GET", "/deepzoom/{slide_id}.dzi"): Case(slide_data),
    ("HEAD", "/deepzoom/{slide_id}.dzi"): Case(slide_data),
    ("GET", "/deepzoom/{slide_id}_files/{level:int}/{column:int}_{row:int}.{extension}"): Case(
        slide_data, PIXELS
    ),
    ("HEAD", "/deepzoom/{slide_id}_files/{level:int}/{column:int}_{row:int}.{extension}"): Case(
        slide_data
    ),
    ("GET", "/iiif/3/{slide_id}/info.json"): Case(slide_data),
    ("GET", "/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality_format}"): Case(
        slide_data, PIXELS
    ),
    ("HEAD", "/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality_format}"): Case(slide_data),
    ("GET", "/api/datasets/{name}/cases"): Case(dataset_data),
    # Annotations: sets of the slide (the annotator owns "set_id"), the viewer's reads, edits.
    ("GET", "/api/slides/{slide_id}/annotation-sets"): Case(slide_data),
    ("POST", "/api/slides/{slide_id}/annotation-sets"): Case(
        annotator_writes, json={"name": "matrix"}, status=(201, 409)
    ),
    ("GET", "/api/slides/{slide_id}/annotations"): Case(slide_data, query=WINDOW),
    ("GET", "/api/slides/{slide_id}/annotations/density"): Case(
        slide_data, query=WINDOW + "&cell=100"
    ),
    ("GET", "/api/slides/{slide_id}/annotations/counts"): Case(slide_data, query=WINDOW),
    ("POST", "/api/slides/{slide_id}/annotations/import"): Case(annotator_writes, json=POINT),
    ("GET", "/api/annotation-sets/{set_id}"): Case(slide_data),
    ("GET", "/api/annotation-sets/{set_id}/export"): Case(slide_data),
    ("GET", "/api/annotation-sets/{set_id}/revisions"): Case(slide_data),
    ("GET", "/api/annotation-sets/{set_id}/diff"): Case(slide_data, query="?start=0&end=1"),
    ("GET", "/api/annotation-sets/{set_id}/agreement/{other_id}"): Case(slide_data),
    ("POST", "/api/annotation-sets/{set_id}/edits"): Case(owner_writes, json={"add": [POINT]}),
    ("POST", "/api/annotation-sets/{set_id}/revert"): Case(owner_writes, json={"to": 1}),
    ("POST", "/api/annotation-sets/{set_id}/promote"): Case(steward_promotes, status=(200, 409)),
    # The annotation sets' page and its forms: a change redirects back to the page (303);
    # promoting the set that is a reference already shows the page with the reason (409).
    ("GET", "/slides/{public_id}/annotations"): Case(slide_data),
    ("POST", "/slides/{public_id}/annotations/{set_id}/revert"): Case(
        owner_writes, form={"to": "1"}, status=(303,)
    ),
    ("POST", "/slides/{public_id}/annotations/{set_id}/promote"): Case(
        steward_promotes, status=(303, 409)
    ),
    ("GET", "/api/datasets/{name}/labels"): Case(dataset_data),
    ("PUT", "/api/datasets/{name}/labels"): Case(
        steward, json=[{"name": "Tumor", "color": "#aa0000"}]
    ),
    # Downloads: the slide's or the dataset's stored DICOM files.
    ("GET", "/api/slides/{slide_id}/download"): Case(slide_data),
    ("GET", "/api/slides/{slide_id}/manifest"): Case(slide_data),
    ("GET", "/api/slides/{slide_id}/files/{name}"): Case(slide_data),
    ("GET", "/api/datasets/{name}/download"): Case(dataset_data),
    ("GET", "/api/datasets/{name}/manifest"): Case(dataset_data),
    ("GET", "/api/datasets/{name}/cases/{pseudonym}"): Case(slide_data),
    ("GET", "/api/me/tokens"): Case(signed_in),
    ("POST", "/api/me/tokens"): Case(
        browser_session_only, json={"scope": "read", "expires_days": 1}
    ),
    ("DELETE", "/api/me/tokens/{key}"): Case(signed_in),
    ("GET", "/account"): Case(signed_in_page),
    ("POST", "/account/tokens"): Case(browser_session_only, form={"scope": "read", "days": "1"}),
    ("POST", "/account/tokens/{key}/revoke"): Case(signed_in),
    ("POST", "/api/datasets/{name}/terms/accept"): Case(signed_in),
    ("POST", "/datasets/{name}/accept-terms"): Case(signed_in),
    # Past the policy, a request may still be refused for what it says (400: the dataset is
    # not controlled; 409: one is pending): those count as allowed here.
    ("POST", "/api/datasets/{name}/access-requests"): Case(
        signed_in,
        status=(201, 400, 409),
        json={
            "project_title": "P",
            "purpose": "Q",
            "institution": "I",
            "duration_days": 10,
            "accept_terms": True,
        },
    ),
    ("POST", "/datasets/{name}/request"): Case(
        signed_in,
        status=(303, 400, 409),
        form={
            "project_title": "P",
            "purpose": "Q",
            "institution": "I",
            "duration_days": "10",
            "accept_terms": "true",
        },
    ),
    ("GET", "/api/access-requests"): Case(signed_in),
    ("GET", "/api/access-requests/{request_id}"): Case(request_seen),
    ("GET", "/api/committee/requests"): Case(signed_in),
    ("GET", "/committee"): Case(signed_in_page),
    ("POST", "/api/access-requests/{request_id}/decision"): Case(
        committee_decides, json={"decision": "approve"}, status=(409,)
    ),
    ("POST", "/committee/requests/{request_id}"): Case(
        committee_decides, form={"decision": "approve"}, status=(409,)
    ),
    ("POST", "/api/grants/{grant_id}/revoke"): Case(
        committee_revokes, json={"reason": "again"}, status=(409,)
    ),
    ("POST", "/committee/grants/{grant_id}/revoke"): Case(
        committee_revokes, form={"reason": "again"}, status=(409,)
    ),
    ("PUT", "/api/datasets/{name}/policy"): Case(steward),  # body: the current policy
    ("GET", "/api/datasets/{name}/members"): Case(steward),
    # Giving and taking the viewer role of "plain" (who has none): allowed for stewards.
    ("POST", "/api/datasets/{name}/members"): Case(
        steward, json={"user": "plain", "role": "viewer"}
    ),
    ("DELETE", "/api/datasets/{name}/members/{user}/{role}"): Case(steward),
    ("POST", "/datasets/{name}/manage"): Case(steward),  # form: the current policy
    ("GET", "/api/datasets/{name}/audit"): Case(steward),
    ("GET", "/api/audit"): Case(admin),
    ("GET", "/datasets/{name}/audit"): Case(steward_page),
    ("GET", "/audit"): Case(admin_page),
    # DICOMweb: searches list what the persona may read; reads of one study, series or
    # instance are slide data; storing is for the dataset's stewards (no body here: 415).
    ("GET", "/dicomweb/studies"): Case(listing, DICOM_LISTS),
    ("GET", "/dicomweb/series"): Case(listing, DICOM_LISTS),
    ("GET", "/dicomweb/instances"): Case(listing, DICOM_LISTS),
    ("GET", "/dicomweb/studies/{study}/series"): Case(listing, DICOM_LISTS),
    ("GET", "/dicomweb/studies/{study}/instances"): Case(listing, DICOM_LISTS),
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances"): Case(listing, DICOM_LISTS),
    ("GET", "/dicomweb/studies/{study}"): Case(slide_data),
    ("GET", "/dicomweb/studies/{study}/series/{series}"): Case(slide_data),
    ("GET", DICOM_INSTANCE): Case(slide_data),
    ("GET", "/dicomweb/studies/{study}/metadata"): Case(slide_data),
    ("GET", "/dicomweb/studies/{study}/series/{series}/metadata"): Case(slide_data),
    ("GET", DICOM_INSTANCE + "/metadata"): Case(slide_data),
    ("GET", DICOM_INSTANCE + "/frames/{frames}"): Case(slide_data),
    ("GET", DICOM_INSTANCE + "/bulkdata/{tag}"): Case(slide_data),
    ("GET", DICOM_INSTANCE + "/frames/{frames}/rendered"): Case(slide_data, PIXELS),
    ("GET", DICOM_INSTANCE + "/rendered"): Case(slide_data, PIXELS),
    ("GET", DICOM_INSTANCE + "/thumbnail"): Case(slide_data, PIXELS),
    ("GET", "/dicomweb/studies/{study}/series/{series}/thumbnail"): Case(slide_data, PIXELS),
    ("GET", "/dicomweb/studies/{study}/thumbnail"): Case(slide_data, PIXELS),
    ("POST", "/dicomweb/studies"): Case(steward, query="?dataset=demo", status=(415,)),
    ("POST", "/dicomweb/studies/{study}"): Case(steward, query="?dataset=demo", status=(415,)),
}
# Static files (stylesheet, OpenSeadragon, Swagger UI) are public; one file of each mount.
MOUNTS = {
    "/static/app": "slidebank.css",
    "/static/vendor/openseadragon": "openseadragon.min.js",
    "/static/vendor/swagger-ui": "swagger-ui.css",
}


def routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, including those of included routers."""

    def flat(items: list[BaseRoute]) -> Iterator[BaseRoute]:
        for route in items:
            original = getattr(route, "original_router", None)  # FastAPI's included routers
            if original is not None:
                yield from flat(original.routes)
            else:
                yield route

    for route in flat(app.routes):
        if isinstance(route, Mount):
            yield "MOUNT", route.path
            continue
        for method in sorted(getattr(route, "methods", None) or ()):
            yield method, getattr(route, "path", "")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, slides_dir: Path
) -> Iterator[World]:
    home = tmp_path_factory.mktemp("matrix") / "repo"
    dicom = slides_dir / "synthetic" / "boxes-dicom"  # for the DICOMweb routes
    if request.param == "sqlite":
        yield build_world(home, None, dicom)
        return
    admin_url = request.getfixturevalue("postgres_admin")
    yield from (build_world(home, url, dicom) for url in _fresh_postgres_database(admin_url))


def test_every_route_has_a_rule(world: World) -> None:
    app = create_app(world.settings)
    missing = [
        f"{method} {path}"
        for method, path in routes(app)
        if (method == "MOUNT" and path not in MOUNTS)
        or (method != "MOUNT" and (method, path) not in RULES)
    ]
    assert not missing, "routes without an access rule in this matrix: " + ", ".join(missing)


def _url(path: str, world: World, persona: str, case: Case) -> str:
    values = {
        "slide_id": world.slide_id,
        "public_id": world.slide_id,
        "name": (
            world.associated
            if "/associated/" in path
            else world.stored_file
            if "/files/" in path
            else DATASET
        ),
        "pseudonym": world.pseudonym,
        "level:int": "0",
        "column:int": "0",
        "row:int": "0",
        "extension": "jpeg",
        "region": "full",
        "size": "256,",
        "rotation": "0",
        "quality_format": "default.jpg",
        "request_id": str(world.request_ids["holder"]),
        "grant_id": str(world.grant_ids["revoked"]),
        "key": world.spare_keys.get(persona, "000000000000"),
        "user": "plain",
        "role": "viewer",
        "study": world.dicom[0],
        "series": world.dicom[1],
        "instance": world.dicom[2],
        "frames": "1",
        "set_id": str(world.annotation_sets["promote" if path.endswith("/promote") else "own"]),
        "other_id": str(world.annotation_sets["promote"]),
        "tag": "7FE00010",
    }
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no test value for a parameter of {path}"
    return path + case.query


@pytest.mark.parametrize("policy", POLICIES)
def test_matrix(world: World, policy: str) -> None:
    repository = open_repository(world.settings)
    try:
        accounts.set_policy(repository, COMMAND_LINE, DATASET, policy)
        # Earlier runs accepted the terms through the routes that do so: start again.
        with repository.catalogue.transaction() as session:
            session.execute(
                delete(TermsAcceptance).where(TermsAcceptance.user_id != world.user_ids["holder"])
            )
            # ...and the role the members route gives "plain".
            session.execute(delete(Membership).where(Membership.user_id == world.user_ids["plain"]))
    finally:
        repository.close()
    failures: list[str] = []
    checked = 0
    with TestClient(create_app(world.settings), follow_redirects=False) as client:
        # Reads first, then what changes something (accepting terms changes what is allowed).
        # Accepting terms goes last of all, so that every write before it meets the policy's
        # readers as can_read_data describes them.
        ordered = sorted(
            routes(client.app),  # type: ignore[arg-type]
            key=lambda r: (r[0] not in ("GET", "HEAD", "MOUNT"), r[1].endswith("/terms/accept")),
        )
        for method, path in ordered:
            if method == "MOUNT":
                response = client.get(f"{path}/{MOUNTS[path]}")
                if response.status_code != 200:
                    failures.append(f"GET {path}/{MOUNTS[path]}: {response.status_code}")
                continue
            case = RULES[(method, path)]
            for persona in (*PERSONAS, *BAD_CREDENTIALS):
                checked += 1
                problem = _check(client, world, policy, persona, method, path, case)
                if problem:
                    failures.append(f"{policy} · {persona:9} · {method} {path}: {problem}")
    assert checked > 400
    assert not failures, f"{len(failures)} of {checked} cases wrong:\n" + "\n".join(failures)


def _expected(case: Case, persona: str, policy: str, method: str, path: str) -> str | int:
    """What a persona or a bad credential should get."""
    if persona == "expired-token":
        # Refused wherever who asks matters; public routes may answer without looking.
        return "public-or-401"
    if persona in ("read-token", "no-csrf"):
        like = "steward" if persona == "read-token" else "plain"
        if method in SAFE or path == "/sign-in":
            return case.rule(like, policy)
        if path == "/sign-out" and persona == "read-token":
            return ALLOW  # nothing to do for a token: no session to end
        # A read-only token writes nothing, a cookie without its CSRF token neither; where the
        # full credential would be refused anyway, that refusal comes first.
        full = case.rule(like, policy)
        return full if persona == "read-token" and full in (403, 404) else 403
    return case.rule(persona, policy)


def _check(
    client: TestClient,
    world: World,
    policy: str,
    persona: str,
    method: str,
    path: str,
    case: Case,
) -> str | None:
    headers = {}
    if persona == "expired-token":
        headers["Authorization"] = f"Bearer {world.expired_token}"
    elif persona == "read-token":
        headers["Authorization"] = f"Bearer {world.read_token}"
    elif persona == "no-csrf":
        client.cookies.set(SESSION_COOKIE, world.session_secret)
    elif persona != "anonymous":
        headers["Authorization"] = f"Bearer {world.tokens[persona]}"
    url = _url(path, world, persona, case)
    body: dict[str, Any] = {}
    if case.json is not None or path.endswith("/policy"):
        body["json"] = case.json if case.json is not None else {"policy": policy}
    if case.form is not None:
        body["data"] = case.form
    if path.endswith("/manage"):
        body["data"] = {"policy": policy}
    if path == "/sign-in" and method == "POST":
        client.cookies.set(CSRF_COOKIE, "matrix-csrf", path="/sign-in")
        body["data"] = {**(case.form or {}), "csrf_token": "matrix-csrf"}
    response = client.request(method, url, headers=headers, **body)
    client.cookies.clear()
    status = response.status_code
    expected = _expected(case, persona, policy, method, path)
    if expected == "public-or-401":
        if case.rule is public and (status == 401 or status < 400 or status in case.status):
            return None
        expected = 401
    if expected == ALLOW:
        wanted = case.status
        if (wanted and status not in wanted) or (not wanted and status >= 400):
            return f"expected allowed ({wanted or '2xx/3xx'}), got {status} {response.text[:160]}"
        if case.kind == PIXELS and method == "GET":
            if not response.headers.get("content-type", "").startswith("image/"):
                return f"allowed but not an image: {response.headers.get('content-type')}"
            if policy != "open" and "private" not in response.headers.get("cache-control", ""):
                return f"pixels of a {policy} dataset cached publicly"
        if case.kind == DICOM_LISTS:
            listed = world.dicom[0] in response.text
            reader = {"read-token": "steward", "no-csrf": "plain"}.get(persona, persona)
            if listed != can_read_data(reader, policy):
                return f"DICOM study {'listed' if listed else 'not listed'} for this persona"
        if case.kind == LISTS:
            listed = world.slide_id in response.text
            reader = {"read-token": "steward", "no-csrf": "plain"}.get(persona, persona)
            if listed != can_read_data(reader, policy):
                return f"slide {'listed' if listed else 'not listed'} for this persona"
        return None
    if status != expected:
        return f"expected {expected}, got {status} {response.text[:160]}"
    if response.headers.get("content-type", "").startswith("image/"):
        return "refused, yet the body is an image"
    # The problem document echoes the request's own path ("instance"); beyond that, nothing.
    if world.pseudonym in response.text.replace(url.split("?")[0], ""):
        return "refused, yet the body names the case"
    return None
