"""Pages of accounts and access: sign-in (password or OpenID Connect), sign-out, my account
(tokens, requests), a dataset's landing page (terms, access request) and the committee's
page (decide requests, revoke grants). Every decision is the policy's, through services."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Form, Path, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from slidebank.access.accounts import SignInRefused
from slidebank.access.policy import Principal
from slidebank.access.requests import RequestForm
from slidebank.catalog.queries import MAX_ID, SlideFilter
from slidebank.errors import Forbidden, SlidebankError
from slidebank.services import accounts, browsing
from slidebank.web.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    check_sign_in_csrf,
    client_address,
    credential,
    current_principal,
    new_csrf_token,
    secure_cookies,
)
from slidebank.web.pages import _templates, render_page
from slidebank.web.state import AppState, app_state

if TYPE_CHECKING:
    from slidebank.access.oidc import OidcClient

Asker = Annotated[Principal, Depends(current_principal)]
AUDIT_PAGE_ROWS = 500
State = Annotated[AppState, Depends(app_state)]


OIDC_BROWSER_COOKIE = "slidebank_oidc"
OIDC_PENDING_S = 600
# When the pending sign-ins are at their bound (a flood of anonymous starts), a browser is
# asked to come back after this long: by then the oldest have expired.
OIDC_FULL_RETRY_S = 60
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _oidc(state: AppState) -> OidcClient | None:
    """The application's OpenID Connect client (one per process: it keeps the provider's
    discovery document and keys), or None when sign-in through a provider is off."""
    # Imported here: its JOSE and cryptography libraries cost each worker ~20 MB, for
    # servers that never use OpenID Connect.
    from slidebank.access.oidc import OidcClient, OidcProvider

    settings = state.settings
    if not (settings.oidc_issuer and settings.oidc_client_id):
        return None
    if state.oidc is None:
        secret = settings.oidc_client_secret
        state.oidc = OidcClient(
            OidcProvider(
                settings.oidc_issuer,
                settings.oidc_client_id,
                secret.get_secret_value() if secret else None,
            )
        )
    return state.oidc


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _local(url: str | None) -> str:
    """Only same-site paths as targets after sign-in (no open redirects)."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


def install(app: FastAPI) -> None:
    templates = _templates()

    def render(
        request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        return render_page(templates, request, name, context, status_code)

    def signed_in_response(
        request: Request, secret: str, expires: float, target: str
    ) -> RedirectResponse:
        response = _see_other(_local(target))
        response.set_cookie(
            SESSION_COOKIE,
            secret,
            max_age=int(expires),
            httponly=True,
            secure=secure_cookies(request),
            samesite="lax",
            path="/",
        )
        response.delete_cookie(CSRF_COOKIE, path="/sign-in")
        return response

    def sign_in_form(
        request: Request,
        error: str | None = None,
        status_code: int = 200,
        name: str = "",
        target: str | None = None,
    ) -> Response:
        token = new_csrf_token()
        state = app_state(request)
        response = render(
            request,
            "sign_in.html",
            {
                "title": "Sign in",
                "form_csrf": token,
                "error": error,
                "name": name,
                "next": _local(target or request.query_params.get("next")),
                "oidc_label": state.settings.oidc_label if _oidc(state) else None,
            },
            status_code,
        )
        response.set_cookie(
            CSRF_COOKIE,
            token,
            httponly=True,
            secure=secure_cookies(request),
            samesite="strict",
            path="/sign-in",
        )
        return response

    @app.get("/sign-in", include_in_schema=False)
    async def sign_in_page(request: Request) -> Response:
        await credential(request)
        return sign_in_form(request)

    @app.post("/sign-in", include_in_schema=False)
    async def sign_in(
        request: Request,
        state: State,
        name: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=1024)],
        next: Annotated[str, Form(max_length=2048)] = "/",
    ) -> Response:
        await check_sign_in_csrf(request)
        outcome = await run_in_threadpool(
            accounts.sign_in,
            state.repository,
            name.strip(),
            password,
            client_address(request),
            state.settings.session_hours,
        )
        if isinstance(outcome, SignInRefused):
            status = 429 if outcome.retry_after_s else 401
            response = sign_in_form(request, outcome.reason, status, name, next)
            if outcome.retry_after_s:
                response.headers["Retry-After"] = str(outcome.retry_after_s)
            return response
        return signed_in_response(
            request, outcome.secret, state.settings.session_hours * 3600, next
        )

    @app.post("/sign-out", include_in_schema=False)
    async def sign_out(request: Request, state: State, asker: Asker) -> Response:
        found = await credential(request)
        if found.session_secret:
            await run_in_threadpool(
                accounts.sign_out,
                state.repository,
                asker,
                found.session_secret,
                client_address(request),
            )
        response = _see_other("/")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/auth/oidc/start", include_in_schema=False)
    async def oidc_start(request: Request, state: State) -> Response:
        client = _oidc(state)
        if client is None:
            return sign_in_form(request, "OpenID Connect sign-in is not configured", 404)
        redirect_uri = str(request.url_for("oidc_callback"))
        from slidebank.access.oidc import OidcError

        try:
            url, pending = await run_in_threadpool(client.begin, redirect_uri)
        except OidcError as exc:
            return sign_in_form(request, f"the identity provider is unavailable: {exc}", 502)
        # The callback must come back to the browser that started: otherwise anyone could
        # hand a victim a callback URL that signs them in as the attacker (login CSRF).
        browser = secrets.token_urlsafe(32)
        data = {
            **dataclasses.asdict(pending),
            "next": _local(request.query_params.get("next")),
            "browser": hashlib.sha256(browser.encode()).hexdigest(),
        }
        kept = await run_in_threadpool(
            accounts.keep_pending_sign_in, state.repository, pending.state, data, OIDC_PENDING_S
        )
        if not kept:
            response = sign_in_form(
                request,
                f"too many sign-ins are in progress (at most {accounts.MAX_PENDING}): "
                f"try again in {OIDC_FULL_RETRY_S} seconds",
                503,
            )
            response.headers["Retry-After"] = str(OIDC_FULL_RETRY_S)
            return response
        response = _see_other(url)
        response.set_cookie(
            OIDC_BROWSER_COOKIE,
            browser,
            max_age=OIDC_PENDING_S,
            httponly=True,
            secure=secure_cookies(request),
            samesite="lax",
            path="/auth/oidc",
        )
        return response

    @app.get("/auth/oidc/callback", include_in_schema=False, name="oidc_callback")
    async def oidc_callback(request: Request, state: State) -> Response:
        client = _oidc(state)
        if client is None:
            return sign_in_form(request, "OpenID Connect sign-in is not configured", 404)
        query = dict(request.query_params)
        data = await run_in_threadpool(
            accounts.take_pending_sign_in, state.repository, query.get("state", "")
        )
        if data is None:
            return sign_in_form(request, "this sign-in is unknown or was used already", 400)
        target = data.pop("next", "/")
        expected = data.pop("browser", "")
        browser = request.cookies.get(OIDC_BROWSER_COOKIE, "")
        if not browser or not hmac.compare_digest(
            hashlib.sha256(browser.encode()).hexdigest(), expected
        ):
            return sign_in_form(request, "this sign-in was started in another browser", 400)
        from slidebank.access.oidc import OidcError, PendingSignIn

        try:
            identity = await run_in_threadpool(
                client.finish, PendingSignIn(**data), query, OIDC_PENDING_S
            )
        except OidcError as exc:
            return sign_in_form(request, f"sign-in failed: {exc}", 401)
        new = await run_in_threadpool(
            accounts.sign_in_oidc,
            state.repository,
            identity.issuer,
            identity.subject,
            identity.name or identity.email,
            identity.email,
            client_address(request),
            state.settings.session_hours,
        )
        response = signed_in_response(
            request, new.secret, state.settings.session_hours * 3600, target
        )
        response.delete_cookie(OIDC_BROWSER_COOKIE, path="/auth/oidc")
        return response

    @app.get("/account", include_in_schema=False)
    async def account_page(request: Request, state: State, asker: Asker) -> Response:
        if asker.user_id is None:
            return _see_other("/sign-in?next=/account")
        tokens = await run_in_threadpool(accounts.list_tokens, state.repository, asker)
        mine = await run_in_threadpool(accounts.my_requests, state.repository, asker)
        shown = request.cookies.get("slidebank_new_token")
        response = render(
            request,
            "account.html",
            {
                "title": "Account",
                "nav": "account",
                "tokens": tokens,
                "requests": mine,
                "new_token": shown,
            },
        )
        response.delete_cookie("slidebank_new_token", path="/account")
        return response

    @app.post("/account/tokens", include_in_schema=False)
    async def account_token(
        request: Request,
        state: State,
        asker: Asker,
        scope: Annotated[str, Form()] = "read",
        days: Annotated[int, Form(ge=1, le=366)] = 90,
        label: Annotated[str, Form(max_length=128)] = "",
    ) -> Response:
        new = await run_in_threadpool(
            accounts.create_token,
            state.repository,
            asker,
            None,
            scope,
            days,
            label or None,
            client_address(request),
        )
        response = _see_other("/account")
        # Shown once on the next page, then gone: a short-lived cookie for this path only.
        response.set_cookie(
            "slidebank_new_token",
            new.token,
            max_age=60,
            httponly=True,
            secure=secure_cookies(request),
            samesite="strict",
            path="/account",
        )
        return response

    @app.post("/account/tokens/{key}/revoke", include_in_schema=False)
    async def account_revoke(request: Request, state: State, asker: Asker, key: str) -> Response:
        await run_in_threadpool(
            accounts.revoke_token, state.repository, asker, key, client_address(request)
        )
        return _see_other("/account")

    @app.get("/datasets/{name}", include_in_schema=False)
    async def dataset_page(request: Request, state: State, asker: Asker, name: str) -> Response:
        try:
            landing = await run_in_threadpool(browsing.show_dataset, state.repository, name)
        except SlidebankError as exc:
            return render(request, "404.html", {"title": "Not found", "message": str(exc)}, 404)
        readable = await run_in_threadpool(
            browsing.count_slides, state.repository, asker, SlideFilter(dataset=name)
        )
        context = {
            "title": landing["title"],
            "nav": "datasets",
            "dataset": landing,
            "readable": readable > 0 or landing["images"] == 0,
            "accepted": landing["id"] in asker.accepted_terms,
            "steward": asker.is_admin or "steward" in asker.roles.get(landing["id"], ()),
            "today": date.today().isoformat(),
        }
        return render(request, "dataset.html", context)

    @app.post("/datasets/{name}/manage", include_in_schema=False)
    async def dataset_manage(
        request: Request,
        state: State,
        asker: Asker,
        name: str,
        policy: Annotated[str, Form(pattern="^(open|registered|controlled)$")],
        terms: Annotated[str | None, Form(max_length=64 * 1024)] = None,
        featured: Annotated[str | None, Form(max_length=2048)] = None,
    ) -> Response:
        """The steward's form: policy, terms of use and featured slides in one post."""
        ids = None if featured is None else featured.replace(",", " ").split()
        await run_in_threadpool(
            accounts.update_access, state.repository, asker, name, policy, terms, ids
        )
        return _see_other(f"/datasets/{name}")

    @app.post("/datasets/{name}/accept-terms", include_in_schema=False)
    async def dataset_accept(request: Request, state: State, asker: Asker, name: str) -> Response:
        await run_in_threadpool(accounts.accept_terms, state.repository, asker, name)
        return _see_other(f"/datasets/{name}")

    @app.post("/datasets/{name}/request", include_in_schema=False)
    async def dataset_request(
        request: Request,
        state: State,
        asker: Asker,
        name: str,
        project_title: Annotated[str, Form(max_length=256)],
        purpose: Annotated[str, Form(max_length=10_000)],
        institution: Annotated[str, Form(max_length=256)],
        duration_days: Annotated[int, Form(ge=1, le=5 * 366)],
        accept_terms: Annotated[bool, Form()] = False,
    ) -> Response:
        form = RequestForm(project_title, purpose, institution, duration_days, accept_terms)
        await run_in_threadpool(
            accounts.request_access, state.repository, asker, name, form, client_address(request)
        )
        return _see_other("/account")

    async def audit_page(
        request: Request, state: AppState, asker: Principal, dataset: str | None
    ) -> Response:
        if asker.user_id is None and not asker.signed_in:
            here = f"/datasets/{dataset}/audit" if dataset else "/audit"
            return _see_other(f"/sign-in?next={here}")
        try:
            events = await run_in_threadpool(
                accounts.audit_events,
                state.repository,
                asker,
                dataset,
                AUDIT_PAGE_ROWS,
                0,
                state.reads,
            )
        except Forbidden as exc:
            return render(request, "404.html", {"title": "Not allowed", "message": str(exc)}, 403)
        export = f"/api/datasets/{dataset}/audit" if dataset else "/api/audit"
        return render(
            request,
            "audit.html",
            {
                "title": f"Audit · {dataset}" if dataset else "Audit",
                "dataset": dataset,
                "events": events,
                "export": export,
                "rows": AUDIT_PAGE_ROWS,
            },
        )

    @app.get("/datasets/{name}/audit", include_in_schema=False)
    async def dataset_audit_page(
        request: Request, state: State, asker: Asker, name: str
    ) -> Response:
        return await audit_page(request, state, asker, name)

    @app.get("/audit", include_in_schema=False)
    async def site_audit_page(request: Request, state: State, asker: Asker) -> Response:
        return await audit_page(request, state, asker, None)

    @app.get("/committee", include_in_schema=False)
    async def committee_page(request: Request, state: State, asker: Asker) -> Response:
        if asker.user_id is None:
            return _see_other("/sign-in?next=/committee")
        pending = await run_in_threadpool(accounts.requests_to_decide, state.repository, asker)
        approved = await run_in_threadpool(
            accounts.requests_to_decide, state.repository, asker, "approved"
        )
        return render(
            request,
            "committee.html",
            {
                "title": "Access requests",
                "nav": "committee",
                "pending": pending,
                "approved": approved,
                "today": date.fromtimestamp(time.time()).isoformat(),
            },
        )

    @app.post("/committee/requests/{request_id}", include_in_schema=False)
    async def committee_decide(
        request: Request,
        state: State,
        asker: Asker,
        request_id: RowId,
        decision: Annotated[str, Form(pattern="^(approve|reject)$")],
        ends_on: Annotated[date | None, Form()] = None,
        reason: Annotated[str, Form(max_length=10_000)] = "",
    ) -> Response:
        await run_in_threadpool(
            accounts.decide_request,
            state.repository,
            asker,
            request_id,
            decision == "approve",
            ends_on,
            reason or None,
            client_address(request),
        )
        return _see_other("/committee")

    @app.post("/committee/grants/{grant_id}/revoke", include_in_schema=False)
    async def committee_revoke(
        request: Request,
        state: State,
        asker: Asker,
        grant_id: RowId,
        reason: Annotated[str, Form(max_length=10_000)] = "",
    ) -> Response:
        await run_in_threadpool(
            accounts.revoke_grant,
            state.repository,
            asker,
            grant_id,
            reason,
            client_address(request),
        )
        return _see_other("/committee")
