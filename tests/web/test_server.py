"""`slidebank serve` as users run it: one process or several workers on one port, each
listening itself (SO_REUSEPORT), all stopped cleanly by SIGTERM; a failing worker stops all."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.served import ServedRepository, free_port

SLIDEBANK = Path(sys.executable).with_name("slidebank")


def start(home: Path, port: int, workers: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(SLIDEBANK),
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--home",
            str(home),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until_listening(port: int, listeners: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [
            c for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        ]  # fmt: skip
        if len(found) >= listeners:
            return
        time.sleep(0.2)
    pytest.fail(f"{listeners} listening socket(s) on port {port} did not appear")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
        return str(answer.read().decode())


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_and_stops_on_sigterm(served: ServedRepository, workers: int) -> None:
    port = free_port()
    server = start(served.settings.home, port, workers)
    try:
        wait_until_listening(port, workers)
        for _ in range(10):  # new connections, spread over the workers
            assert get(f"http://127.0.0.1:{port}/healthz") == "ok"
        listing = get(f"http://127.0.0.1:{port}/api/slides")
        assert served.demo_id in listing
        children = psutil.Process(server.pid).children(recursive=True)
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    # uvicorn shuts down gracefully, then lets SIGTERM end the process as it would have.
    assert server.returncode in (0, -signal.SIGTERM), output
    assert f"http://127.0.0.1:{port}" in output
    _, alive = psutil.wait_procs(children, timeout=15)
    assert alive == []
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_a_worker_that_cannot_start_stops_the_server(served: ServedRepository) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))  # taken without SO_REUSEPORT: the workers cannot bind it
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        server = start(served.settings.home, port, 2)
        output, _ = server.communicate(timeout=60)
    finally:
        blocker.close()
    assert server.returncode == 1
    assert "Address already in use" in output


@pytest.mark.parametrize("workers", [1, 2])
def test_a_repository_that_cannot_open_fails_at_once_with_the_reason(
    tmp_path: Path, workers: int
) -> None:
    not_a_folder = tmp_path / "home"
    not_a_folder.write_text("a file where the repository should be")
    server = start(not_a_folder, free_port(), workers)
    output, _ = server.communicate(timeout=60)
    assert server.returncode == 1
    assert str(not_a_folder) in output and "cannot create repository folder" in output
    assert "serving" not in output


def test_a_worker_does_not_load_what_few_requests_need(tmp_path: Path) -> None:
    """scipy (agreement) and highdicom (DICOM annotations) cost a server worker about 66 MB;
    they are imported when first used, not when the application is built."""
    script = (
        "import sys\n"
        "from slidebank.config import Settings\n"
        "from slidebank.web.app import create_app\n"
        f"create_app(Settings(home={str(tmp_path / 'home')!r}))\n"
        "print(sorted(m for m in ('scipy', 'highdicom') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"
