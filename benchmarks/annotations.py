"""Benchmark: a million cell polygons on one slide — import from GeoJSON, viewport queries,
and the zoomed-out level of detail, on SQLite and PostgreSQL, beside a baseline.

The data: ``--cells`` nuclei (default 1,000,000) of about 20 vertices each, laid out like a
nuclei segmentation (jittered rows inside tissue-shaped regions, radii 4–9 px, elongated
and turned at random, a few classes) and in the order such a tool writes them (tile row by
tile row), written once as a QuPath GeoJSON FeatureCollection of detections (kept under
``--work`` and reused).

Measured in one run:

- import: ``slidebank annotations import`` (the command a user runs: streamed parse,
  checks, bulk insert; the file decoded by two worker processes) as a child process, wall
  time and peak RSS of the child with its workers, into a fresh repository on SQLite and
  one on PostgreSQL; on SQLite also decoded in the importing process alone (no workers);
- baseline import: what the simple way costs — ``json.load`` of the whole file, one
  ``shapely.geometry.shape`` per feature, and the in-memory STRtree reference store (no
  database), in a child process, wall time and peak RSS;
- viewport queries: ``--queries`` random 2048 × 2048 px windows over the tissue, answered
  as GeoJSON (the service the viewer's route calls, then ``json.dumps``): p50 and p99, on
  each database, and the reference store's query for the same windows;
- level of detail: the density grid of the whole slide in at most 256 × 256 cells, p50 and
  p99, as the viewer asks it (cells and window on the 256-px grid whose counts the store
  keeps) and for an arbitrary window (counted from the rows).

Goals (the annotations issue): import >= 50,000 polygons/s on SQLite, import peak RSS
<= 500 MB, viewport p99 < 50 ms. For scale, TIAToolbox 2.1.3's SQLiteStore imported the
same kind of data at about 5,200/s with a 5.7 GB peak, and answered such windows in 17 ms
median, 101 ms p99 on this machine.

    python benchmarks/annotations.py                      # 1,000,000 cells
    python benchmarks/annotations.py --cells 100000 --queries 200   # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
CLASSES = (("Tumor", [200, 0, 0]), ("Lymphocyte", [0, 0, 200]), ("Stroma", [0, 160, 0]))
SPACING = 64.0
VERTICES = 20
WINDOW = 2048
SLIDEBANK = str(Path(sys.executable).parent / "slidebank")


def slide_side(cells: int) -> int:
    """A square slide whose tissue (about 80% of it) holds the cells at ``SPACING``."""
    return int(math.sqrt(cells / 0.8) * SPACING) + 2 * int(SPACING)


def cell_centres(cells: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """Jittered rows inside three overlapping elliptical tissue regions, the first ``cells``."""
    step = SPACING
    xs, ys = np.meshgrid(np.arange(step, side - step, step), np.arange(step, side - step, step))
    points = np.c_[xs.ravel(), ys.ravel()] + rng.uniform(-6, 6, (xs.size, 2))
    centre = side / 2
    inside = np.zeros(len(points), dtype=bool)
    for cx, cy, rx, ry in ((0.5, 0.5, 0.52, 0.5), (0.3, 0.35, 0.3, 0.25), (0.7, 0.7, 0.3, 0.3)):
        dx = (points[:, 0] - cx * 2 * centre) / (rx * side)
        dy = (points[:, 1] - cy * 2 * centre) / (ry * side)
        inside |= dx * dx + dy * dy <= 1
    found = points[inside]
    if len(found) < cells:
        raise SystemExit(f"only {len(found):,} cells fit; raise the slide size")
    # The cells kept are a random sample; they are written in the order a segmentation
    # tool finds them: tile row by tile row (512 px), left to right.
    chosen = found[np.sort(rng.permutation(len(found))[:cells])]
    order = np.lexsort((chosen[:, 0], chosen[:, 1] // 512))
    ordered: np.ndarray = chosen[order]
    return ordered


def write_cells(path: Path, cells: int, side: int, seed: int = 1) -> None:
    """The GeoJSON file, written a block of cells at a time."""
    rng = np.random.default_rng(seed)
    centres = cell_centres(cells, side, rng)
    angles = np.linspace(0, 2 * math.pi, VERTICES, endpoint=False)
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out:
        out.write('{"type":"FeatureCollection","features":[\n')
        for start in range(0, cells, 20_000):
            block = centres[start : start + 20_000]
            n = len(block)
            radius = rng.uniform(4, 9, n)[:, None]
            squash = rng.uniform(0.6, 1.0, n)[:, None]
            turn = rng.uniform(0, math.pi, n)[:, None]
            wobble = 1 + rng.uniform(-0.08, 0.08, (n, VERTICES))
            x = radius * wobble * np.cos(angles)
            y = radius * wobble * squash * np.sin(angles)
            px = block[:, :1] + x * np.cos(turn) - y * np.sin(turn)
            py = block[:, 1:] + x * np.sin(turn) + y * np.cos(turn)
            labels = rng.choice(len(CLASSES), n, p=[0.5, 0.3, 0.2])
            lines = []
            for i in range(n):
                ring = ",".join(f"[{a:.1f},{b:.1f}]" for a, b in zip(px[i], py[i], strict=True))
                name, colour = CLASSES[labels[i]]
                lines.append(
                    '{"type":"Feature","geometry":{"type":"Polygon","coordinates":[['
                    f"{ring},[{px[i, 0]:.1f},{py[i, 0]:.1f}]]]}},"
                    '"properties":{"objectType":"detection","classification":'
                    f'{{"name":"{name}","color":{json.dumps(colour)}}}}}}}'
                )
            out.write((",\n" if start else "") + ",\n".join(lines))
        out.write("\n]}\n")
    partial.replace(path)


def tree_rss(root: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants (an import's worker processes
    count: the goal is for the whole import)."""
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # ended meanwhile
            total += process.memory_info().rss
    return total


def child_run(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB, the child's process tree, sampled every 100 ms) and stdout
    of a child process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        peak = 0
        while process.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, tree_rss(psutil.Process(process.pid)))
            time.sleep(0.1)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    return wall, peak / 2**20, stdout


def make_repository(work: Path, name: str, database_url: str | None, side: int) -> tuple[Path, str]:
    """A repository holding one generated slide of ``side`` px (stored as it is: this
    benchmark is about annotations), and the slide's id."""
    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    slide = work / f"slide-{side}.svs"
    if not slide.exists():
        from slidebank.services.samples import make_sample_slide

        make_sample_slide(slide, side, side)
    env = _env(home, database_url) | {"SLIDEBANK_STORED_FORM": "original"}
    _, _, out = child_run([SLIDEBANK, "ingest", str(slide), "--json"], env)
    outcome = json.loads(out.splitlines()[0])
    return home, outcome["id"]


def _env(home: Path, database_url: str | None) -> dict[str, str]:
    env = dict(os.environ, SLIDEBANK_HOME=str(home))
    if database_url:
        env["SLIDEBANK_DATABASE_URL"] = database_url
    return env


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def windows(side: int, count: int, seed: int = 2) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    return [tuple(xy) for xy in rng.uniform(side * 0.15, side * 0.85 - WINDOW, (count, 2))]


def query_figures(
    home: Path, database_url: str | None, slide: str, side: int, count: int
) -> dict[str, Any]:
    from slidebank.access.policy import COMMAND_LINE
    from slidebank.annotations.model import Viewport
    from slidebank.config import Settings
    from slidebank.services import annotating
    from slidebank.services.repository import open_repository
    from slidebank.web.server import settle_heap

    repository = open_repository(Settings(home=home, database_url=database_url))
    settle_heap()  # as each server worker does once its application is built
    try:
        times, hits = [], []
        for x, y in windows(side, count):
            started = time.perf_counter()
            body = annotating.viewport_geojson(
                repository, COMMAND_LINE, slide, Viewport(x, y, x + WINDOW, y + WINDOW)
            )
            times.append(time.perf_counter() - started)
            hits.append(body.count(b'"type":"Feature"'))
        # The whole slide in at most 256 x 256 cells: as the viewer asks (a power-of-two
        # cell of at least 256 px, the window on that grid: answered from the kept
        # counts), and for an arbitrary window and cell (counted from the rows).
        cell = 256 * 2 ** max(0, math.ceil(math.log2(side / 256 / 256)))
        edge = math.ceil(side / cell) * cell
        lod: list[float] = []
        lod_any: list[float] = []
        for _ in range(20):
            for times_of, window, size in (
                (lod, Viewport(0, 0, edge, edge), cell),
                (lod_any, Viewport(0.5, 0.5, side, side), side / 256),
            ):
                started = time.perf_counter()
                grid = annotating.density(repository, COMMAND_LINE, slide, window, size)
                json.dumps(grid)
                times_of.append(time.perf_counter() - started)
    finally:
        repository.close()
    return {
        "viewport_p50_ms": 1000 * statistics.median(times),
        "viewport_p99_ms": 1000 * percentile(times, 99),
        "viewport_hits_median": statistics.median(hits),
        "density_cell_px": cell,
        "density_p50_ms": 1000 * statistics.median(lod),
        "density_p99_ms": 1000 * percentile(lod, 99),
        "density_any_window_p50_ms": 1000 * statistics.median(lod_any),
        "density_any_window_p99_ms": 1000 * percentile(lod_any, 99),
    }


BASELINE = """
import json, sys, time, statistics
import shapely
from shapely.geometry import shape
from slidebank.annotations.memory_store import MemoryAnnotationStore
from slidebank.annotations.model import Annotation, Viewport
from slidebank.annotations.store import Change
path, windows, size = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
started = time.perf_counter()
with open(path) as source:
    features = json.load(source)["features"]
items = [
    Annotation(shape(f["geometry"]), "polygon", f["properties"]["classification"]["name"])
    for f in features
]
store = MemoryAnnotationStore()
store.insert(1, items, Change(None, "baseline", "import"))
store.query([1], Viewport(0, 0, 1, 1))  # builds the STRtree
imported = time.perf_counter() - started
times = []
for x, y in windows:
    t = time.perf_counter()
    found = store.query([1], Viewport(x, y, x + size, y + size))
    json.dumps([shapely.geometry.mapping(a.geometry) for a in found])
    times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"import_s": imported, "p50_ms": 1000 * statistics.median(times),
                  "p99_ms": 1000 * times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]}))
"""


def import_cells(
    home: Path, url: str | None, slide: str, data: Path, workers: int | None = None
) -> tuple[float, float, int]:
    """Wall seconds and peak RSS (MB) of ``slidebank annotations import``, and the count."""
    env = _env(home, url)
    if workers is not None:
        env["SLIDEBANK_ANNOTATION_IMPORT_WORKERS"] = str(workers)
    command = [SLIDEBANK, "annotations", "import", slide, str(data), "--set", "cells"]
    wall, rss, out = child_run([*command, "--kind", "automatic", "--json"], env)
    return wall, rss, int(json.loads(out)["imported"])


def postgres_url() -> str | None:
    """A fresh database on the local PostgreSQL, or None when there is none."""
    try:
        import psycopg
    except ImportError:
        return None
    admin = os.environ.get("SLIDEBANK_BENCH_POSTGRES", "postgresql://127.0.0.1:5432/test")
    name = f"bench_annotations_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        return None
    return admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"


def drop_postgres(url: str) -> None:
    import psycopg

    admin = os.environ.get("SLIDEBANK_BENCH_POSTGRES", "postgresql://127.0.0.1:5432/test")
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/slidebank-bench-annotations"))
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    arguments = parser.parse_args()
    work: Path = arguments.work
    work.mkdir(parents=True, exist_ok=True)
    side = slide_side(arguments.cells)
    data = work / f"cells-{arguments.cells}-tile-order.geojson"
    if not data.exists():
        started = time.perf_counter()
        write_cells(data, arguments.cells, side)
        print(
            f"wrote {data} ({data.stat().st_size / 1e6:,.0f} MB) in "
            f"{time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    result: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "cells": arguments.cells,
        "slide_px": side,
        "file_mb": round(data.stat().st_size / 1e6),
        "databases": {},
    }
    databases: list[tuple[str, str | None]] = [("sqlite", None)]
    if not arguments.no_postgres:
        url = postgres_url()
        if url:
            databases.append(("postgresql", url))
    for name, url in databases:
        try:
            home, slide = make_repository(work, f"repo-{name}", url, side)
            wall, rss, imported = import_cells(home, url, slide, data)
            figures = {
                "import_s": wall,
                "import_per_s": imported / wall,
                "import_peak_rss_mb": rss,
                **query_figures(home, url, slide, side, arguments.queries),
            }
            if name == "sqlite":
                # The same import decoded in the importing process alone, in a fresh
                # repository: what the worker processes bring.
                home, slide = make_repository(work, f"repo-{name}-one-process", url, side)
                wall, rss, imported = import_cells(home, url, slide, data, workers=0)
                figures["one_process_import_per_s"] = imported / wall
                figures["one_process_import_peak_rss_mb"] = rss
            result["databases"][name] = figures
            print(name, json.dumps(figures, indent=1), file=sys.stderr)
        finally:
            if url:
                drop_postgres(url)
    if not arguments.no_baseline:
        wall, rss, out = child_run(
            [
                sys.executable,
                "-c",
                BASELINE,
                str(data),
                json.dumps(windows(side, arguments.queries)),
                str(WINDOW),
            ],
            dict(os.environ),
        )
        baseline = json.loads(out)
        result["baseline"] = {
            "what": "json.load + shapely.shape per feature + in-memory STRtree store",
            "import_s": baseline["import_s"],
            "import_per_s": arguments.cells / baseline["import_s"],
            "peak_rss_mb": rss,
            "viewport_p50_ms": baseline["p50_ms"],
            "viewport_p99_ms": baseline["p99_ms"],
        }
        sqlite = result["databases"]["sqlite"]
        result["ratios"] = {
            "import_speed_vs_baseline": sqlite["import_per_s"] / result["baseline"]["import_per_s"],
            "import_rss_vs_baseline": sqlite["import_peak_rss_mb"] / rss,
        }
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / "annotations-latest.json"
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
