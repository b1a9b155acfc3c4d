"""A served repository for the web and client tests: the demo slide with its metadata, the IIIF
validator's test image, an application on it, and a real server on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from slidebank.access.policy import COMMAND_LINE
from slidebank.catalog.queries import SlideFilter
from slidebank.config import Settings
from slidebank.services import browsing, ingesting, samples
from slidebank.services.repository import open_repository
from slidebank.web.app import create_app
from tests.helpers import iiif_validator_slide, stop_process

SLIDEBANK = Path(sys.executable).with_name("slidebank")


def stored_files(settings: Settings, slide_id: str) -> tuple[Path, ...]:
    """The stored files of a slide, found as its stewards find them (the storage key is not
    shown to readers)."""
    repository = open_repository(settings)
    try:
        image = browsing.show_slide(repository, COMMAND_LINE, slide_id)["image"]
        content = repository.store.content_dir(image["storage_key"])
        return tuple(content / stored["name"] for stored in image["files"])
    finally:
        repository.close()


@dataclass(frozen=True)
class ServedRepository:
    settings: Settings
    demo_id: str
    grid_id: str


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> ServedRepository:
    home = tmp_path_factory.mktemp("served") / "repo"
    settings = Settings(home=home)
    repository = open_repository(settings)
    try:
        ingesting.ingest_paths(
            repository, [samples.demo_slides(home)], "demo", samples.demo_sidecar(home)
        )
        grid = iiif_validator_slide(tmp_path_factory.mktemp("grid") / "iiif-grid.svs")
        ingesting.ingest_paths(repository, [grid], "iiif", None)
        demo = browsing.list_slides(repository, COMMAND_LINE, SlideFilter(dataset="demo"))
        squares = browsing.list_slides(repository, COMMAND_LINE, SlideFilter(dataset="iiif"))
    finally:
        repository.close()
    return ServedRepository(settings, demo[0]["id"], squares[0]["id"])


@pytest.fixture(scope="session")
def client(served: ServedRepository) -> Iterator[TestClient]:
    with TestClient(create_app(served.settings)) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_server(settings: Settings) -> Iterator[str]:
    """The application for ``settings`` served by uvicorn on a free loopback port, in a
    thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start within 30 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def serving_process(settings: Settings) -> Iterator[str]:
    """``slidebank serve`` as users start it, in its own process, on a free loopback port;
    yields its base URL. For tests that time the server: one in a thread shares the test
    process's interpreter, and with it the test process's garbage collections."""
    port = free_port()
    environment = {**os.environ, "SLIDEBANK_HOME": str(settings.home)}
    environment.pop("SLIDEBANK_DATABASE_URL", None)
    if settings.database_url:
        environment["SLIDEBANK_DATABASE_URL"] = settings.database_url
    command = [str(SLIDEBANK), "serve", "--port", str(port)]
    server = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):  # noqa: S310 - loopback
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    output = server.stdout.read().decode() if server.stdout else ""
                    pytest.fail(f"slidebank serve did not start within 60 s:\n{output}")
                time.sleep(0.1)
        yield url
    finally:
        stop_process(server, timeout=15)


@pytest.fixture(scope="session")
def live_server(served: ServedRepository) -> Iterator[str]:
    """The application served by uvicorn on a free loopback port; yields its base URL."""
    with running_server(served.settings) as url:
        yield url
