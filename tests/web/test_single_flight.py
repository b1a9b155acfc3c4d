"""SingleFlight: concurrent callers share one load, whose value is kept unless forgotten
meanwhile; forget and failures start afresh."""

from __future__ import annotations

import asyncio

from slidebank.web.single_flight import SingleFlight


class Loader:
    """Counts its loads; each waits until released, then answers its number. ``keep`` is
    the cache's side: it records the values kept."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()
        self.fail = False
        self.kept: list[int] = []

    def keep(self, value: int) -> None:
        self.kept.append(value)

    async def __call__(self) -> int:
        self.started += 1
        number = self.started
        await self.release.wait()
        if self.fail:
            raise RuntimeError(f"load {number} failed")
        return number


def test_callers_that_ask_while_a_load_runs_share_it() -> None:
    async def scenario() -> tuple[list[int], int]:
        flight: SingleFlight[str, int] = SingleFlight()
        loader = Loader()
        waiting = [asyncio.ensure_future(flight.load("k", loader, loader.keep)) for _ in range(32)]
        await asyncio.sleep(0)
        loader.release.set()
        values = list(await asyncio.gather(*waiting))
        assert loader.kept == [1]  # kept once, for all the callers
        return values, loader.started

    values, loads = asyncio.run(scenario())
    assert loads == 1
    assert values == [1] * 32


def test_a_finished_load_is_not_reused_and_keys_load_apart() -> None:
    async def scenario() -> tuple[list[int], int]:
        flight: SingleFlight[str, int] = SingleFlight()
        loader = Loader()
        loader.release.set()
        first = await flight.load("k", loader, loader.keep)
        second = await flight.load("k", loader, loader.keep)
        other = await flight.load("other", loader, loader.keep)
        return [first, second, other], loader.started

    values, loads = asyncio.run(scenario())
    assert values == [1, 2, 3]
    assert loads == 3


def test_after_forget_callers_start_a_new_load_and_only_its_value_is_kept() -> None:
    async def scenario() -> tuple[int, int, int, list[int]]:
        flight: SingleFlight[str, int] = SingleFlight()
        loader = Loader()
        before = asyncio.ensure_future(flight.load("k", loader, loader.keep))
        await asyncio.sleep(0)
        flight.forget()
        after = asyncio.ensure_future(flight.load("k", loader, loader.keep))
        await asyncio.sleep(0)
        loader.release.set()
        return await before, await after, loader.started, loader.kept

    before, after, loads, kept = asyncio.run(scenario())
    assert (before, after, loads) == (1, 2, 2)  # the earlier caller still gets its load's
    assert kept == [2]  # but only the load begun after forget is kept


def test_a_failed_load_reaches_every_waiter_and_the_next_call_tries_again() -> None:
    async def scenario() -> tuple[list[BaseException | int], int]:
        flight: SingleFlight[str, int] = SingleFlight()
        loader = Loader()
        loader.fail = True
        waiting = [asyncio.ensure_future(flight.load("k", loader, loader.keep)) for _ in range(3)]
        await asyncio.sleep(0)
        loader.release.set()
        outcomes = list(await asyncio.gather(*waiting, return_exceptions=True))
        loader.fail = False
        outcomes.append(await flight.load("k", loader, loader.keep))
        return outcomes, loader.started

    outcomes, loads = asyncio.run(scenario())
    assert [str(o) for o in outcomes[:3]] == ["load 1 failed"] * 3
    assert outcomes[3] == 2
    assert loads == 2


def test_a_cancelled_caller_does_not_cancel_the_load_of_the_others() -> None:
    async def scenario() -> tuple[bool, int, int]:
        flight: SingleFlight[str, int] = SingleFlight()
        loader = Loader()
        leaving = asyncio.ensure_future(flight.load("k", loader, loader.keep))
        staying = asyncio.ensure_future(flight.load("k", loader, loader.keep))
        await asyncio.sleep(0)
        leaving.cancel()
        await asyncio.sleep(0)
        loader.release.set()
        return leaving.cancelled(), await staying, loader.started

    cancelled, value, loads = asyncio.run(scenario())
    assert cancelled
    assert (value, loads) == (1, 1)


def test_loads_of_a_closed_event_loop_are_not_awaited_from_another() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    stuck = Loader()  # never released: its loop is closed with the load still pending
    old_loop = asyncio.new_event_loop()

    async def abandon() -> None:
        pending = asyncio.ensure_future(flight.load("k", stuck, stuck.keep))
        await asyncio.sleep(0)
        assert not pending.done()

    old_loop.run_until_complete(abandon())
    old_loop.close()  # without cancelling its tasks: the load stays registered
    fresh = Loader()
    fresh.release.set()
    assert asyncio.run(flight.load("k", fresh, fresh.keep)) == 1
    assert (stuck.started, fresh.started, fresh.kept) == (1, 1, [1])
