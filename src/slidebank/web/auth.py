"""Who is asking: a bearer token, a session cookie, or nobody; and CSRF on cookie requests.

Credentials are looked up in the catalogue once and then cached for a few seconds
(``CREDENTIAL_TTL_S``), so that a viewer's hundreds of tile requests cost one lookup; a
revoked grant, token or session therefore stops working within that time. A bad bearer
token is refused (401); a stale session cookie counts as nobody, so open data stays
readable in a browser that kept an old cookie.

CSRF: requests that change something and carry the session cookie must also carry the
session's CSRF token (header ``X-CSRF-Token`` or form field ``csrf_token``); bearer tokens
are not sent by browsers on their own, so they need none. The sign-in form, before any
session, uses a double-submit cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from slidebank.access.policy import ANONYMOUS, Principal
from slidebank.errors import Forbidden, SignInRequired
from slidebank.services import accounts
from slidebank.web.single_flight import SingleFlight

if TYPE_CHECKING:
    from slidebank.web.state import AppState

SESSION_COOKIE = "slidebank_session"
CSRF_COOKIE = "slidebank_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
CREDENTIAL_TTL_S = 5.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_CACHED = 10_000


@dataclass(frozen=True)
class Credential:
    principal: Principal
    csrf_token: str | None  # sessions only
    session_secret: str | None = None


class CredentialCache:
    """Principals by the digest of their secret, for a few seconds (thread-safe)."""

    def __init__(self, ttl_s: float = CREDENTIAL_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Credential]] = {}
        self._lock = threading.Lock()
        self.loads: SingleFlight[str, Credential] = SingleFlight()
        """Lookups in flight; one that began before a ``clear`` is not kept."""

    def get(self, key: str) -> Credential | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: str, credential: Credential) -> None:
        with self._lock:
            if len(self._entries) >= MAX_CACHED:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl_s, credential)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
        self.loads.forget()


def cache_key(kind: str, secret: str) -> str:
    return kind + hashlib.sha256(secret.encode()).hexdigest()


NOBODY = Credential(ANONYMOUS, None)
# Where a request's credential is kept once found (the ASGI scope, which the route's
# Request shares; cheaper than request.state on the tile path).
SCOPE_KEY = "slidebank.credential"


def _carries_credentials(request: Request) -> bool:
    """Whether the raw headers hold an Authorization or Cookie header (tile requests from
    anonymous viewers are most requests: they skip header parsing altogether)."""
    for name, _ in request.scope["headers"]:  # a loop: a generator costs more than the scan
        if name == b"authorization" or name == b"cookie":
            return True
    return False


async def credential(request: Request) -> Credential:
    """The request's credential (kept on the request), CSRF checked for cookie writes."""
    scope = request.scope
    found: Credential | None = scope.get(SCOPE_KEY)
    if found is not None:
        return found
    if not _carries_credentials(request):
        scope[SCOPE_KEY] = NOBODY
        return NOBODY
    state = request.app.state.slidebank
    header = request.headers.get("authorization")
    if header is not None:
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise SignInRequired("Authorization: use 'Bearer <token>'")
        found = await _lookup(state, "t", token.strip())
    else:
        secret = request.cookies.get(SESSION_COOKIE)
        found = None
        if secret:
            try:
                found = await _lookup(state, "s", secret)
            except SignInRequired:
                found = None
        if found is None:
            found = NOBODY
        elif request.method not in SAFE_METHODS:
            await _check_csrf(request, found.csrf_token)
    scope[SCOPE_KEY] = found
    return found


async def current_principal(request: Request) -> Principal:
    """The principal of a request (a FastAPI dependency)."""
    return (await credential(request)).principal


async def _lookup(state: AppState, kind: str, secret: str) -> Credential:
    key = cache_key(kind, secret)
    cached = state.credentials.get(key)
    if cached is not None:
        return cached
    # A script's or a viewer's concurrent requests with one credential share one lookup.
    cache = state.credentials
    return await cache.loads.load(key, partial(_load, state, kind, secret), partial(cache.put, key))


async def _load(state: AppState, kind: str, secret: str) -> Credential:
    repository = state.repository
    if kind == "t":
        principal = await run_in_threadpool(accounts.principal_for_token, repository, secret)
        return Credential(principal, None)
    principal, csrf = await run_in_threadpool(accounts.principal_for_session, repository, secret)
    return Credential(principal, csrf, secret)


async def _check_csrf(request: Request, expected: str | None) -> None:
    given = request.headers.get(CSRF_HEADER)
    if given is None and _is_form(request):
        form = await request.form()  # Starlette keeps it for the route
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not expected or not given or not hmac.compare_digest(given, expected):
        raise Forbidden(
            "CSRF check failed: a request that changes something must carry the session's "
            f"CSRF token ({CSRF_HEADER} header or {CSRF_FIELD} field)"
        )


async def check_sign_in_csrf(request: Request) -> None:
    """The sign-in form's double-submit check (there is no session yet)."""
    form = await request.form()
    given = form.get(CSRF_FIELD)
    cookie = request.cookies.get(CSRF_COOKIE)
    if not isinstance(given, str) or not cookie or not hmac.compare_digest(given, cookie):
        raise Forbidden("CSRF check failed: reload the sign-in page and try again")


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def client_address(request: Request) -> str:
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"


def secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https"
