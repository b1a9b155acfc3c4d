"""One load for many waiters: requests that find a cached value out of date at the same
moment share a single load instead of each starting its own, and the cache keeps a load's
value only if nothing was forgotten while it ran.

Without it, the moment a worker's cached dataset policies expire, every request in flight
(32 at concurrency 32) queried the catalogue on a thread of its own; those queries hold the
GIL in SQLAlchemy, so the event loop stalled until all were done. Written here because it
is a few lines on asyncio's own tasks; the caching libraries that do this (aiocache,
async-lru) bring their own expiry rules, and ours must also drop a load that began before a
write (``forget``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class SingleFlight(Generic[Key, Value]):
    """Loads by key, shared by the callers that ask while one runs."""

    def __init__(self) -> None:
        self._running: dict[Key, asyncio.Task[Value]] = {}

    async def load(
        self,
        key: Key,
        loader: Callable[[], Awaitable[Value]],
        keep: Callable[[Value], None],
    ) -> Value:
        """``loader()``'s value, from the load of ``key`` already running if there is one.
        ``keep(value)`` stores it in the caller's cache, unless ``forget`` was called while
        the load ran. A caller that is cancelled does not cancel the load the others wait
        for."""
        task = self._running.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(self._run(key, loader, keep))
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def forget(self) -> None:
        """Callers from now on start new loads, and the values of the running ones are not
        kept: they may have read what a write has changed since (their own waiters still
        get them)."""
        self._running.clear()

    async def _run(
        self, key: Key, loader: Callable[[], Awaitable[Value]], keep: Callable[[Value], None]
    ) -> Value:
        value = await loader()
        if self._running.get(key) is asyncio.current_task():  # not forgotten meanwhile
            keep(value)
        return value

    def _finished(self, key: Key, task: asyncio.Task[Value]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failed load is raised to its waiters, not logged
