"""Small helpers for making bad inputs, inspecting a repository, stopping child processes and
holding calls in flight."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from sqlalchemy import func, select

from slidebank.catalog.tables import Case, Image, Observation, Slide
from slidebank.config import Settings
from slidebank.services.repository import Repository
from slidebank.storage import LocalBlobStore


def stored_state(repository: Repository) -> dict[str, int]:
    """Counts that must all be zero after a failed ingest into an empty repository."""
    with repository.catalogue.reading() as session:
        counts = {
            "images": session.scalar(select(func.count(Image.id))) or 0,
            "slides": session.scalar(select(func.count(Slide.id))) or 0,
            "cases": session.scalar(select(func.count(Case.id))) or 0,
            "observations": session.scalar(select(func.count(Observation.id))) or 0,
        }
    store = repository.store
    assert isinstance(store, LocalBlobStore)
    counts["objects"] = len(list(store.iter_keys()))
    counts["staging"] = len(list(store.staging_root.iterdir()))
    return counts


EMPTY = {"images": 0, "slides": 0, "cases": 0, "observations": 0, "objects": 0, "staging": 0}


def truncated_copy(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def corrupt_tile_copy(source: Path, target: Path, column: int, row: int) -> Path:
    """A copy of a tiled TIFF with one level-0 tile overwritten by garbage."""
    shutil.copyfile(source, target)
    with tifffile.TiffFile(target) as tiff:
        page = tiff.pages.first
        columns = -(-page.imagewidth // page.tilewidth)
        index = row * columns + column
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    with target.open("r+b") as handle:
        handle.seek(offset)
        handle.write(bytes(range(256)) * (count // 256) + b"\x00" * (count % 256))
    return target


def absurd_tiff(target: Path, side: int = 3_000_000) -> Path:
    """A tiled TIFF whose header claims ``side`` x ``side`` pixels."""
    tifffile.imwrite(target, np.zeros((256, 256, 3), np.uint8), tile=(256, 256), photometric="rgb")
    data = bytearray(target.read_bytes())
    with tifffile.TiffFile(target) as tiff:
        page = tiff.pages.first
        offsets = [page.tags[name].valueoffset for name in ("ImageWidth", "ImageLength")]
    for offset in offsets:
        struct.pack_into("<I", data, offset, side)
    target.write_bytes(bytes(data))
    return target


def unpyramided_tiff(target: Path, width: int, height: int) -> Path:
    """A tiled TIFF with one large level and no pyramid, written tile by tile."""
    tile = np.full((256, 256, 3), 230, np.uint8)
    count = -(-width // 256) * -(-height // 256)
    tifffile.imwrite(
        target,
        (tile for _ in range(count)),
        shape=(height, width, 3),
        dtype=np.uint8,
        tile=(256, 256),
        photometric="rgb",
        compression="zlib",
    )
    return target


def iiif_validator_slide(target: Path) -> Path:
    """The IIIF validator's test image (10×10 squares of 100 px, colours from its own table),
    written as a single-level Aperio SVS at a JPEG quality that keeps colours in tolerance."""
    from iiif_validator.validator import ValidationInfo

    from slidebank.samples import SvsSpec, Tissue, write_svs

    colours = ValidationInfo().colorInfo
    grid = np.zeros((1000, 1000, 3), np.uint8)
    for x in range(10):
        for y in range(10):
            grid[y * 100 : (y + 1) * 100, x * 100 : (x + 1) * 100] = colours[x][y]
    return write_svs(target, SvsSpec(1000, 1000, quality=95), Tissue(grid, 256))


def pseudonym_in(settings: Settings, kind: str, value: str) -> str:
    """The pseudonym the repository of ``settings`` gives a source identifier (its own key)."""
    from slidebank.deid.pseudonyms import Pseudonymizer, repository_key

    return Pseudonymizer(repository_key(settings)).pseudonym(kind, value)


def stop_process(process: subprocess.Popen[Any], timeout: float) -> None:
    """Terminate a child the test started; kill it if it has not ended within ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tallied_reads(events: list[dict[str, Any]], actor: str, action: str) -> dict[str, int]:
    """Reads counted in the audit trail by target, for one actor and action. Minutes may
    split a target's rows: the counts add up whatever the clock did."""
    counts: dict[str, int] = {}
    for event in events:
        if event["actor"] == actor and event["action"] == action:
            counts[event["target"]] = counts.get(event["target"], 0) + event["count"]
    return counts


class HeldCalls:
    """Wraps a real function (to monkeypatch in its place): counts the calls, and each call
    waits until ``go`` is set before running it. ``go`` is set unless a test clears it to
    keep calls in flight."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.calls = 0
        self.go = threading.Event()
        self.go.set()
        self._function = function

    @classmethod
    def in_place_of(cls, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> HeldCalls:
        """Put a HeldCalls around ``owner.name`` in its place for the test."""
        held = cls(getattr(owner, name))
        monkeypatch.setattr(owner, name, held)
        return held

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        assert self.go.wait(10), "the test never let the call run"
        return self._function(*args, **kwargs)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait on the event loop until ``condition()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)
