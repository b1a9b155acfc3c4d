"""Benchmark: DeepZoom tiles from ``slidebank serve`` against openslide-python's DeepZoomGenerator.

One run, on one large generated SVS (real CMU-1 JPEG tiles, ``benchmarks/make_slide.py``)
ingested into a repository under benchmarks/data:

* a fixed, seeded pan-and-zoom session as OpenSeadragon requests it (below) is replayed at
  concurrency 1, 8 and 32 against ``slidebank serve`` and against the baseline, a minimal
  Starlette app answering the same URLs with ``openslide.deepzoom.DeepZoomGenerator`` and
  Pillow JPEG encoding (``benchmarks/baseline_deepzoom.py``); both under uvicorn with the
  same number of worker processes;
* the HTTP floor: ``/healthz``, a constant "ok" through the same stack as the tiles
  (uvicorn, the slidebank application, a plain Starlette route like the tile routes), and
  for comparison the baseline's Starlette ``/healthz``;
* a passthrough-only trace: whole tiles of the highest DeepZoom level only, which slidebank
  answers with the stored JPEG bytes, against that floor;
* memory: after the throughput runs, a few tiles of each of 200 small ingested slides, then
  the RSS of the server processes (psutil).

Rounds alternate the servers (and swap their order every round); the figures are medians
over rounds. Every run replays its whole trace exactly once with ``wrk`` (one thread, N
connections taking the next URL of the trace in order, as a browser's connection pool
does), so both servers do the same work; the rate is requests completed divided by the
time from the first request sent to the last response received.

The trace: a 1600 x 1000 px viewport; the session opens on the whole slide, then at a few
seeded places zooms in to 1:1 one wheel step (1.2x) at a time about the pointer, pans at
1:1 (drags of 150-700 px with momentum), steps back to about 1:3 and pans a little, and
zooms out to the whole slide. For each viewport it requests the tiles of the DeepZoom level
OpenSeadragon shows (the finest level not drawn below half a screen pixel per image pixel,
its default ``minPixelRatio``) covering the viewport, preceded by those of the coarser
levels it loads first, down to two levels below the whole-slide view, each level's tiles
nearest the centre first; a tile is requested once in the session (the browser caches it).

Goals (from the issue, for this 2-core machine): slidebank >= 10 x the baseline's tiles/s
at concurrency 8; passthrough tiles >= 70% of the HTTP floor; p99 < 100 ms at
concurrency 32; server RSS <= 500 MB after serving tiles from 200 different slides.

    python benchmarks/tiles.py                  # 100,000 x 80,000 px slide, 5 rounds
    python benchmarks/tiles.py --quick          # smoke run: small slide, short traces, 1 round
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import openslide
import psutil
from PIL import Image

from ingest import machine_facts, slidebank_command, warm
from make_slide import PROJECT_ROOT, estimate_bytes, load_tissue, make_slide

BENCHMARKS = Path(__file__).resolve().parent
DATA = BENCHMARKS / "data"
RESULTS = BENCHMARKS / "results"
HOME = DATA / "tiles-home"
RSS_FOLDER = DATA / "tiles-rss"
LOGS = DATA / "tiles-logs"  # the servers' output of the last run
DATASET = "tiles-benchmark"
RSS_DATASET = "tiles-benchmark-rss"

VIEW_W, VIEW_H = 1600, 1000
ZOOM_STEP = 1.2  # one mouse-wheel step in OpenSeadragon
CONCURRENCIES = (1, 8, 32)
SERVERS = ("slidebank", "baseline")
WORKERS = 2
SEED = 20261128

GOAL_RATIO = 10.0  # slidebank / baseline tiles/s at concurrency 8
GOAL_RATIO_AT = 8
GOAL_FLOOR_FRACTION = 0.70  # passthrough tiles/s / HTTP floor
GOAL_FLOOR_AT = 8
GOAL_P99_MS = 100.0  # at concurrency 32
GOAL_P99_AT = 32
GOAL_RSS_MB = 500.0

# libjpeg-turbo's DCT scaling factors, and the tolerance on a level's downsample, as
# slidebank's src/slidebank/tiles/rendering.py uses them (to label the trace's mix).
DCT_FACTORS = (1, 2, 4, 8)
SCALE_TOLERANCE = 0.01


@dataclass(frozen=True)
class Profile:
    """How much work one run of the benchmark does."""

    width: int
    height: int
    rounds: int
    pan_zoom: int  # requests in the pan-and-zoom trace
    warmup: int
    passthrough: int
    floor: int
    rss_slides: int
    rss_size: tuple[int, int]


FULL = Profile(100_000, 80_000, 5, 5000, 400, 20_000, 30_000, 200, (4000, 3000))
QUICK = Profile(20_000, 16_000, 1, 600, 100, 3000, 6000, 20, (2000, 1500))


# --------------------------------------------------------------------------- the trace


@dataclass(frozen=True)
class Pyramid:
    """The DeepZoom pyramid of a ``width`` x ``height`` slide (overlap 0)."""

    width: int
    height: int
    tile: int

    @property
    def levels(self) -> int:
        longest = max(self.width, self.height)
        return math.ceil(math.log2(longest)) + 1 if longest > 1 else 1

    @property
    def top(self) -> int:
        return self.levels - 1

    def scale(self, level: int) -> int:
        return int(2 ** (self.top - level))

    def size(self, level: int) -> tuple[int, int]:
        scale = self.scale(level)
        return -(-self.width // scale), -(-self.height // scale)

    def grid(self, level: int) -> tuple[int, int]:
        width, height = self.size(level)
        return -(-width // self.tile), -(-height // self.tile)

    def fit_zoom(self) -> float:
        """Level-0 pixels per screen pixel when the whole slide fills the viewport."""
        return max(self.width / VIEW_W, self.height / VIEW_H, 1.0)

    def level_for_zoom(self, zoom: float) -> int:
        """The level OpenSeadragon draws at ``zoom`` level-0 px per screen px: the finest
        whose pixels are at least half a screen pixel (``minPixelRatio`` 0.5)."""
        power = math.floor(math.log2(max(zoom, 1.0)) + 1e-9)
        return max(0, self.top - power)

    def visible(self, level: int, cx: float, cy: float, zoom: float) -> list[tuple[int, int]]:
        """Tiles of ``level`` covering the viewport centred at (cx, cy), nearest first."""
        scale, tile = self.scale(level), self.tile
        x0 = max(0.0, cx - VIEW_W / 2 * zoom) / scale
        x1 = min(float(self.width), cx + VIEW_W / 2 * zoom) / scale
        y0 = max(0.0, cy - VIEW_H / 2 * zoom) / scale
        y1 = min(float(self.height), cy + VIEW_H / 2 * zoom) / scale
        columns, rows = self.grid(level)
        c0, c1 = int(x0 // tile), min(columns - 1, math.ceil(x1 / tile) - 1)
        r0, r1 = int(y0 // tile), min(rows - 1, math.ceil(y1 / tile) - 1)
        centre = (cx / scale / tile - 0.5, cy / scale / tile - 0.5)
        tiles = [(c, r) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
        return sorted(tiles, key=lambda t: (t[0] - centre[0]) ** 2 + (t[1] - centre[1]) ** 2)

    def whole(self, level: int, column: int, row: int) -> bool:
        """Whether a tile is full-sized (not cut by the level's right or bottom edge)."""
        width, height = self.size(level)
        return (column + 1) * self.tile <= width and (row + 1) * self.tile <= height


Tile = tuple[int, int, int]  # (level, column, row)


class Session:
    """The tiles a browser requests while its viewport moves, each once."""

    def __init__(self, pyramid: Pyramid) -> None:
        self.pyramid = pyramid
        self.requests: list[Tile] = []
        self.seen: set[Tile] = set()
        self.lowest = max(0, pyramid.level_for_zoom(pyramid.fit_zoom()) - 2)
        self.cx, self.cy, self.zoom = pyramid.width / 2, pyramid.height / 2, pyramid.fit_zoom()

    def view(self) -> None:
        p = self.pyramid
        half_w, half_h = VIEW_W / 2 * self.zoom, VIEW_H / 2 * self.zoom
        # OpenSeadragon keeps the image on screen; keep the centre over the slide.
        self.cx = min(max(self.cx, min(half_w, p.width / 2)), max(p.width - half_w, p.width / 2))
        self.cy = min(max(self.cy, min(half_h, p.height / 2)), max(p.height - half_h, p.height / 2))
        for level in range(self.lowest, p.level_for_zoom(self.zoom) + 1):
            for column, row in p.visible(level, self.cx, self.cy, self.zoom):
                tile = (level, column, row)
                if tile not in self.seen:
                    self.seen.add(tile)
                    self.requests.append(tile)

    def zoom_to(self, target: float, px: float, py: float) -> None:
        """Wheel steps towards ``target`` zoom about the pointer at level-0 (px, py)."""
        while abs(math.log(self.zoom / target)) > 1e-9:
            step = ZOOM_STEP if target > self.zoom else 1 / ZOOM_STEP
            new = min(self.zoom * step, target) if step > 1 else max(self.zoom * step, target)
            self.cx = px + (self.cx - px) * new / self.zoom
            self.cy = py + (self.cy - py) * new / self.zoom
            self.zoom = new
            self.view()

    def pan(self, rng: random.Random, steps: int) -> None:
        """Drags of 150-700 screen px in a direction that wanders."""
        angle = rng.uniform(0, 2 * math.pi)
        for _ in range(steps):
            angle += rng.gauss(0, 0.6)
            distance = rng.uniform(150, 700) * self.zoom
            cx, cy = self.cx + math.cos(angle) * distance, self.cy + math.sin(angle) * distance
            if not 0 < cx < self.pyramid.width:
                angle = math.pi - angle  # bounce off the slide's edge
            if not 0 < cy < self.pyramid.height:
                angle = -angle
            self.cx, self.cy = cx, cy
            self.view()


def pan_zoom_trace(pyramid: Pyramid, count: int, seed: int) -> list[Tile]:
    """``count`` tile requests of a seeded OpenSeadragon session (see the module docstring)."""
    rng = random.Random(seed)
    session = Session(pyramid)
    session.view()
    fit = pyramid.fit_zoom()
    while len(session.requests) < count:
        px = rng.uniform(0.1, 0.9) * pyramid.width
        py = rng.uniform(0.1, 0.9) * pyramid.height
        session.zoom_to(1.0, px, py)
        session.pan(rng, 40)
        session.zoom_to(min(3.0, fit), session.cx, session.cy)
        session.pan(rng, 8)
        session.zoom_to(fit, session.cx, session.cy)
    return session.requests[:count]


def passthrough_trace(pyramid: Pyramid, count: int, seed: int) -> list[Tile]:
    """``count`` distinct whole tiles of the highest level, as panning at 1:1 meets them."""
    rng = random.Random(seed)
    top, tile = pyramid.top, pyramid.tile
    columns, rows = pyramid.grid(top)
    whole = (pyramid.width // tile) * (pyramid.height // tile)
    if count > whole:
        raise SystemExit(f"error: the slide has only {whole} whole level-0 tiles, not {count}")
    seen: set[Tile] = set()
    requests: list[Tile] = []
    session = Session(pyramid)
    session.zoom = 1.0
    while len(requests) < count:
        session.cx = rng.uniform(0, pyramid.width)
        session.cy = rng.uniform(0, pyramid.height)
        angle = rng.uniform(0, 2 * math.pi)
        for _ in range(60):
            angle += rng.gauss(0, 0.6)
            session.cx += math.cos(angle) * rng.uniform(150, 700)
            session.cy += math.sin(angle) * rng.uniform(150, 700)
            session.cx = min(max(session.cx, 0.0), float(pyramid.width))
            session.cy = min(max(session.cy, 0.0), float(pyramid.height))
            for column, row in pyramid.visible(top, session.cx, session.cy, 1.0):
                key = (top, column, row)
                if key not in seen and pyramid.whole(top, column, row):
                    seen.add(key)
                    requests.append(key)
    assert all(0 <= c < columns and 0 <= r < rows for _, c, r in requests)
    return requests[:count]


def tile_path(slide_id: str, tile: Tile) -> str:
    level, column, row = tile
    return f"/deepzoom/{slide_id}_files/{level}/{column}_{row}.jpeg"


@dataclass(frozen=True)
class StoredLevel:
    downsample: float
    width: int
    height: int
    tile: int | None


def stored_levels(path: Path) -> list[StoredLevel]:
    with openslide.OpenSlide(str(path)) as slide:
        levels = []
        for index, ((width, height), downsample) in enumerate(
            zip(slide.level_dimensions, slide.level_downsamples, strict=True)
        ):
            tile = slide.properties.get(f"openslide.level[{index}].tile-width")
            levels.append(
                StoredLevel(float(downsample), int(width), int(height), int(tile) if tile else None)
            )
    return levels


def catalogue_levels(slide_id: str) -> list[StoredLevel]:
    """The levels of the slide's stored copy, as the catalogue lists them."""
    image = json.loads(run_cli("show", slide_id, "--json"))["image"]
    return [
        StoredLevel(
            float(level["downsample"]), level["width"], level["height"], level["tile_width"]
        )
        for level in image["levels"]
    ]


def how_served(pyramid: Pyramid, stored: Sequence[StoredLevel], tile: Tile) -> str:
    """How slidebank answers a DeepZoom tile, by the rules of its tiles/rendering.py
    (coarsest stored level at scale x DCT factor; factor 1 and an aligned whole stored
    tile pass through): modelled here to label the trace, not asked of the server."""
    level = tile[0]
    scale = pyramid.scale(level)
    for index in reversed(range(len(stored))):
        ratio = scale / stored[index].downsample
        for factor in DCT_FACTORS:
            if abs(ratio - factor) <= SCALE_TOLERANCE * factor:
                return _served_from(pyramid, stored, tile, index, factor)
    return "resampled (OpenSlide region + Pillow)"


def _served_from(
    pyramid: Pyramid, stored: Sequence[StoredLevel], tile: Tile, index: int, factor: int
) -> str:
    level, column, row = tile
    if factor > 1:
        return f"stored level {index} decoded at 1/{factor} (DCT)"
    found = stored[index]
    t, scale = pyramid.tile, pyramid.scale(level)
    x = round(column * t * scale / found.downsample)
    y = round(row * t * scale / found.downsample)
    aligned = found.tile == t and x % t == 0 and y % t == 0
    inside = x + t <= found.width and y + t <= found.height
    if aligned and inside and pyramid.whole(level, column, row):
        return f"passthrough of stored level {index}"
    return f"stored level {index} decoded, cropped, re-encoded (edge or unaligned)"


def passthrough_level(pyramid: Pyramid, stored: Sequence[StoredLevel], level: int) -> int | None:
    """The stored level whose downsample is this DeepZoom level's scale, if any."""
    scale = pyramid.scale(level)
    for index, found in enumerate(stored):
        if abs(scale - found.downsample) <= SCALE_TOLERANCE * scale:
            return index
    return None


def trace_mix(
    pyramid: Pyramid, stored: Sequence[StoredLevel], trace: Sequence[Tile]
) -> dict[str, Any]:
    by_level = Counter(level for level, _, _ in trace)
    kinds = Counter(how_served(pyramid, stored, tile) for tile in trace)
    rows = []
    for level in sorted(by_level):
        served = Counter(how_served(pyramid, stored, t) for t in trace if t[0] == level)
        rows.append(
            {
                "level": level,
                "scale": pyramid.scale(level),
                "grid": list(pyramid.grid(level)),
                "requests": by_level[level],
                "fraction": by_level[level] / len(trace),
                "stored_level_at_scale": passthrough_level(pyramid, stored, level),
                "served": dict(served.most_common()),
            }
        )
    at_passthrough_levels = sum(
        count
        for level, count in by_level.items()
        if passthrough_level(pyramid, stored, level) is not None
    )
    passthrough = sum(count for kind, count in kinds.items() if kind.startswith("passthrough"))
    return {
        "requests": len(trace),
        "levels": rows,
        "served": dict(kinds.most_common()),
        "fraction_at_passthrough_levels": at_passthrough_levels / len(trace),
        "fraction_passthrough_tiles": passthrough / len(trace),
    }


# --------------------------------------------------------------------------- load generator

# wrk replays a trace file once: each thread takes every n-th line; its connections take the
# next URL as they become free (delay() reserves it, request() sends it). wrk calls delay()
# once when a connection opens and once after each response, so responses are counted there
# without a Lua response() hook (which would copy every body into Lua and slow the client).
# Once the thread's share is all issued, delay() parks the connection; at the last response
# the thread stops and leaves a marker file, on which the caller interrupts wrk (whose own
# clock runs to -d). Times come from CLOCK_MONOTONIC through LuaJIT's FFI.
REPLAY_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
local PARK = 100000000  -- ms

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local trace, nthreads = args[1], tonumber(args[3])
  marker = args[2]
  connections = tonumber(args[4]) / nthreads
  paths = {}
  local i = 0
  for line in io.lines(trace) do
    if i % nthreads == id then paths[#paths + 1] = line end
    i = i + 1
  end
  total = #paths
  calls, reserved, issued, completed = 0, 0, 0, 0
  t_start, t_end = -1, -1
end

function delay()
  calls = calls + 1
  completed = math.max(0, calls - connections)
  if completed >= total then
    if t_end < 0 then
      t_end = now()
      local f = io.open(marker .. "." .. id, "w")
      f:write("done\n")
      f:close()
      wrk.thread:stop()
    end
    return PARK
  end
  if reserved < total then
    reserved = reserved + 1
    return 0
  end
  return PARK
end

function request()
  if issued >= reserved then
    -- wrk calls request() once before the run to check the script: not sent, not counted
    return wrk.format("GET", paths[1])
  end
  issued = issued + 1
  if t_start < 0 then t_start = now() end
  return wrk.format("GET", paths[issued])
end

function done(summary, latency, requests)
  local first, last, n, finished = nil, nil, 0, true
  for _, t in ipairs(threads) do
    local s, e = t:get("t_start"), t:get("t_end")
    if e < 0 then finished = false end
    if first == nil or s < first then first = s end
    if last == nil or e > last then last = e end
    n = n + t:get("completed")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"completed": %d, "responses": %d, "bytes": %d, "finished": %s, '
    .. '"seconds": %.6f, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"mean_us": %.1f, "errors": {"connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d}}\n',
    n, summary.requests, summary.bytes, tostring(finished), last - first,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Run:
    server: str
    trace: str
    connections: int
    round: int
    requests: int
    seconds: float
    rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    mbytes: float
    server_cpu_s: float
    wrk_cpu_s: float
    worker_cpu_s: list[float]  # per server process, largest first
    others_cpu_s: float  # CPU time the rest of the machine used meanwhile (other users)
    steal_s: float


@dataclass
class Usage:
    """CPU time during one run (seconds)."""

    server_cpu_s: float
    wrk_cpu_s: float
    worker_cpu_s: list[float]  # per server process, largest first
    others_cpu_s: float  # the rest of the machine meanwhile (other users)
    steal_s: float


class RunFailed(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In a child before exec: be killed if the benchmark dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Replayer:
    """Runs wrk over trace files written into one scratch folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.script = folder / "replay.lua"
        self.script.write_text(REPLAY_LUA)
        self.traces: dict[str, Path] = {}
        self.lengths: dict[str, int] = {}
        self.count = 0
        self.wrk = shutil.which("wrk")
        if self.wrk is None:
            raise SystemExit(
                "error: wrk is not installed (`make benchmark-tiles` installs it with apt-get)"
            )

    def add(self, name: str, paths: Sequence[str]) -> None:
        path = self.folder / f"trace-{name}.txt"
        path.write_text("".join(p + "\n" for p in paths))
        self.traces[name] = path
        self.lengths[name] = len(paths)

    def run(self, server: Server, trace: str, connections: int, round_: int) -> Run:
        length = self.lengths[trace]
        if length < connections:
            raise ValueError(f"trace {trace} has fewer requests than {connections} connections")
        # Bounded: wrk stops by itself after this long even if the trace is not done.
        bound = int(min(900, max(60, length / 10)))
        result, usage = self.replay(server, trace, connections, bound, timeout_s=30)
        errors = {k: v for k, v in result["errors"].items() if v}
        complete = result["completed"] == result["responses"] == length
        if not result["finished"] or not complete or errors:
            raise RunFailed(
                f"{server.name} {trace} c{connections}: {result['completed']} of {length} "
                f"requests done within {bound} s, errors {errors} (status: 4xx or 5xx)\n"
                f"{server.log_tail()}"
            )
        seconds = result["seconds"]
        return Run(
            server=server.name,
            trace=trace,
            connections=connections,
            round=round_,
            requests=length,
            seconds=seconds,
            rate=length / seconds,
            **asdict(latencies(result)),
            **asdict(usage),
        )

    def replay(
        self, server: Server, trace: str, connections: int, bound: int, timeout_s: int
    ) -> tuple[dict[str, Any], Usage]:
        """One wrk run over ``trace`` (at most ``bound`` seconds): its result record, and
        the CPU the server, wrk and the rest of the machine used meanwhile."""
        self.count += 1
        marker = self.folder / f"done-{self.count}"
        command = [
            str(self.wrk),
            "-t1",
            f"-c{connections}",
            f"-d{bound}s",
            "--timeout",
            f"{timeout_s}s",
            "-s",
            str(self.script),
            server.url,
            "--",
            str(self.traces[trace]),
            str(marker),
            "1",
            str(connections),
        ]
        cpu_before = server.cpu_by_process()
        machine_before = psutil.cpu_times()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        try:
            deadline = time.monotonic() + bound + 30
            done = Path(f"{marker}.0")
            while not done.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_after = server.cpu_by_process()
        machine_after = psutil.cpu_times()
        line = next((x for x in output.splitlines() if x.startswith("BENCH ")), None)
        if line is None:
            raise RunFailed(
                f"wrk gave no result for {server.name} {trace} c{connections}:\n{output}"
            )
        wrk_cpu = (children_after.ru_utime - children_before.ru_utime) + (
            children_after.ru_stime - children_before.ru_stime
        )
        per_process = sorted(
            (cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after), reverse=True
        )
        busy = sum(
            getattr(machine_after, name) - getattr(machine_before, name)
            for name in ("user", "nice", "system", "irq", "softirq")
        )
        usage = Usage(
            server_cpu_s=sum(per_process),
            wrk_cpu_s=wrk_cpu,
            worker_cpu_s=[round(value, 2) for value in per_process if value >= 0.005],
            others_cpu_s=max(0.0, busy - sum(per_process) - wrk_cpu),
            steal_s=machine_after.steal - machine_before.steal,
        )
        return json.loads(line[len("BENCH ") :]), usage


@dataclass
class Latencies:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    mbytes: float


def latencies(result: dict[str, Any]) -> Latencies:
    """wrk's latencies (µs) and bytes, in the units of ``Run``."""
    return Latencies(
        p50_ms=result["p50_us"] / 1000,
        p90_ms=result["p90_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        max_ms=result["max_us"] / 1000,
        mean_ms=result["mean_us"] / 1000,
        mbytes=result["bytes"] / 1e6,
    )


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerFailed(RuntimeError):
    pass


@dataclass
class Server:
    """A server process (and its workers) this benchmark started, on a loopback port."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    known: list[Any] = field(default_factory=list)  # psutil.Process of the tree, once seen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 120.0) -> None:
        command = [*self.command, "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                cwd=PROJECT_ROOT,
            )
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"{self.name} exited with code {self.process.returncode} while starting:\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"{self.name} not ready after {ready_timeout:.0f} s")
            time.sleep(0.2)
        self.processes()  # remember the workers, to stop them all later

    def processes(self) -> list[Any]:
        if self.process is None or self.process.poll() is not None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for process in tree:
            if all(process.pid != seen.pid for seen in self.known):
                self.known.append(process)
        return tree

    def cpu_by_process(self) -> dict[int, float]:
        """User + system CPU seconds of each process of the server so far."""
        seconds = {}
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                seconds[process.pid] = times.user + times.system
        return seconds

    def memory(self) -> dict[str, Any]:
        """RSS, PSS and USS of every process of the server, in MB."""
        rows = []
        tree = self.processes()
        root = self.process.pid if self.process is not None else -1
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                info = process.memory_full_info()
                command = " ".join(process.cmdline()[1:4])
                if process.pid == root:
                    role = "supervisor" if len(tree) > 1 else "server"
                else:
                    worker = "spawn_main" in command or "slidebank.web.server" in command
                    role = "worker" if worker else "helper"
                rows.append(
                    {
                        "pid": process.pid,
                        "role": role,
                        "command": command,
                        "rss_mb": info.rss / 1e6,
                        "pss_mb": info.pss / 1e6,
                        "uss_mb": info.uss / 1e6,
                        "open_slide_files": sum(
                            1 for f in process.open_files() if "/blobs/objects/" in f.path
                        ),
                    }
                )
        return {
            "processes": rows,
            "rss_mb": sum(r["rss_mb"] for r in rows),
            "pss_mb": sum(r["pss_mb"] for r in rows),
            "uss_mb": sum(r["uss_mb"] for r in rows),
            "largest_rss_mb": max((r["rss_mb"] for r in rows), default=0.0),
            "workers_rss_mb": sum(r["rss_mb"] for r in rows if r["role"] in ("worker", "server")),
        }

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down its workers), then SIGKILL whatever of it remains."""
        if self.process is None:
            return
        self.processes()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for process in self.known:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.wait(timeout=5)
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.is_running():
                    process.kill()
        self.process = None
        self.known = []


def slidebank_server(workers: int, log: Path) -> Server:
    command = [str(slidebank_command()), "serve", "--workers", str(workers)]
    return Server(f"slidebank ({workers} workers)", command, {"SLIDEBANK_HOME": str(HOME)}, log)


def baseline_server(slide_id: str, stored: Path, workers: int, log: Path) -> Server:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "baseline_deepzoom:create_app",
        "--factory",
        "--app-dir",
        str(BENCHMARKS),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    env = {
        "BASELINE_SLIDE": str(stored),
        "BASELINE_ID": slide_id,
        "PYTHONPATH": str(BENCHMARKS),
    }
    return Server(f"baseline ({workers} workers)", command, env, log)


def fetch(url: str, timeout: float = 60.0) -> bytes:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"only loopback URLs are fetched, not {url}")
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310
        data: bytes = answer.read()
        return data


# --------------------------------------------------------------------------- slides


def run_cli(*args: str, home: Path = HOME) -> str:
    """``slidebank ARGS`` on the benchmark's repository; its output, or exit with the error."""
    result = subprocess.run(
        [str(slidebank_command()), *args],
        env={**os.environ, "SLIDEBANK_HOME": str(home)},
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    if result.returncode != 0:
        raise SystemExit(
            f"error: slidebank {' '.join(args[:2])} ... failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return result.stdout


def json_values(text: str) -> list[Any]:
    """Every JSON value printed one after another (robust to line wrapping)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return values
        value, position = decoder.raw_decode(text, position)
        values.append(value)


def ingest(paths: Sequence[Path], dataset: str) -> dict[Path, str]:
    """Ingest (or find as duplicates) the slides; their public ids by path."""
    ids: dict[Path, str] = {}
    batch = 100
    for start in range(0, len(paths), batch):
        chunk = paths[start : start + batch]
        output = run_cli("ingest", *map(str, chunk), "--dataset", dataset, "--json")
        for record in json_values(output):
            if record["status"] not in ("ingested", "duplicate") or not record["id"]:
                raise SystemExit(f"error: ingest failed: {record}")
            ids[Path(record["source"]).resolve()] = record["id"]
    missing = [p for p in paths if p.resolve() not in ids]
    if missing:
        raise SystemExit(f"error: ingest reported nothing for {missing[:3]}")
    return {p: ids[p.resolve()] for p in paths}


def stored_content(slide_id: str) -> list[Path]:
    """The files of the slide's stored copy in the repository (what Slidebank serves)."""
    image = json.loads(run_cli("show", slide_id, "--json"))["image"]
    key: str = image["storage_key"]
    content = HOME / "blobs" / "objects" / key[:2] / key / "content"
    paths = [content / item["name"] for item in image["files"]]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise SystemExit(f"error: {missing[0]} (stored file of {slide_id}) does not exist")
    return paths


def rss_slides(count: int, size: tuple[int, int]) -> list[Path]:
    """``count`` small slides of different widths (so different content), cached."""
    width, height = size
    paths = []
    for index in range(count):
        w = width + 16 * index
        path = RSS_FOLDER / f"rss-{index:03d}-{w}x{height}.svs"
        make_slide(path, w, height, reuse=True, quiet=True)
        paths.append(path)
    return paths


def rss_trace(slides: dict[str, tuple[int, int]], tile: int) -> list[str]:
    """A .dzi and five tiles of each slide: passthrough, DCT-scaled and resampled levels."""
    paths = []
    for slide_id, (width, height) in slides.items():
        pyramid = Pyramid(width, height, tile)
        top = pyramid.top
        paths.append(f"/deepzoom/{slide_id}.dzi")
        for level, column, row in ((top, 1, 1), (top - 1, 0, 0), (top - 2, 1, 0), (top - 4, 0, 0)):
            paths.append(tile_path(slide_id, (level, column, row)))
        paths.append(tile_path(slide_id, (top - 7, 0, 0)))
    return paths


def check_free_space(needed: int) -> None:
    free = shutil.disk_usage(DATA).free
    if free < needed:
        raise SystemExit(
            f"error: {DATA} has {free / 1e9:.1f} GB free; the slide and its stored copy need "
            f"{needed / 1e9:.1f} GB. Free some space or choose a smaller --size."
        )


# --------------------------------------------------------------------------- checks


def compare_tiles(
    urls: Sequence[str], slidebank: Server, baseline: Server, kinds: Sequence[str]
) -> list[dict[str, Any]]:
    """Both servers answer the same URLs with JPEG tiles of the same size (and similar
    pixels: the mean absolute difference of the decoded tiles, 0-255)."""
    import io

    rows = []
    for url, kind in zip(urls, kinds, strict=True):
        ours = Image.open(io.BytesIO(fetch(slidebank.url + url)))
        theirs = Image.open(io.BytesIO(fetch(baseline.url + url)))
        if ours.format != "JPEG" or theirs.format != "JPEG" or ours.size != theirs.size:
            raise SystemExit(
                f"error: {url}: slidebank gives {ours.format} {ours.size}, "
                f"baseline {theirs.format} {theirs.size}"
            )
        a = np.asarray(ours.convert("RGB"), dtype=np.int16)
        b = np.asarray(theirs.convert("RGB"), dtype=np.int16)
        rows.append(
            {
                "url": url,
                "served": kind,
                "size": list(ours.size),
                "mean_abs_diff": float(np.abs(a - b).mean()),
            }
        )
    return rows


# --------------------------------------------------------------------------- reporting


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def runs_of(runs: Sequence[Run], server: str, trace: str, connections: int) -> list[Run]:
    return [
        r
        for r in runs
        if r.server.startswith(server) and r.trace == trace and r.connections == connections
    ]


def per_round(
    runs: Sequence[Run], a: tuple[str, str], b: tuple[str, str], connections: int
) -> list[float]:
    """Per-round ratio of the rates of a and b (server, trace) at ``connections``."""
    ratios = []
    for top in runs_of(runs, a[0], a[1], connections):
        under = [r for r in runs_of(runs, b[0], b[1], connections) if r.round == top.round]
        if under:
            ratios.append(top.rate / under[0].rate)
    return ratios


def one_worker(run: Run) -> bool:
    """Whether one server process did nearly all the work of a concurrent run (uvicorn's
    workers share one listening socket, and one of them may accept every connection;
    slidebank's workers each listen with SO_REUSEPORT)."""
    return run.connections > 1 and max(run.worker_cpu_s, default=0.0) >= 0.9 * run.server_cpu_s


def summarise(runs: Sequence[Run]) -> dict[str, Any]:
    medians: dict[str, Any] = {}
    for server, trace in (
        ("slidebank", "pan-zoom"),
        ("baseline", "pan-zoom"),
        ("slidebank", "floor"),
        ("baseline", "floor"),
        ("slidebank", "passthrough"),
    ):
        for c in CONCURRENCIES:
            chosen = runs_of(runs, server, trace, c)
            if not chosen:
                continue
            medians[f"{server}/{trace}/c{c}"] = {
                "rate": median([r.rate for r in chosen]),
                "p50_ms": median([r.p50_ms for r in chosen]),
                "p90_ms": median([r.p90_ms for r in chosen]),
                "p99_ms": median([r.p99_ms for r in chosen]),
                "server_cpu_ms_per_request": median(
                    [r.server_cpu_s / r.requests * 1000 for r in chosen]
                ),
                "wrk_cpu_s": median([r.wrk_cpu_s for r in chosen]),
                "others_cpu_share": median([r.others_cpu_s / r.seconds for r in chosen]),
                "rates": [round(r.rate, 3) for r in chosen],
                "one_worker": [one_worker(r) for r in chosen],
                "p99s": [r.p99_ms for r in chosen],
            }
    for c in CONCURRENCIES:
        ratios = per_round(runs, ("slidebank", "pan-zoom"), ("baseline", "pan-zoom"), c)
        if ratios:
            medians[f"ratio/c{c}"] = {"median": median(ratios), "rounds": ratios}
        fractions = per_round(runs, ("slidebank", "passthrough"), ("slidebank", "floor"), c)
        if fractions:
            medians[f"passthrough_over_floor/c{c}"] = {
                "median": median(fractions),
                "rounds": fractions,
            }
    return medians


def markdown(record: dict[str, Any]) -> str:
    m = record["medians"]
    mix = record["trace"]["mix"]
    slide = record["slide"]
    rss = record["memory"]

    def verdict(ok: bool) -> str:
        return "yes" if ok else "**no**"

    def rounds(values: Sequence[float], digits: int = 0) -> str:
        return ", ".join(f"{v:,.{digits}f}" for v in values)

    def spread(row: dict[str, Any]) -> str:
        """Every round's rate, marked where one worker did (nearly) all the work."""
        return ", ".join(
            f"{rate:,.0f}{'¹' if alone else ''}"
            for rate, alone in zip(row["rates"], row["one_worker"], strict=True)
        )

    lines = [
        f"DeepZoom tiles on one {slide['width']:,} x {slide['height']:,} px SVS "
        f"({slide['size_bytes'] / 1e9:.2f} GB, {slide['tile']} px JPEG tiles of "
        f"CMU-1-Small-Region), {record['profile']['rounds']} round(s), medians; "
        f"{WORKERS} uvicorn workers per server; wrk, 1 thread; "
        f"{record['machine']['nproc']} CPUs, Python {record['machine']['python']}.",
        "",
        "| measure | tiles/s (or req/s) | p50 ms | p99 ms | rounds (per s) | goal | met |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    names = {
        "slidebank": "slidebank serve",
        "baseline": "baseline (DeepZoomGenerator + Pillow)",
    }
    for c in CONCURRENCIES:
        for server in SERVERS:
            key = f"{server}/pan-zoom/c{c}"
            if key not in m:
                continue
            row = m[key]
            goal, met = "", ""
            if server == "slidebank" and c == GOAL_P99_AT:
                under = sum(1 for p99 in row["p99s"] if p99 < GOAL_P99_MS)
                goal = f"p99 < {GOAL_P99_MS:.0f} ms (rounds' p99: {rounds(row['p99s'])} ms)"
                met = f"{verdict(row['p99_ms'] < GOAL_P99_MS)} ({under} of {len(row['p99s'])})"
            lines.append(
                f"| {names[server]}, pan-and-zoom, c{c} | {row['rate']:,.0f} | "
                f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {spread(row)} | "
                f"{goal} | {met} |"
            )
        ratio = m.get(f"ratio/c{c}")
        if ratio:
            goal, met = "", ""
            if c == GOAL_RATIO_AT:
                goal = f"≥ {GOAL_RATIO:.0f} ×"
                met = verdict(ratio["median"] >= GOAL_RATIO)
            lines.append(
                f"| **ratio** slidebank / baseline, c{c} | **{ratio['median']:.1f} ×** | | | "
                f"{rounds(ratio['rounds'], 1)} | {goal} | {met} |"
            )
    for c in CONCURRENCIES:
        floor = m.get(f"slidebank/floor/c{c}")
        if floor:
            lines.append(
                f"| HTTP floor: slidebank `/healthz`, c{c} | {floor['rate']:,.0f} | "
                f"{floor['p50_ms']:.2f} | {floor['p99_ms']:.2f} | {spread(floor)} | | |"
            )
        passthrough = m.get(f"slidebank/passthrough/c{c}")
        fraction = m.get(f"passthrough_over_floor/c{c}")
        if passthrough and fraction:
            lines.append(
                f"| passthrough-only tiles (highest level), c{c} | {passthrough['rate']:,.0f} | "
                f"{passthrough['p50_ms']:.2f} | {passthrough['p99_ms']:.2f} | "
                f"{spread(passthrough)} | | |"
            )
            goal, met = "", ""
            if c == GOAL_FLOOR_AT:
                goal = f"≥ {GOAL_FLOOR_FRACTION:.0%} of floor"
                met = verdict(fraction["median"] >= GOAL_FLOOR_FRACTION)
            lines.append(
                f"| **passthrough / floor**, c{c} | **{fraction['median']:.0%}** | | | "
                f"{rounds([100 * f for f in fraction['rounds']])} % | {goal} | {met} |"
            )
    for c in CONCURRENCIES:
        floor = m.get(f"baseline/floor/c{c}")
        if floor:
            lines.append(
                f"| baseline stack floor: Starlette `/healthz`, c{c} | {floor['rate']:,.0f} | "
                f"{floor['p50_ms']:.2f} | {floor['p99_ms']:.2f} | {spread(floor)} | | |"
            )
    primary = rss.get("one_worker")
    if primary:
        lines.append(
            f"| **server RSS** after tiles of {rss['slides']} slides, 1 worker "
            f"(PSS {primary['pss_mb']:.0f} MB) | **{primary['rss_mb']:.0f} MB** | | | | "
            f"≤ {GOAL_RSS_MB:.0f} MB | {verdict(primary['rss_mb'] <= GOAL_RSS_MB)} |"
        )
    tree = rss.get("workers_tree")
    if tree:
        per = ", ".join(f"{p['role']} {p['rss_mb']:.0f}" for p in tree["processes"])
        lines.append(
            f"| server RSS, {WORKERS} workers after all runs and the {rss['slides']} slides: "
            f"sum over the workers | {tree['workers_rss_mb']:.0f} MB | | | | "
            f"≤ {GOAL_RSS_MB:.0f} MB | {verdict(tree['workers_rss_mb'] <= GOAL_RSS_MB)} |"
        )
        lines.append(
            f"| the same, whole process tree (MB: {per}; PSS sum {tree['pss_mb']:.0f}) | "
            f"{tree['rss_mb']:.0f} MB | | | | ≤ {GOAL_RSS_MB:.0f} MB | "
            f"{verdict(tree['rss_mb'] <= GOAL_RSS_MB)} |"
        )
    others = record["interference"]
    lines += [
        "",
        "¹ one worker process did ≥ 90% of the server's work in that round (the baseline's "
        "uvicorn workers share one listening socket and one of them accepted (nearly) every "
        "connection; slidebank's workers each listen with SO_REUSEPORT).",
        "",
        "Other users of the machine took a median "
        f"{others['median_cores']:.2f} cores (max {others['max_cores']:.2f}) during the runs; "
        f"hypervisor steal {others['steal_s']:.1f} s in all.",
        "",
        f"Pan-and-zoom trace: {mix['requests']:,} tile requests, "
        f"{mix['fraction_at_passthrough_levels']:.0%} at DeepZoom levels whose scale is a "
        f"stored level's ({mix['fraction_passthrough_tiles']:.0%} passthrough tiles: "
        "whole, aligned stored tiles; the rest of those levels are edge tiles).",
        "",
        "| DeepZoom level | scale | grid | requests | share | served by slidebank as |",
        "|---:|---:|---|---:|---:|---|",
    ]
    for row in mix["levels"]:
        served = "; ".join(f"{k} ({v})" for k, v in row["served"].items())
        lines.append(
            f"| {row['level']} | 1/{row['scale']} | {row['grid'][0]} × {row['grid'][1]} | "
            f"{row['requests']:,} | {row['fraction']:.1%} | {served} |"
        )
    return "\n".join(lines)


def write_json(record: dict[str, Any], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(target)


# --------------------------------------------------------------------------- main


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from exc
    if width < 2048 or height < 2048:
        raise argparse.ArgumentTypeError("the slide must be at least 2048 px on each side")
    return width, height


def _terminate(signum: int, _: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop the servers


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


def log(message: str) -> None:
    print(message, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--size", type=parse_size, default=None, help="slide size WxH [default: 100000x80000]"
    )
    parser.add_argument("--quick", action="store_true", help="small fast smoke run")
    parser.add_argument("--rounds", type=int, default=None, help="rounds [default: 5; quick 1]")
    parser.add_argument(
        "--rss-slides", type=int, default=None, help="slides for the RSS measure [default: 200]"
    )
    parser.add_argument(
        "--as-ingested",
        action="store_true",
        help="serve the slide as the ingest stored it, without `slidebank pyramid` (its "
        "levels 4x apart, the others rendered per request)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS / "tiles-latest.json",
        help="where to write the results [default: benchmarks/results/tiles-latest.json]",
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    width, height = args.size or (profile.width, profile.height)
    rounds = args.rounds if args.rounds is not None else profile.rounds
    rss_count = args.rss_slides if args.rss_slides is not None else profile.rss_slides
    if rounds < 1 or rss_count < 1:
        parser.error("--rounds and --rss-slides must be at least 1")
    signal.signal(signal.SIGTERM, _terminate)
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    # The slides: one large one, and many small ones for the memory measure.
    slide_path = DATA / f"tiles-{width}x{height}.svs"
    tissue, _ = load_tissue(None)
    if not slide_path.exists():
        check_free_space(2 * estimate_bytes(tissue, width, height) + 2 * 10**9)
    made = make_slide(slide_path, width, height, reuse=True)
    log(
        f"slide: {slide_path.relative_to(PROJECT_ROOT)} {width}x{height} px, "
        f"{made.size_bytes:,} bytes ({'reused' if made.reused else f'{made.seconds:.0f} s'})"
    )
    small = rss_slides(rss_count, profile.rss_size)
    log(
        f"{len(small)} small slides for the memory measure "
        f"in {RSS_FOLDER.relative_to(PROJECT_ROOT)}"
    )
    slide_id = ingest([slide_path], DATASET)[slide_path]
    small_ids = ingest(small, RSS_DATASET)
    # Slidebank serves its stored copy (de-identified DICOM by default, the SVS itself when
    # SLIDEBANK_STORED_FORM=original); the baseline serves the scanner file, as a user of
    # openslide-python's DeepZoom server would. Both have the SVS's levels and tiles.
    completion: dict[str, Any] = {"run": False}
    if not args.as_ingested:
        # What a steward runs after the ingest: the levels the scanner did not store, added
        # once as DICOM instances (a no-op, reported as such, when they are already there).
        began = time.perf_counter()
        done = json.loads(run_cli("pyramid", slide_id, "--json"))[0]
        completion = {
            "run": True,
            "command": f"slidebank pyramid {slide_id}",
            "seconds": round(time.perf_counter() - began, 1),
            "added": done["added"],
            "skipped": done["skipped"],
        }
        log(f"slidebank pyramid: {done['skipped'] or done['added']} ({completion['seconds']} s)")
    stored_files = stored_content(slide_id)
    stored = slide_path
    levels = catalogue_levels(slide_id)
    if args.as_ingested and len(levels) != len(stored_levels(stored)):
        raise SystemExit(
            f"error: {slide_id} already has levels added by `slidebank pyramid`; for the "
            f"slide as ingested, remove {HOME.relative_to(PROJECT_ROOT)} and run again"
        )
    tile = levels[0].tile or 240
    pyramid = Pyramid(width, height, tile)
    log(
        f"ingested as {slide_id}; stored as {len(stored_files)} file(s) "
        f"({', '.join(sorted({p.suffix for p in stored_files}))}), "
        f"{sum(p.stat().st_size for p in stored_files):,} bytes"
    )
    log(f"stored levels (downsample): {[round(level.downsample, 2) for level in levels]}")

    trace = pan_zoom_trace(pyramid, profile.pan_zoom, SEED)
    mix = trace_mix(pyramid, levels, trace)
    warmup = pan_zoom_trace(pyramid, profile.warmup, SEED + 1)
    passthrough = passthrough_trace(pyramid, profile.passthrough, SEED + 2)
    small_dims = {}
    for path in small:
        w, h = (int(v) for v in path.stem.split("-")[-1].split("x"))
        small_dims[small_ids[path]] = (w, h)
    memory_trace = rss_trace(small_dims, tile)

    facts = machine_facts()
    record: dict[str, Any] = {
        "benchmark": "tiles",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "goals": {
            "ratio_at_c8_min": GOAL_RATIO,
            "passthrough_over_floor_at_c8_min": GOAL_FLOOR_FRACTION,
            "p99_ms_at_c32_max": GOAL_P99_MS,
            "rss_mb_after_200_slides_max": GOAL_RSS_MB,
        },
        "machine": facts,
        "profile": asdict(profile) | {"rounds": rounds, "rss_slides": rss_count},
        "slide": {
            "id": slide_id,
            "path": str(slide_path.relative_to(PROJECT_ROOT)),
            "stored": str(stored.relative_to(PROJECT_ROOT)),
            "width": width,
            "height": height,
            "size_bytes": made.size_bytes,
            "tile": tile,
            "stored_levels": [asdict(level) for level in levels],
            "deepzoom_levels": pyramid.levels,
        },
        "pyramid_completion": completion,
        "trace": {
            "viewport": [VIEW_W, VIEW_H],
            "seed": SEED,
            "mix": mix,
            "passthrough_only_requests": len(passthrough),
            "floor_requests": profile.floor,
            "replay": "each run replays its whole trace once, in order, over N keep-alive "
            "connections (wrk, 1 thread); rate = requests / (last response - first request)",
        },
    }
    log(
        f"trace: {len(trace)} requests, {mix['fraction_at_passthrough_levels']:.0%} at "
        f"passthrough levels, {mix['fraction_passthrough_tiles']:.0%} passthrough tiles"
    )
    for row in mix["levels"]:
        log(f"  level {row['level']:2d} (1/{row['scale']}): {row['requests']:5d}  {row['served']}")

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="slidebank-tiles-") as scratch:
        folder = Path(scratch)
        replayer = Replayer(folder)
        replayer.add("pan-zoom", [tile_path(slide_id, t) for t in trace])
        replayer.add("warmup", [tile_path(slide_id, t) for t in warmup])
        replayer.add("passthrough", [tile_path(slide_id, t) for t in passthrough])
        replayer.add("floor", ["/healthz"] * profile.floor)
        replayer.add("floor-warmup", ["/healthz"] * max(1000, profile.floor // 10))
        replayer.add("memory", memory_trace)

        log(f"warming the page cache: reading {stored.name} ({stored.stat().st_size:,} bytes)")
        warm(stored)
        for path in stored_files:
            warm(path)
        slidebank = slidebank_server(WORKERS, LOGS / "slidebank.log")
        baseline = baseline_server(slide_id, stored, WORKERS, LOGS / "baseline.log")
        with running(slidebank), running(baseline):
            servers = {"slidebank": slidebank, "baseline": baseline}
            log(f"servers up: slidebank at {slidebank.url}, baseline at {baseline.url}")
            for server in servers.values():
                fetch(f"{server.url}/deepzoom/{slide_id}.dzi")
            sample = sorted(random.Random(SEED).sample(range(len(trace)), min(24, len(trace))))
            record["tile_check"] = compare_tiles(
                [tile_path(slide_id, trace[i]) for i in sample],
                slidebank,
                baseline,
                [how_served(pyramid, levels, trace[i]) for i in sample],
            )
            worst = max(r["mean_abs_diff"] for r in record["tile_check"])
            log(
                f"checked {len(sample)} tiles: same JPEG sizes; "
                f"largest mean |difference| {worst:.1f}"
            )
            for server in servers.values():
                warmed = replayer.run(server, "warmup", 8, 0)
                replayer.run(server, "floor-warmup", 8, 0)
                log(f"warm-up {server.name}: {warmed.rate:,.0f} tiles/s")
            for round_ in range(1, rounds + 1):
                order = list(SERVERS) if round_ % 2 else list(reversed(SERVERS))
                for c in CONCURRENCIES:
                    for name in order:
                        run = replayer.run(servers[name], "pan-zoom", c, round_)
                        runs.append(run)
                        log(
                            f"round {round_} {name:9s} pan-zoom    c{c:<2d} {run.rate:8,.0f}/s "
                            f"p50 {run.p50_ms:7.1f} p99 {run.p99_ms:7.1f} ms  "
                            f"CPU: server {run.server_cpu_s:5.1f} s {run.worker_cpu_s}, "
                            f"wrk {run.wrk_cpu_s:4.1f} s, others {run.others_cpu_s:4.1f} s"
                        )
                for c in CONCURRENCIES:
                    pairs = [("slidebank", "floor"), ("slidebank", "passthrough")]
                    if round_ % 2 == 0:
                        pairs.reverse()
                    pairs.append(("baseline", "floor"))
                    for name, kind in pairs:
                        run = replayer.run(servers[name], kind, c, round_)
                        runs.append(run)
                        log(
                            f"round {round_} {name:9s} {kind:11s} c{c:<2d} {run.rate:8,.0f}/s "
                            f"p50 {run.p50_ms:7.2f} p99 {run.p99_ms:7.2f} ms  "
                            f"CPU: server {run.server_cpu_s:5.1f} s {run.worker_cpu_s}, "
                            f"wrk {run.wrk_cpu_s:4.1f} s, others {run.others_cpu_s:4.1f} s"
                        )
            before = slidebank.memory()
            replayer.run(slidebank, "memory", 8, 0)
            after = slidebank.memory()
            record_tree = after | {"before_small_slides_rss_mb": before["rss_mb"]}
            log(
                f"{WORKERS}-worker slidebank tree RSS: {before['rss_mb']:.0f} MB after the "
                f"throughput runs, {after['rss_mb']:.0f} MB after {rss_count} more slides"
            )

        # Memory, one worker: it alone serves the large slide's trace and every small slide.
        single = slidebank_server(1, LOGS / "slidebank-1-worker.log")
        with running(single):
            replayer.run(single, "pan-zoom", 8, 0)
            loaded = single.memory()
            replayer.run(single, "memory", 8, 0)
            one = single.memory() | {"after_large_slide_rss_mb": loaded["rss_mb"]}
        log(
            f"1-worker slidebank RSS: {loaded['rss_mb']:.0f} MB after the pan-and-zoom trace, "
            f"{one['rss_mb']:.0f} MB after tiles of {rss_count} slides"
        )

    record["memory"] = {
        "slides": rss_count,
        "slide_size": list(profile.rss_size),
        "requests_per_slide": "the .dzi and 5 tiles (highest level, 1/2, 1/4, 1/16, 1/128)",
        "one_worker": one,
        "workers_tree": record_tree,
        "note": "one_worker is `slidebank serve --workers 1` (one process) after the "
        "pan-and-zoom trace and then every small slide; workers_tree is the "
        f"{WORKERS}-worker server after all throughput runs and the small slides (each worker "
        "saw the slides of its own connections): workers_rss_mb sums its workers, rss_mb "
        "its whole process tree (uvicorn supervisor, multiprocessing resource tracker, workers)",
    }
    record["runs"] = [asdict(r) for r in runs]
    record["medians"] = summarise(runs)
    shares = [r.others_cpu_s / r.seconds for r in runs]
    record["interference"] = {
        "median_cores": median(shares) if shares else 0.0,
        "max_cores": max(shares, default=0.0),
        "steal_s": sum(r.steal_s for r in runs),
    }
    record["seconds"] = time.perf_counter() - started
    table = markdown(record)
    record["markdown"] = table
    print()
    print(table)
    write_json(record, args.json)
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
