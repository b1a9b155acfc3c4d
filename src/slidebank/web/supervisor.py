"""The supervisor of ``slidebank serve --workers N``: starts the worker processes and waits;
stops them all when one dies or when it is told to stop. Standard library only (it lives as
long as the server, and every module it imported would stay in memory)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

WORKER = "slidebank.web.server"


def supervise(children: Sequence[subprocess.Popen[bytes]]) -> int:
    """Wait for the workers; 1 when one failed by itself, else 0."""
    stopping = False

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if signum == signal.SIGINT:
            return  # Ctrl-C reached the workers too, through the process group
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    failed = False
    while any(child.poll() is None for child in children):
        for child in children:
            try:
                child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            if child.returncode not in (0, None) and not stopping:
                failed = True
                stopping = True
                for other in children:
                    if other.poll() is None:
                        other.terminate()
    return 1 if failed else 0


def main(arguments: list[str]) -> int:
    """``WORKERS HOST PORT [--access-log]``, in the workers' environment."""
    workers, host, port, *flags = arguments
    command = [sys.executable, "-m", WORKER, host, port, *flags]
    return supervise([subprocess.Popen(command) for _ in range(int(workers))])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
