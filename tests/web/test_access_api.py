"""Sign-in, CSRF, tokens and the audit of reads, through the HTTP application."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from slidebank.access.policy import COMMAND_LINE
from slidebank.services import accounts
from slidebank.services.repository import open_repository
from slidebank.web.app import create_app
from slidebank.web.auth import CSRF_COOKIE, SESSION_COOKIE
from tests.access_world import DATASET, PASSWORD, World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("access-api") / "repo", None)


@pytest.fixture
def web(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings), follow_redirects=False) as client:
        yield client


def sign_in(web: TestClient, name: str, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token (from a page)."""
    form = web.get("/sign-in")
    csrf = form.cookies[CSRF_COOKIE]
    done = web.post("/sign-in", data={"name": name, "password": password, "csrf_token": csrf})
    assert done.status_code == 303, done.text
    page: str = web.get("/account").text
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def test_the_sign_in_form_needs_its_csrf_pair(web: TestClient) -> None:
    web.get("/sign-in")
    refused = web.post(
        "/sign-in", data={"name": "plain", "password": PASSWORD, "csrf_token": "forged"}
    )
    assert refused.status_code == 403
    assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")


def test_session_cookie_flags(web: TestClient) -> None:
    csrf = web.get("/sign-in").cookies[CSRF_COOKIE]
    done = web.post("/sign-in", data={"name": "plain", "password": PASSWORD, "csrf_token": csrf})
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # plain HTTP here; over TLS the cookie is Secure


def test_session_cookie_is_secure_over_tls(world: World) -> None:
    with TestClient(
        create_app(world.settings), base_url="https://testserver", follow_redirects=False
    ) as web:
        csrf = web.get("/sign-in").cookies[CSRF_COOKIE]
        done = web.post(
            "/sign-in", data={"name": "plain", "password": PASSWORD, "csrf_token": csrf}
        )
        assert "secure" in done.headers["set-cookie"].lower()


def test_cookie_requests_that_change_something_need_the_csrf_token(web: TestClient) -> None:
    csrf = sign_in(web, "plain")
    body = {"scope": "read", "expires_days": 1}
    refused = web.post("/api/me/tokens", json=body)
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    forged = web.post("/api/me/tokens", json=body, headers={"X-CSRF-Token": "forged"})
    assert forged.status_code == 403
    made = web.post("/api/me/tokens", json=body, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201
    token = made.json()["token"]
    # The new token works on its own, with no cookie and no CSRF token.
    web.cookies.clear()
    me = web.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["name"] == "plain" and me["scope"] == "read"
    # Without the cookie, nobody is signed in: the account form refuses.
    refused_form = web.post("/account/tokens", data={"scope": "read", "days": "1"})
    assert refused_form.status_code == 401


def test_bad_bearer_tokens_are_refused_not_ignored(web: TestClient) -> None:
    for header in ("Bearer sbk_000000000000_" + "x" * 43, "Basic abc", "Bearer "):
        response = web.get("/api/slides", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["type"].endswith("/sign-in-required")


def test_a_read_token_cannot_write(web: TestClient, world: World) -> None:
    repository = open_repository(world.settings)
    try:
        token = accounts.create_token(repository, COMMAND_LINE, "steward", "read", 1).token
    finally:
        repository.close()
    response = web.put(
        f"/api/datasets/{DATASET}/policy",
        json={"policy": "open"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403 and "scope" in response.json()["detail"]


def test_sign_in_is_rate_limited_per_account_and_address(web: TestClient) -> None:
    statuses = []
    for _ in range(6):
        csrf = web.get("/sign-in").cookies[CSRF_COOKIE]
        response = web.post(
            "/sign-in", data={"name": "annotator", "password": "not it at all", "csrf_token": csrf}
        )
        statuses.append(response.status_code)
    assert statuses == [401] * 5 + [429]
    assert int(response.headers["retry-after"]) > 0


def test_reads_of_data_are_audited_per_minute(web: TestClient, world: World) -> None:
    steward = {"Authorization": f"Bearer {world.tokens['steward']}"}
    holder = {"Authorization": f"Bearer {world.tokens['holder']}"}
    for column, row in ((0, 0), (1, 0), (0, 1)):
        tile = web.get(f"/deepzoom/{world.slide_id}_files/9/{column}_{row}.jpeg", headers=holder)
        assert tile.status_code == 200, tile.text
        assert tile.headers["cache-control"].startswith("private")
    assert web.get(f"/api/slides/{world.slide_id}", headers=holder).status_code == 200
    case = web.get(f"/api/datasets/{DATASET}/cases/{world.pseudonym}", headers=holder)
    assert case.status_code == 200
    rows = web.get(f"/api/datasets/{DATASET}/audit", headers=steward).json()
    metadata = {
        r["target"] for r in rows if r["actor"] == "holder" and r["action"] == "read-metadata"
    }
    assert metadata == {world.slide_id, f"{DATASET}/cases/{world.pseudonym}"}
    reads = [r for r in rows if r["actor"] == "holder" and r["action"] == "read-pixels"]
    assert sum(r["count"] for r in reads) == 3
    assert len(reads) <= 2  # one row per user, slide and minute (two if a minute turned)
    assert reads[0]["target"] == world.slide_id and reads[0]["address"] == "testclient"
    csv = web.get(f"/api/datasets/{DATASET}/audit?format=csv", headers=steward)
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("seq,at,actor,action")
    assert "read-pixels" in csv.text


def test_stewards_see_the_audit_page_and_csv_cells_are_not_formulas(
    web: TestClient, world: World
) -> None:
    steward = {"Authorization": f"Bearer {world.tokens['steward']}"}
    holder = {"Authorization": f"Bearer {world.tokens['holder']}"}
    admin = {"Authorization": f"Bearer {world.tokens['admin']}"}
    policy = web.put(
        f"/api/datasets/{DATASET}/policy", json={"policy": "controlled"}, headers=steward
    )
    assert policy.status_code == 200
    page = web.get(f"/datasets/{DATASET}/audit", headers=steward)
    assert page.status_code == 200 and 'data-testid="audit"' in page.text
    assert "dataset.policy" in page.text
    assert web.get(f"/datasets/{DATASET}/audit", headers=holder).status_code == 403

    # A user name typed at sign-in lands in the audit as it was typed...
    csrf = web.get("/sign-in").cookies[CSRF_COOKIE]
    web.post("/sign-in", data={"name": "=SUM(1+1)", "password": "x" * 12, "csrf_token": csrf})
    web.cookies.clear()
    csv = web.get("/api/audit?format=csv", headers=admin).text
    # ...and the CSV export keeps spreadsheets from running it as a formula.
    assert "'=SUM(1+1)" in csv
    assert not any(cell.startswith("=") for line in csv.splitlines() for cell in line.split(","))


def test_a_steward_features_a_slide_whose_thumbnail_becomes_public(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    fresh = build_world(tmp_path_factory.mktemp("featured") / "repo", None)
    with TestClient(create_app(fresh.settings), follow_redirects=False) as web:
        thumbnail = f"/api/slides/{fresh.slide_id}/thumbnail"
        tile = f"/deepzoom/{fresh.slide_id}_files/0/0_0.jpeg"
        assert web.get(thumbnail).status_code == 404  # controlled, not featured: private
        csrf = sign_in(web, "steward")
        saved = web.post(
            f"/datasets/{DATASET}/manage",
            data={
                "policy": "controlled",
                "terms": "Use for research only.",
                "featured": fresh.slide_id,
                "csrf_token": csrf,
            },
        )
        assert saved.status_code == 303
        web.cookies.clear()
        landing = web.get(f"/datasets/{DATASET}")
        assert thumbnail in landing.text and "Use for research only." in landing.text
        assert web.get(thumbnail).status_code == 200  # on the public landing page now
        assert web.get(thumbnail).headers["cache-control"].startswith("private")
        refused = web.get(tile)
        assert refused.status_code == 403  # its existence is public; its pixels are not
        assert "controlled" in refused.json()["detail"]
        # The terms changed, so the holder must accept them again (registered datasets).
        repository = open_repository(fresh.settings)
        try:
            holder = accounts.principal_for_user(repository, "holder")
        finally:
            repository.close()
        assert not holder.accepted_terms


def test_a_policy_update_is_all_or_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    fresh = build_world(tmp_path_factory.mktemp("atomic") / "repo", None)
    steward = {"Authorization": f"Bearer {fresh.tokens['steward']}"}
    with TestClient(create_app(fresh.settings), follow_redirects=False) as web:
        bad = web.put(
            f"/api/datasets/{DATASET}/policy",
            json={"policy": "open", "featured": ["sb-nosuchslide"]},
            headers=steward,
        )
        assert bad.status_code == 400 and "sb-nosuchslide" in bad.json()["detail"]
        assert web.get(f"/api/datasets/{DATASET}").json()["policy"] == "controlled"
        assert web.get(f"/api/slides/{fresh.slide_id}").status_code == 404
        # Saving the same terms again (as the steward's form does) keeps acceptances.
        for terms in ("Research only.\r\n", "Research only.\n"):
            saved = web.put(
                f"/api/datasets/{DATASET}/policy",
                json={"policy": "registered", "terms": terms},
                headers=steward,
            )
            assert saved.status_code == 200
        repository = open_repository(fresh.settings)
        try:
            holder = accounts.principal_for_user(repository, "holder")
            assert not holder.accepted_terms  # lost once, at the first change of terms...
            accounts.accept_terms(repository, holder, DATASET)
            web.put(
                f"/api/datasets/{DATASET}/policy",
                json={"policy": "registered", "terms": "Research only.\r\n"},
                headers=steward,
            )
            assert accounts.principal_for_user(repository, "holder").accepted_terms  # ...kept
        finally:
            repository.close()


def test_looking_at_the_audit_without_the_right_writes_nothing(
    web: TestClient, world: World
) -> None:
    holder = {"Authorization": f"Bearer {world.tokens['holder']}"}
    admin = {"Authorization": f"Bearer {world.tokens['admin']}"}
    web.get(f"/deepzoom/{world.slide_id}_files/0/0_0.jpeg", headers=holder)
    reads = web.app.state.slidebank.reads  # type: ignore[attr-defined]
    assert len(reads) == 1
    for _ in range(3):
        assert web.get("/api/audit").status_code == 401
        assert web.get("/api/audit", headers=holder).status_code == 403
    assert len(reads) == 1  # still waiting for its minute to end
    web.get("/api/audit", headers=admin)
    assert len(reads) == 0


def test_the_slide_page_and_listings_are_audited(web: TestClient, world: World) -> None:
    holder = {"Authorization": f"Bearer {world.tokens['holder']}"}
    admin = {"Authorization": f"Bearer {world.tokens['admin']}"}
    assert web.get(f"/slides/{world.slide_id}", headers=holder).status_code == 200
    assert world.slide_id in web.get("/api/slides", headers=holder).text
    rows = web.get("/api/audit?limit=50", headers=admin).json()
    targets = {r["target"] for r in rows if r["actor"] == "holder"}
    assert {world.slide_id, "slide list"} <= targets


def test_cli_audit_export_escapes_formulas(world: World) -> None:
    from typer.testing import CliRunner

    from slidebank.cli import app

    with TestClient(create_app(world.settings), follow_redirects=False) as web:
        csrf = web.get("/sign-in").cookies[CSRF_COOKIE]
        web.post("/sign-in", data={"name": "@cmd", "password": "x" * 12, "csrf_token": csrf})
    result = CliRunner().invoke(
        app, ["audit", "export", "--home", str(world.settings.home), "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    assert "'@cmd" in result.output
    assert not any(
        cell.startswith("@") for line in result.output.splitlines() for cell in line.split(",")
    )


def test_a_slide_ingested_while_serving_is_served_at_once(
    web: TestClient, world: World, generated_svs: object
) -> None:
    from slidebank.catalog.queries import SlideFilter
    from slidebank.services import browsing, ingesting

    assert web.get("/api/datasets").status_code == 200  # the server has loaded its gates
    web.get(f"/deepzoom/{world.slide_id}.dzi")
    repository = open_repository(world.settings)
    try:
        ingesting.ingest_paths(repository, [generated_svs], "late", None)  # type: ignore[list-item]
        late = browsing.list_slides(repository, COMMAND_LINE, SlideFilter(dataset="late"))[0]
    finally:
        repository.close()
    assert web.get(f"/deepzoom/{late['id']}.dzi").status_code == 200


def test_a_failed_sign_in_keeps_where_the_user_was_going(web: TestClient) -> None:
    csrf = web.get("/sign-in?next=/committee").cookies[CSRF_COOKIE]
    form = {"name": "plain", "password": "not the password", "next": "/committee"}
    failed = web.post("/sign-in", data={**form, "csrf_token": csrf})
    assert failed.status_code == 401
    assert 'name="next" value="/committee"' in failed.text
    csrf = failed.cookies[CSRF_COOKIE]
    done = web.post("/sign-in", data={**form, "password": PASSWORD, "csrf_token": csrf})
    assert done.status_code == 303 and done.headers["location"] == "/committee"
    csrf = web.get("/sign-in").cookies[CSRF_COOKIE]
    evil = web.post(
        "/sign-in",
        data={**form, "password": PASSWORD, "next": "//evil.example/", "csrf_token": csrf},
    )
    assert evil.status_code == 303 and evil.headers["location"] == "/"  # no open redirect


@pytest.mark.parametrize("persona", ["anonymous", "plain"])
def test_role_changes_do_not_tell_which_user_names_exist(
    web: TestClient, world: World, persona: str
) -> None:
    headers = {} if persona == "anonymous" else {"Authorization": f"Bearer {world.tokens[persona]}"}
    for user in ("holder", "nosuchuser"):
        added = web.post(
            f"/api/datasets/{DATASET}/members",
            json={"user": user, "role": "viewer"},
            headers=headers,
        )
        removed = web.delete(f"/api/datasets/{DATASET}/members/{user}/viewer", headers=headers)
        for answer in (added, removed):
            assert answer.status_code == (401 if persona == "anonymous" else 403), answer.text
            assert user not in answer.json()["detail"]
    steward = {"Authorization": f"Bearer {world.tokens['steward']}"}
    members = web.get(f"/api/datasets/{DATASET}/members", headers=steward).json()
    assert {"user": "holder", "role": "viewer"} not in members


HUGE = "99999999999999999999"  # beyond 64 bits: SQLite's driver raised OverflowError


@pytest.mark.parametrize(
    ("persona", "method", "path", "field"),
    [
        ("admin", "GET", f"/api/audit?offset={HUGE}", "offset"),
        ("steward", "GET", f"/api/datasets/{DATASET}/audit?offset={HUGE}", "offset"),
        ("plain", "GET", f"/api/access-requests/{HUGE}", "request_id"),
        ("committee", "POST", f"/api/access-requests/{HUGE}/decision", "request_id"),
        ("committee", "POST", f"/api/grants/{HUGE}/revoke", "grant_id"),
    ],
)
def test_numbers_beyond_the_catalogue_are_invalid_parameters(
    web: TestClient, world: World, persona: str, method: str, path: str, field: str
) -> None:
    body = {"decision": "reject", "reason": "no"} if "decision" in path else {"reason": "no"}
    answer = web.request(
        method,
        path,
        json=body if method == "POST" else None,
        headers={"Authorization": f"Bearer {world.tokens[persona]}"},
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in answer.json()["errors"]] == [field]
