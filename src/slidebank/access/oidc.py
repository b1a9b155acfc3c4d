"""Sign-in with an OpenID Connect provider: authorization code flow with PKCE.

``OidcClient.begin`` gives the URL to send the browser to and a ``PendingSignIn`` that the web
layer keeps (a server-side row or a signed cookie) until the browser comes back;
``OidcClient.finish`` takes it and the callback's query, exchanges the code at the token
endpoint and returns the identity from the verified ID token.

Only the ID token is used: the access token is not kept and the userinfo endpoint is not called,
since Slidebank needs who signed in, not access to anything at the provider. ID tokens must be
signed with an asymmetric algorithm published in the provider's JWKS; HMAC-signed ones (keyed
with the client secret) and unsigned ones are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx
from joserfc import jws, jwt
from joserfc.errors import ClaimError, ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import Key, KeySet

from slidebank.errors import InvalidInput, SlidebankError

__all__ = ["OidcClient", "OidcError", "OidcIdentity", "OidcProvider", "PendingSignIn"]

# Discovery documents, key sets and token responses are a few kilobytes; anything this large is
# a misconfigured or hostile endpoint, and reading it would only cost memory.
MAX_RESPONSE_BYTES = 1_000_000

# Clocks of the provider and of this server may disagree by this much.
CLOCK_LEEWAY_S = 60

# Asymmetric signatures only: an HS* ID token would be keyed with the client secret, which
# anyone holding that secret (or a public client's nobody) could forge, and "none" is unsigned.
SIGNING_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "Ed25519",
        "EdDSA",
    }
)


@dataclass(frozen=True)
class OidcProvider:
    """One OpenID Connect provider as configured in the settings.

    ``client_secret`` is None for a public client, which then proves itself by PKCE alone.
    """

    issuer: str
    client_id: str
    client_secret: str | None
    scopes: str = "openid profile email"


@dataclass(frozen=True)
class PendingSignIn:
    """What must survive between the redirect to the provider and the callback.

    Every field is a secret bound to one browser: keep it server-side or in a signed, HTTP-only
    cookie, and use it once.
    """

    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    created_at: float


@dataclass(frozen=True)
class OidcIdentity:
    """Who signed in: ``(issuer, subject)`` is the stable key; the rest may change over time.

    ``email`` is None when the provider says it is not verified, so that nothing links accounts
    on an address the person may not own; the raw claims keep it.
    """

    issuer: str
    subject: str
    name: str | None
    email: str | None
    claims: dict[str, Any]


class OidcError(SlidebankError):
    """The sign-in failed; the message says at which step and why."""


class OidcClient:
    """The relying party for one provider. Thread-safe; meant to live as long as the app."""

    def __init__(
        self, provider: OidcProvider, http: httpx.Client | None = None, timeout: float = 10.0
    ) -> None:
        if not provider.issuer or not provider.client_id:
            raise InvalidInput("OpenID Connect provider: issuer and client id are required")
        if "openid" not in provider.scopes.split():
            raise InvalidInput(
                f"OpenID Connect provider {provider.issuer}: scopes {provider.scopes!r} "
                "lack 'openid', so no ID token would be issued"
            )
        self.provider = provider
        self._owns_http = http is None
        # Redirects are not followed: every endpoint comes from the provider's own discovery
        # document, and a redirect to elsewhere is not something to trust silently.
        self._http = http if http is not None else httpx.Client(follow_redirects=False)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self._http.close()

    # -- discovery --------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document, fetched on first use and then kept."""
        with self._lock:
            if self._metadata is None:
                self._metadata = self._discover()
            return dict(self._metadata)

    def _discover(self) -> dict[str, Any]:
        issuer = self.provider.issuer
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        status, document = self._fetch_json("discovery", "GET", url)
        if status != 200:
            raise OidcError(f"discovery: {url} answered HTTP {status}")
        if not isinstance(document, dict):
            raise OidcError(f"discovery: {url} did not return a JSON object")
        # OpenID Connect Discovery 1.0 §4.3: the document must name exactly the issuer it was
        # fetched for, or tokens from some other issuer could be accepted as this one's.
        if document.get("issuer") != issuer:
            raise OidcError(
                f"discovery: {url} names issuer {document.get('issuer')!r}, "
                f"not the configured {issuer!r}"
            )
        for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(field), str) or not document[field]:
                raise OidcError(f"discovery: {url} has no {field}")
        methods = document.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise OidcError(f"discovery: {issuer} does not support PKCE with S256")
        return document

    # -- the two halves of a sign-in ----------------------------------------------------------

    def begin(self, redirect_uri: str) -> tuple[str, PendingSignIn]:
        """The URL to redirect the browser to, and what to keep until it comes back."""
        if not redirect_uri:
            raise InvalidInput("OpenID Connect sign-in: redirect_uri is required")
        endpoint = self.metadata()["authorization_endpoint"]
        pending = PendingSignIn(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            # 64 random bytes make 86 characters, inside RFC 7636's 43 to 128.
            code_verifier=secrets.token_urlsafe(64),
            redirect_uri=redirect_uri,
            created_at=time.time(),
        )
        params = {
            "response_type": "code",
            "client_id": self.provider.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.provider.scopes,
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": _s256(pending.code_verifier),
            "code_challenge_method": "S256",
        }
        # The endpoint may carry a query of its own (some providers put a tenant there).
        url = httpx.URL(endpoint).copy_merge_params(params)
        return str(url), pending

    def finish(
        self, pending: PendingSignIn, callback_query: Mapping[str, str], max_age_s: float = 600
    ) -> OidcIdentity:
        """Check the callback, redeem its code and return the verified identity.

        ``callback_query`` is the query of the request to ``pending.redirect_uri``.
        """
        issuer = self.provider.issuer
        returned_state = callback_query.get("state", "")
        # Constant time, since the state is what ties the callback to this browser's sign-in.
        if not hmac.compare_digest(returned_state.encode(), pending.state.encode()):
            raise OidcError("callback: state mismatch (not the sign-in this browser started)")
        age = time.time() - pending.created_at
        if age > max_age_s:
            raise OidcError(
                f"callback: the sign-in was started {age:.0f} s ago, "
                f"longer than the {max_age_s:.0f} s allowed; start again"
            )
        if "error" in callback_query:
            described = callback_query.get("error_description")
            raise OidcError(
                f"callback: {issuer} refused the sign-in: {callback_query['error']}"
                + (f": {described}" if described else "")
            )
        # RFC 9207: a provider that announces the iss parameter always sends it, so a response
        # without it, or naming another issuer, comes from a mix-up with some other provider.
        metadata = self.metadata()
        returned_issuer = callback_query.get("iss")
        if returned_issuer is not None and returned_issuer != issuer:
            raise OidcError(f"callback: iss {returned_issuer!r} is not {issuer!r}")
        announced = metadata.get("authorization_response_iss_parameter_supported") is True
        if returned_issuer is None and announced:
            raise OidcError(f"callback: no iss parameter, which {issuer} always sends")
        code = callback_query.get("code")
        if not code:
            raise OidcError("callback: no authorization code")

        id_token = self._redeem(metadata["token_endpoint"], code, pending)
        claims = self._verify_id_token(id_token, pending.nonce)
        name = claims.get("name")
        email = claims.get("email")
        return OidcIdentity(
            issuer=claims["iss"],
            subject=claims["sub"],
            name=name if isinstance(name, str) else None,
            email=email
            if isinstance(email, str) and claims.get("email_verified") is not False
            else None,
            claims=claims,
        )

    # -- token endpoint -----------------------------------------------------------------------

    def _redeem(self, token_endpoint: str, code: str, pending: PendingSignIn) -> str:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.code_verifier,
        }
        headers = {"Accept": "application/json"}
        secret = self.provider.client_secret
        if secret is not None:
            # RFC 6749 §2.3.1: both halves are form-encoded before Basic encoding, so that a
            # ":" or non-ASCII character in either survives.
            pair = f"{quote_plus(self.provider.client_id)}:{quote_plus(secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self.provider.client_id
        status, document = self._fetch_json(
            "token endpoint", "POST", token_endpoint, data=form, headers=headers
        )
        if status != 200:
            if isinstance(document, dict) and isinstance(document.get("error"), str):
                described = document.get("error_description")
                reason = document["error"] + (f": {described}" if described else "")
            else:
                reason = "no OAuth error in the response"
            raise OidcError(f"token endpoint {token_endpoint} answered HTTP {status}: {reason}")
        if not isinstance(document, dict):
            raise OidcError(f"token endpoint {token_endpoint} did not return a JSON object")
        id_token = document.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise OidcError(f"token endpoint {token_endpoint} returned no id_token")
        return id_token

    # -- ID token -----------------------------------------------------------------------------

    def _verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            header = jws.extract_compact(id_token.encode("ascii")).headers()
        except (JoseError, ValueError) as exc:
            raise OidcError(f"ID token is not a signed JWT: {exc}") from exc
        alg = header.get("alg")
        if alg not in SIGNING_ALGORITHMS:
            accepted = ", ".join(sorted(SIGNING_ALGORITHMS))
            raise OidcError(f"ID token is signed with {alg!r}; accepted: {accepted}")
        key = self._signing_key(header.get("kid"), alg)
        # Unknown header parameters are let through (providers add their own); "crit" ones are
        # still refused unless understood.
        registry = jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
        try:
            claims = jwt.decode(id_token, key, registry=registry).claims
        except JoseError as exc:
            raise OidcError(f"ID token signature does not verify: {exc}") from exc

        issuer = self.provider.issuer
        client_id = self.provider.client_id
        if claims.get("iss") != issuer:
            raise OidcError(f"ID token iss {claims.get('iss')!r} is not {issuer!r}")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise OidcError("ID token has no sub")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or client_id not in audiences:
            raise OidcError(f"ID token aud {aud!r} does not include client id {client_id!r}")
        # OpenID Connect Core §3.1.3.7: with several audiences the token must say which of them
        # it was issued to, and that must be this client.
        if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != client_id:
            raise OidcError(f"ID token azp {claims.get('azp')!r} is not {client_id!r}")
        times = jwt.JWTClaimsRegistry(
            leeway=CLOCK_LEEWAY_S, exp={"essential": True}, iat={"essential": True}
        )
        try:
            times.validate(claims)
        except ExpiredTokenError as exc:
            raise OidcError(f"ID token expired (exp {claims.get('exp')})") from exc
        except ClaimError as exc:
            raise OidcError(f"ID token {exc.claim}: {exc.description}") from exc
        returned_nonce = claims.get("nonce")
        if not isinstance(returned_nonce, str) or not hmac.compare_digest(
            returned_nonce.encode(), nonce.encode()
        ):
            raise OidcError("ID token nonce does not match the one this sign-in sent")
        return claims

    def _signing_key(self, kid: object, alg: str) -> Key:
        if kid is not None and not isinstance(kid, str):
            raise OidcError(f"ID token kid {kid!r} is not a string")
        # A kid not in the cached set usually means the provider rotated its keys: fetch the set
        # again, but only once per token, so that a bad token cannot make us hammer jwks_uri.
        for refresh in (False, True):
            keys = self._key_set(refresh)
            try:
                return keys.get_by_kid(kid, {"alg": alg, "use": "sig"})
            except InvalidKeyIdError:
                continue
        raise OidcError(
            f"ID token kid {kid!r} is not among the keys at {self.metadata()['jwks_uri']}"
            + ("" if kid is not None else " (no kid, and the key set has several keys)")
        )

    def _key_set(self, refresh: bool) -> KeySet:
        with self._lock:
            cached = self._keys
        if cached is not None and not refresh:
            return cached
        url = self.metadata()["jwks_uri"]
        status, document = self._fetch_json("JWKS", "GET", url)
        if status != 200:
            raise OidcError(f"JWKS: {url} answered HTTP {status}")
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise OidcError(f"JWKS: {url} is not a JSON Web Key Set")
        try:
            keys = KeySet.import_key_set({"keys": document["keys"]})
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise OidcError(f"JWKS: {url} holds no usable key: {exc}") from exc
        with self._lock:
            self._keys = keys
        return keys

    # -- HTTP ---------------------------------------------------------------------------------

    def _fetch_json(
        self,
        what: str,
        method: str,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, object]:
        """Status and parsed JSON body (None if the body is not JSON), read up to the bound."""
        body = bytearray()
        try:
            with self._http.stream(
                method, url, data=data, headers=headers, timeout=self._timeout
            ) as response:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
                    raise _too_large(what, url)
                # Counted after decompression, so a small gzip bomb is caught too.
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise _too_large(what, url)
                status = response.status_code
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise OidcError(f"{what}: {method} {url} failed: {exc}") from exc
        try:
            document: object = json.loads(body)
        except ValueError:
            document = None
        return status, document


def _too_large(what: str, url: str) -> OidcError:
    return OidcError(f"{what}: {url} sent more than {MAX_RESPONSE_BYTES} bytes; refused")


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
