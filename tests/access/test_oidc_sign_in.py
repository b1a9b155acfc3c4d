"""Sign-in through the web application with a real OpenID Connect provider on loopback
(node-oidc-provider, started by tests/access/test_oidc.py's ``issuer`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from slidebank.access.policy import COMMAND_LINE
from slidebank.catalog.access_tables import PendingOidcSignIn
from slidebank.config import Settings
from slidebank.services import accounts
from slidebank.services.repository import open_repository
from slidebank.web.app import create_app
from slidebank.web.auth import SESSION_COOKIE
from tests.access.test_oidc import CLIENT_SECRET, CONFIDENTIAL, WEB_CALLBACK, browse, issuer

__all__ = ["issuer"]


@pytest.fixture
def web(issuer: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        home=tmp_path / "repo",
        database_url=None,
        oidc_issuer=issuer,
        oidc_client_id=CONFIDENTIAL,
        oidc_client_secret=CLIENT_SECRET,  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def _sign_in(web: TestClient, login: str) -> None:
    start = web.get("/auth/oidc/start?next=/account")
    assert start.status_code == 303
    assert start.headers["location"].startswith(web.app.state.slidebank.settings.oidc_issuer)  # type: ignore[attr-defined]
    query = browse(start.headers["location"], login, redirect_uri=WEB_CALLBACK)
    done = web.get("/auth/oidc/callback", params=query)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/account"
    cookie = done.headers["set-cookie"]
    assert SESSION_COOKIE in cookie and "httponly" in cookie.lower()
    assert "samesite=lax" in cookie.lower()


def test_oidc_sign_in_creates_and_then_matches_the_account(web: TestClient) -> None:
    _sign_in(web, "dr-ada")
    me = web.get("/api/me").json()
    assert me["signed_in"] and me["via"] == "session"
    first = me["name"]

    web.post("/sign-out", headers={"X-CSRF-Token": _csrf(web)})
    web.cookies.clear()
    assert web.get("/api/me").json()["signed_in"] is False

    _sign_in(web, "dr-ada")  # the same subject at the same issuer: the same account
    assert web.get("/api/me").json()["name"] == first
    repository = open_repository(web.app.state.slidebank.settings)  # type: ignore[attr-defined]
    try:
        assert accounts.principal_for_user(repository, first).name == first
        events = accounts.audit_events(repository, COMMAND_LINE, None, 100, 0)
    finally:
        repository.close()
    sign_ins = [e for e in events if e["action"] == "sign-in" and e["actor"] == first]
    assert len(sign_ins) == 2
    assert all(e["detail"]["via"] == "oidc" for e in sign_ins)
    assert [e["action"] for e in events if e["actor"] == first].count("sign-out") == 1


def _csrf(web: TestClient) -> str:
    """The session's CSRF token, from a page's sign-out form."""
    page: str = web.get("/account").text
    marker = 'name="csrf_token" value="'
    return page.split(marker, 1)[1].split('"', 1)[0]


def test_a_callback_works_once(web: TestClient) -> None:
    start = web.get("/auth/oidc/start")
    query = browse(start.headers["location"], "dr-bea", redirect_uri=WEB_CALLBACK)
    assert web.get("/auth/oidc/callback", params=query).status_code == 303
    web.cookies.clear()
    again = web.get("/auth/oidc/callback", params=query)
    assert again.status_code == 400
    assert "unknown or was used already" in again.text


def test_a_forged_state_is_refused(web: TestClient) -> None:
    start = web.get("/auth/oidc/start")
    query = browse(start.headers["location"], "dr-cy", redirect_uri=WEB_CALLBACK)
    forged = {**query, "state": "not-the-state"}
    response = web.get("/auth/oidc/callback", params=forged)
    assert response.status_code == 400
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


def test_a_callback_opened_in_another_browser_is_refused(web: TestClient) -> None:
    """Login CSRF: an attacker starts a sign-in, logs in at the provider as themself and
    hands the callback URL to a victim; the victim's browser must not be signed in."""
    start = web.get("/auth/oidc/start")
    query = browse(start.headers["location"], "mallory", redirect_uri=WEB_CALLBACK)
    with TestClient(web.app, follow_redirects=False) as victim:
        response = victim.get("/auth/oidc/callback", params=query)
        assert response.status_code == 400
        assert "another browser" in response.text
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
        assert victim.get("/api/me").json()["signed_in"] is False


def test_pending_sign_ins_are_bounded(web: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each anonymous start keeps a row until its callback: a flood of starts is refused at
    the bound instead of filling the catalogue."""
    monkeypatch.setattr(accounts, "MAX_PENDING", 2)
    assert [web.get("/auth/oidc/start").status_code for _ in range(2)] == [303, 303]
    refused = web.get("/auth/oidc/start")
    assert refused.status_code == 503
    assert "too many sign-ins are in progress (at most 2)" in refused.text
    assert int(refused.headers["retry-after"]) > 0
    assert "location" not in refused.headers
    repository = open_repository(web.app.state.slidebank.settings)  # type: ignore[attr-defined]
    try:
        with repository.catalogue.reading() as session:
            kept = session.scalar(select(func.count()).select_from(PendingOidcSignIn))
    finally:
        repository.close()
    assert kept == 2
