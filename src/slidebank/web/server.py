"""Running the application: one uvicorn process, or several sharing the port with SO_REUSEPORT.

uvicorn's own multi-process mode makes its workers accept from one shared socket; under load
one worker often accepts nearly every connection (measured with benchmarks/tiles.py: in some
rounds one of two workers did over 90% of the work), so a browser's six connections could
all land on one core. Here each worker binds its own socket to the same address with
SO_REUSEPORT and the kernel spreads connections between them. uvicorn has no option for
this, hence the small supervisor below.
"""

from __future__ import annotations

import gc
import multiprocessing
import signal
import socket
import sys
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

from slidebank.config import Settings

LOG_LEVEL = "warning"


def serve(settings: Settings, host: str, port: int, workers: int, access_log: bool) -> None:
    """Serve until interrupted; with ``workers`` > 1, one process per worker."""
    if workers == 1:
        _run_worker(settings, host, port, access_log)
        return
    context = multiprocessing.get_context("spawn")  # no inherited state: each builds its app
    children = [
        context.Process(
            target=_run_worker,
            args=(settings, host, port, access_log),
            name=f"slidebank-worker-{number}",
        )
        for number in range(workers)
    ]
    for child in children:
        child.start()
    _supervise(children)


def settle_heap() -> None:
    """Moves everything alive once a worker has built its application (modules, the ORM's
    mappings, templates: hundreds of thousands of objects) out of the cyclic garbage
    collector's reach. Its full collections walk every tracked object, and a window of
    annotations allocates enough to set one off now and then: 80–100 ms pauses, the p99 of
    annotation windows on PostgreSQL (120 ms, against 33 ms with start-up frozen). Only in
    the worker process: in a process that builds many applications (tests), frozen ones
    would never be collected."""
    gc.collect()
    gc.freeze()


def _run_worker(settings: Settings, host: str, port: int, access_log: bool) -> None:
    from slidebank.web.app import create_app

    listener = _listening_socket(host, port)
    config = uvicorn.Config(
        create_app(settings), access_log=access_log, log_level=LOG_LEVEL, lifespan="on"
    )
    settle_heap()
    uvicorn.Server(config).run(sockets=[listener])


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.listen(2048)
    return listener


def _supervise(children: Sequence[BaseProcess]) -> None:
    """Wait for the workers; stop them all when one dies or when we are told to stop."""
    stopping = False

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if signum == signal.SIGINT:
            return  # Ctrl-C reached the workers too, through the process group
        for child in children:
            if child.is_alive():
                child.terminate()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    failed = False
    while any(child.is_alive() for child in children):
        for child in children:
            child.join(timeout=0.5)
            if not child.is_alive() and child.exitcode not in (0, None) and not stopping:
                failed = True
                stopping = True
                for other in children:
                    if other.is_alive():
                        other.terminate()
    if failed:
        sys.exit(1)
