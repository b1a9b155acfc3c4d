"""OpenID Connect sign-in against a real provider: node-oidc-provider on a loopback port
(tests/access/oidc_provider, installed by `make install-dev`). The test plays the browser with
httpx, through the provider's own login and consent pages. Nothing is mocked; to reach the ID
token checks, some tests alter the provider's real answers in transit, as a man in the middle
would."""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from slidebank.access.oidc import (
    MAX_RESPONSE_BYTES,
    OidcClient,
    OidcError,
    OidcIdentity,
    OidcProvider,
    PendingSignIn,
)
from tests.helpers import stop_process

PROVIDER_DIR = Path(__file__).parent / "oidc_provider"
IN_CI = os.environ.get("CI", "").lower() == "true"

# Nothing listens here: the browser stops at the redirect and the test reads its Location.
REDIRECT_URI = "http://127.0.0.1:9/slidebank/oidc/callback"
# The web application's callback under fastapi's TestClient (tests/access/test_oidc_sign_in.py).
WEB_CALLBACK = "http://testserver/auth/oidc/callback"
CLIENT_SECRET = secrets.token_urlsafe(24)
CONFIDENTIAL = "slidebank-confidential"
PUBLIC = "slidebank-public"


@pytest.fixture(scope="session")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Run provider.mjs on a free loopback port for the session; yields its issuer URL."""
    node = shutil.which("node")
    missing = (
        "node is not installed"
        if node is None
        else f"{PROVIDER_DIR / 'node_modules'} is missing (run `make install-dev`)"
        if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir()
        else None
    )
    if missing is not None:
        if IN_CI:
            pytest.fail(f"the OpenID Connect test provider cannot run: {missing}")
        pytest.skip(f"the OpenID Connect test provider cannot run: {missing}")
    assert node is not None

    stderr_path = tmp_path_factory.mktemp("oidc-provider") / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [node, "provider.mjs", "0"],
            cwd=PROVIDER_DIR,
            env={
                **os.environ,
                "OIDC_REDIRECT_URIS": f"{REDIRECT_URI} {WEB_CALLBACK}",
                "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            },
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        yield _wait_until_ready(process, stderr_path)
    finally:
        stop_process(process, timeout=5)


def _wait_until_ready(process: subprocess.Popen[str], stderr_path: Path) -> str:
    # A reader thread rather than readline() here, so that the wait has a deadline, and so that
    # the pipe keeps being drained however much the provider prints later.
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 30
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        if "ready at " in line:
            return line.split("ready at ", 1)[1].strip()
    process.kill()
    process.wait()
    pytest.fail(
        f"the OpenID Connect test provider did not start within 30 s (exit {process.returncode}):\n"
        + stderr_path.read_text()
    )


def make_client(
    issuer: str, client_id: str = CONFIDENTIAL, secret: str | None = None
) -> OidcClient:
    if client_id == CONFIDENTIAL and secret is None:
        secret = CLIENT_SECRET
    return OidcClient(OidcProvider(issuer=issuer, client_id=client_id, client_secret=secret))


class _Page(HTMLParser):
    """The first form of a page (its action and inputs) and its links."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.links: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action = attributes.get("action", "")
        elif tag == "input" and "name" in attributes:
            self.fields[attributes["name"]] = attributes.get("value", "")
        elif tag == "a" and "href" in attributes:
            self.links.append(attributes["href"])


def browse(
    authorization_url: str,
    login: str = "alice",
    cancel: bool = False,
    redirect_uri: str = REDIRECT_URI,
) -> dict[str, str]:
    """Play the browser from the authorization URL to the redirect back; returns its query.

    Signs in with ``login`` (the development interactions take any name, and any password) and
    consents, or with ``cancel`` follows the page's cancel link instead.
    """
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        response = browser.get(authorization_url)
        for _ in range(12):
            if response.is_redirect:
                target = response.url.join(response.headers["Location"])
                if str(target).startswith(redirect_uri):
                    return dict(target.params)
                response = browser.get(target)
                continue
            assert response.status_code == 200, f"{response.url}: {response.text[:1000]}"
            page = _Page(response.text)
            assert page.action is not None, f"no form at {response.url}: {response.text[:1000]}"
            if cancel:
                abort = next(link for link in page.links if link.endswith("/abort"))
                response = browser.get(response.url.join(abort))
                continue
            if page.fields.get("prompt") == "login":
                page.fields.update(login=login, password="any password")
            response = browser.post(response.url.join(page.action), data=page.fields)
        raise AssertionError("the provider never redirected back to the client")


def signed_in(client: OidcClient, login: str = "alice") -> tuple[PendingSignIn, dict[str, str]]:
    """A completed browser leg: the pending sign-in and the callback query to finish it with."""
    url, pending = client.begin(REDIRECT_URI)
    return pending, browse(url, login)


class TokenRewriter(httpx.HTTPTransport):
    """A real transport that alters the token endpoint's ID token on its way back, as a
    man in the middle would, and notes the paths requested."""

    def __init__(self, rewrite: Callable[[str], str]) -> None:
        super().__init__()
        self.rewrite = rewrite
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        response = super().handle_request(request)
        if request.url.path != "/token" or response.status_code != 200:
            return response
        document = json.loads(response.read())
        response.close()
        document["id_token"] = self.rewrite(document["id_token"])
        return httpx.Response(response.status_code, json=document)


def rewriting_client(
    issuer: str, rewrite: Callable[[str], str], client_id: str = CONFIDENTIAL
) -> tuple[OidcClient, TokenRewriter]:
    transport = TokenRewriter(rewrite)
    secret = CLIENT_SECRET if client_id == CONFIDENTIAL else None
    provider = OidcProvider(issuer=issuer, client_id=client_id, client_secret=secret)
    return OidcClient(provider, http=httpx.Client(transport=transport)), transport


def _decoded(segment: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


def _encoded(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def with_header(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    return ".".join([_encoded({**_decoded(header), **changes}), payload, signature])


def with_claims(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    return ".".join([header, _encoded({**_decoded(payload), **changes}), signature])


# -- sign-in that works ------------------------------------------------------------------------


def test_confidential_client_signs_in_with_pkce(issuer: str) -> None:
    client = make_client(issuer)
    url, pending = client.begin(REDIRECT_URI)
    query = httpx.URL(url).params
    assert query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] != pending.code_verifier
    assert (query["state"], query["nonce"]) == (pending.state, pending.nonce)

    identity = client.finish(pending, browse(url, "alice"))

    assert isinstance(identity, OidcIdentity)
    assert (identity.issuer, identity.subject) == (issuer, "alice")
    assert identity.name == "Test user alice"
    assert identity.email == "alice@example.test"
    assert identity.claims["aud"] == CONFIDENTIAL


def test_public_client_signs_in_with_pkce_alone(issuer: str) -> None:
    client = make_client(issuer, PUBLIC)
    pending, callback = signed_in(client, "bob")
    identity = client.finish(pending, callback)
    assert (identity.issuer, identity.subject) == (issuer, "bob")


def test_discovery_and_keys_are_fetched_once(issuer: str) -> None:
    client, transport = rewriting_client(issuer, lambda token: token)
    assert client.metadata()["issuer"] == issuer
    for login in ("alice", "bob"):
        assert client.finish(*signed_in(client, login)).subject == login
    assert transport.paths.count("/.well-known/openid-configuration") == 1
    assert transport.paths.count("/jwks") == 1


# -- callbacks that are refused before the token endpoint ---------------------------------------


def test_state_mismatch_is_refused(issuer: str) -> None:
    client = make_client(issuer)
    pending, callback = signed_in(client)
    with pytest.raises(OidcError, match="state mismatch"):
        client.finish(pending, {**callback, "state": secrets.token_urlsafe(32)})
    with pytest.raises(OidcError, match="state mismatch"):
        client.finish(pending, {k: v for k, v in callback.items() if k != "state"})
    # The refusals did not spend the code.
    assert client.finish(pending, callback).subject == "alice"


def test_expired_pending_sign_in_is_refused(issuer: str) -> None:
    client = make_client(issuer)
    pending, callback = signed_in(client)
    with pytest.raises(OidcError, match=r"started \d+ s ago, longer than the 600 s allowed"):
        client.finish(replace(pending, created_at=pending.created_at - 601), callback)
    with pytest.raises(OidcError, match="longer than the 1 s allowed"):
        client.finish(replace(pending, created_at=pending.created_at - 2), callback, max_age_s=1)


def test_cancelled_sign_in_names_the_providers_error(issuer: str) -> None:
    client = make_client(issuer)
    url, pending = client.begin(REDIRECT_URI)
    callback = browse(url, cancel=True)
    with pytest.raises(OidcError, match="refused the sign-in: access_denied"):
        client.finish(pending, callback)


def test_callback_from_another_issuer_is_refused(issuer: str) -> None:
    client = make_client(issuer)
    pending, callback = signed_in(client)
    with pytest.raises(OidcError, match=re.escape("iss 'http://elsewhere.test' is not")):
        client.finish(pending, {**callback, "iss": "http://elsewhere.test"})
    # The provider announces RFC 9207, so a callback without iss is refused too.
    with pytest.raises(OidcError, match="no iss parameter"):
        client.finish(pending, {k: v for k, v in callback.items() if k != "iss"})


# -- refused by the token endpoint ----------------------------------------------------------------


def test_replayed_code_is_refused(issuer: str) -> None:
    client = make_client(issuer)
    pending, callback = signed_in(client)
    client.finish(pending, callback)
    with pytest.raises(OidcError, match=r"/token answered HTTP 400: invalid_grant"):
        client.finish(pending, callback)


def test_altered_code_is_refused(issuer: str) -> None:
    client = make_client(issuer)
    pending, callback = signed_in(client)
    with pytest.raises(OidcError, match=r"/token answered HTTP 400: invalid_grant"):
        client.finish(pending, {**callback, "code": callback["code"][:-2] + "xx"})


def test_wrong_code_verifier_is_refused(issuer: str) -> None:
    client = make_client(issuer, PUBLIC)
    pending, callback = signed_in(client)
    other_verifier = replace(pending, code_verifier=secrets.token_urlsafe(64))
    with pytest.raises(OidcError, match=r"/token answered HTTP 400: invalid_grant"):
        client.finish(other_verifier, callback)


def test_wrong_client_secret_is_refused(issuer: str) -> None:
    client = make_client(issuer, CONFIDENTIAL, secret="not the secret")
    pending, callback = signed_in(client)
    with pytest.raises(OidcError, match=r"/token answered HTTP 401: invalid_client"):
        client.finish(pending, callback)


# -- refused after the token endpoint: the ID token ---------------------------------------------


def test_id_token_with_another_nonce_is_refused(issuer: str) -> None:
    client = make_client(issuer)
    pending, callback = signed_in(client)
    with pytest.raises(OidcError, match="ID token nonce does not match"):
        client.finish(replace(pending, nonce=secrets.token_urlsafe(32)), callback)


def test_id_token_with_altered_claims_is_refused(issuer: str) -> None:
    client, _ = rewriting_client(issuer, lambda token: with_claims(token, sub="mallory"))
    pending, callback = signed_in(client)
    with pytest.raises(OidcError, match="ID token signature does not verify"):
        client.finish(pending, callback)


def test_id_token_with_unknown_kid_is_refused_after_one_refetch(issuer: str) -> None:
    client, transport = rewriting_client(issuer, lambda token: with_header(token, kid="rotated"))
    pending, callback = signed_in(client)
    with pytest.raises(OidcError, match="ID token kid 'rotated' is not among the keys at"):
        client.finish(pending, callback)
    assert transport.paths.count("/jwks") == 2


@pytest.mark.parametrize("alg", ["HS256", "none"])
def test_id_token_not_signed_with_a_public_key_is_refused(issuer: str, alg: str) -> None:
    client, _ = rewriting_client(issuer, lambda token: with_header(token, alg=alg))
    pending, callback = signed_in(client)
    with pytest.raises(OidcError, match=f"ID token is signed with '{alg}'; accepted: ES256"):
        client.finish(pending, callback)


def test_id_token_for_another_client_is_refused(issuer: str) -> None:
    # A genuine token from the same provider, signed with its key, but issued to the public
    # client, presented to the confidential one.
    issued: list[str] = []

    def keep(token: str) -> str:
        issued.append(token)
        return token

    public, _ = rewriting_client(issuer, keep, PUBLIC)
    public.finish(*signed_in(public, "bob"))
    client, _ = rewriting_client(issuer, lambda _: issued[0])
    pending, callback = signed_in(client)
    with pytest.raises(OidcError, match=f"ID token aud '{PUBLIC}' does not include client id"):
        client.finish(pending, callback)


def test_id_token_for_another_issuer_configuration_is_refused(issuer: str) -> None:
    # The same provider reached under a second name: the token's iss names the first.
    client = make_client(issuer)
    pending, callback = signed_in(client)
    # The discovery document stays cached, so only the configured issuer changes.
    client.provider = replace(client.provider, issuer=issuer + "/other")
    with pytest.raises(OidcError, match=r"ID token iss .* is not"):
        client.finish(pending, {**callback, "iss": issuer + "/other"})


# -- discovery ------------------------------------------------------------------------------------


def test_discovery_with_another_issuer_is_refused(issuer: str) -> None:
    port = httpx.URL(issuer).port
    for configured in (f"http://localhost:{port}", issuer + "/"):
        client = make_client(configured)
        with pytest.raises(
            OidcError, match=re.escape(f"names issuer '{issuer}', not the configured")
        ):
            client.metadata()
        with pytest.raises(OidcError, match="discovery"):
            client.begin(REDIRECT_URI)


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "streamed"])
def test_oversized_discovery_document_is_refused(declare_length: bool) -> None:
    body = json.dumps({"issuer": "x", "padding": "x" * MAX_RESPONSE_BYTES}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if declare_length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # HTTP/1.0 without a length: the body ends when the connection closes.
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            client = make_client(f"http://127.0.0.1:{server.server_address[1]}")
            with pytest.raises(OidcError, match=f"more than {MAX_RESPONSE_BYTES} bytes; refused"):
                client.metadata()
        finally:
            server.shutdown()
