"""AppState's cache of dataset policies: one catalogue load for the requests that find it
out of date together, and none kept that began before a write."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from slidebank.catalog import queries
from slidebank.catalog.entries import DatasetEntry
from slidebank.config import Settings
from slidebank.services import accounts
from slidebank.web.app import create_app
from slidebank.web.state import AppState
from tests.helpers import HeldCalls, until


@pytest.fixture
def state(settings: Settings) -> Iterator[tuple[AppState, int]]:
    app_state: AppState = create_app(settings).state.slidebank
    with app_state.repository.catalogue.transaction() as session:
        dataset_id = queries.ensure_dataset(session, DatasetEntry("d")).id
    try:
        yield app_state, dataset_id
    finally:
        app_state.close()


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> HeldCalls:
    return HeldCalls.in_place_of(monkeypatch, accounts, "gates")


def test_requests_that_find_the_policies_stale_together_share_one_load(
    state: tuple[AppState, int], loads: HeldCalls
) -> None:
    app_state, dataset_id = state

    async def scenario() -> list[str]:
        gates = await asyncio.gather(*(app_state.gate(dataset_id) for _ in range(32)))
        return [gate.name for gate in gates]

    assert asyncio.run(scenario()) == ["d"] * 32
    assert loads.calls == 1
    asyncio.run(scenario())  # fresh for GATES_TTL_S: no load at all
    assert loads.calls == 1


def test_a_load_that_began_before_a_write_is_not_kept(
    state: tuple[AppState, int], loads: HeldCalls
) -> None:
    app_state, dataset_id = state
    loads.go.clear()

    async def scenario() -> None:
        before = asyncio.ensure_future(app_state.gate(dataset_id))
        await until(lambda: loads.calls == 1)
        app_state.forget_gates()  # as after a request that may have changed a policy
        after = asyncio.ensure_future(app_state.gate(dataset_id))
        await until(lambda: loads.calls == 2)  # its own load, not the one running
        loads.go.set()
        await asyncio.gather(before, after)
        await app_state.gate(dataset_id)

    asyncio.run(scenario())
    assert loads.calls == 2  # the second load, begun after the write, was kept


def test_a_stale_load_alone_leaves_the_cache_out_of_date(
    state: tuple[AppState, int], loads: HeldCalls
) -> None:
    app_state, dataset_id = state
    loads.go.clear()

    async def scenario() -> None:
        running = asyncio.ensure_future(app_state.gate(dataset_id))
        await until(lambda: loads.calls == 1)
        app_state.forget_gates()
        loads.go.set()
        await running
        await app_state.gate(dataset_id)

    asyncio.run(scenario())
    assert loads.calls == 2
