"""Running the application: one uvicorn process, or several sharing the port with SO_REUSEPORT.

uvicorn's own multi-process mode makes its workers accept from one shared socket; under load
one worker often accepts nearly every connection (measured with benchmarks/tiles.py: in some
rounds one of two workers did over 90% of the work), so a browser's six connections could
all land on one core. Here each worker binds its own socket to the same address with
SO_REUSEPORT and the kernel spreads connections between them. uvicorn has no option for
this, hence the small supervisor below.

Workers are separate Python processes (``python -m slidebank.web.server``) that build their
settings from the same environment, rather than multiprocessing children: those bring a
resource-tracker process (13 MB) and the parent's imports. The command replaces itself with
the supervisor (``web/supervisor.py``, standard library only), and the repository check
before it runs in a short-lived process, so that no library the command line loaded stays
in memory for the server's life.
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys

import uvicorn

from slidebank.config import Settings
from slidebank.errors import SlidebankError

LOG_LEVEL = "warning"


def serve(settings: Settings, host: str, port: int, workers: int, access_log: bool) -> None:
    """Serve until interrupted; with ``workers`` > 1, one process per worker."""
    if workers == 1:
        _run_worker(settings, host, port, access_log)
        return
    # This process becomes the supervisor (same pid, so signals still reach it), as a fresh
    # interpreter that imports only the standard library: 12 MB instead of the command
    # line's 47 MB, kept for the server's life.
    arguments = [str(workers), host, str(port), *(["--access-log"] * access_log)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(  # noqa: S606 - our own interpreter and module, no shell
        sys.executable,
        [sys.executable, "-m", "slidebank.web.supervisor", *arguments],
        worker_environment(settings),
    )


def worker_environment(settings: Settings) -> dict[str, str]:
    """The environment from which a worker builds the same settings: the command line's
    overrides (home, catalogue) join the ``SLIDEBANK_*`` variables it was built from."""
    environment = {**os.environ, "SLIDEBANK_HOME": str(settings.home)}
    if settings.database_url:
        environment["SLIDEBANK_DATABASE_URL"] = settings.database_url
    return environment


def check_repository(settings: Settings, workers: int) -> None:
    """Open the repository once, so that one that cannot open fails the command at once,
    with the reason (``SlidebankError``). With several workers, in a short-lived process."""
    if workers == 1:
        from slidebank.services.repository import open_repository

        open_repository(settings).close()  # the one worker, this process, imports it anyway
        return
    result = subprocess.run(
        [sys.executable, "-m", __name__, "--check"],
        env=worker_environment(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1:] or ["the repository did not open"]
        raise SlidebankError(reason[0])


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


def _main(arguments: list[str]) -> None:
    """A worker (``HOST PORT [--access-log]``) or the repository check (``--check``)."""
    settings = Settings.from_env()
    if arguments == ["--check"]:
        from slidebank.services.repository import open_repository

        try:
            open_repository(settings).close()
        except SlidebankError as exc:
            print(exc, file=sys.stderr)
            sys.exit(2)
        return
    host, port, *flags = arguments
    _run_worker(settings, host, int(port), "--access-log" in flags)


if __name__ == "__main__":
    _main(sys.argv[1:])
