"""Credential lookups: concurrent requests with one token share one catalogue lookup, and a
lookup that began before a write is not cached."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI, Request

from slidebank.access.policy import COMMAND_LINE
from slidebank.config import Settings
from slidebank.services import accounts
from slidebank.web.app import create_app
from slidebank.web.auth import credential
from slidebank.web.state import AppState
from tests.helpers import HeldCalls, until


@dataclass
class Served:
    app: FastAPI
    state: AppState
    token: str


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    app = create_app(settings)
    state: AppState = app.state.slidebank
    accounts.add_user(state.repository, COMMAND_LINE, "ana", None)
    token = accounts.create_token(state.repository, COMMAND_LINE, "ana", "read", 1).token
    try:
        yield Served(app, state, token)
    finally:
        state.close()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> HeldCalls:
    return HeldCalls.in_place_of(monkeypatch, accounts, "principal_for_token")


def _request(served: Served) -> Request:
    """A fresh request carrying the token, as each tile request of a script would."""
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/api/slides",
            "headers": [(b"authorization", f"Bearer {served.token}".encode())],
            "app": served.app,
        }
    )


def test_concurrent_requests_with_one_token_share_one_lookup(
    served: Served, lookups: HeldCalls
) -> None:
    async def scenario() -> list[str]:
        found = await asyncio.gather(*(credential(_request(served)) for _ in range(16)))
        return [c.principal.name for c in found]

    assert asyncio.run(scenario()) == ["ana"] * 16
    assert lookups.calls == 1
    asyncio.run(scenario())  # cached for CREDENTIAL_TTL_S
    assert lookups.calls == 1


def test_a_lookup_that_began_before_a_write_is_not_cached(
    served: Served, lookups: HeldCalls
) -> None:
    lookups.go.clear()

    async def scenario() -> None:
        running = asyncio.ensure_future(credential(_request(served)))
        await until(lambda: lookups.calls == 1)
        served.state.credentials.clear()  # as after a request that may revoke the token
        lookups.go.set()
        await running
        await credential(_request(served))

    asyncio.run(scenario())
    assert lookups.calls == 2
