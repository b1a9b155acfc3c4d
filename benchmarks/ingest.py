"""Benchmark: ``slidebank ingest`` of one large slide, converting it to de-identified DICOM.

Four measurements alternate in one run, the order rotated every round so that drift favours
none, each against a fresh folder on the repository's file system (removed, and dirty pages
flushed with an untimed ``sync``, before the next):

- the I/O floor: ``sha256sum FILE`` then ``cp FILE DEST`` (subprocesses, timed together),
  and the ``sync DEST`` that follows (the ingest fsyncs what it stores; cp does not);
- ``slidebank ingest`` as configured by default: stored form ``dicom`` (wsidicomizer, stored
  JPEG tiles passed through, byte scan of what it wrote, thumbnail from the stored DICOM);
- the ``wsidicomizer`` command line converting the same file with the options that match
  the ingest's (no label, no overview, no confidential metadata, same workers, offset table,
  source and tiles per batch), then a timed ``sync`` of what it wrote;
- ``slidebank ingest`` with ``SLIDEBANK_STORED_FORM=original`` (the scanner file stored as it
  is), so that the cost of conversion is visible.

The source slide is read once before the first measurement, so every measurement reads it
from the page cache. Other processes' CPU time during each measurement (``/proc/stat`` minus
ours) is recorded: on a shared machine it tells which figures were disturbed.

Goals: conversion ingest <= 2 x floor and <= 1.1 x the wsidicomizer command line (this
issue); original-form ingest <= 1.5 x floor and ingest peak RSS <= 300 MB (the first ingest
issue).

    python benchmarks/ingest.py                            # >= 2 GB slide, 3 rounds
    python benchmarks/ingest.py --repeat 5                 # the figures in the README
    python benchmarks/ingest.py --size-gb 0.2 --repeat 1   # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from make_slide import (
    PROJECT_ROOT,
    SlideResult,
    estimate_bytes,
    load_tissue,
    make_slide,
)

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

BENCHMARKS = Path(__file__).resolve().parent
DATA = BENCHMARKS / "data"
RESULTS = BENCHMARKS / "results"
BASE_WIDTH, BASE_HEIGHT = 100_000, 80_000  # about 2 GB of CMU-1-Small-Region tiles
BASE_GB = 2.0
GOAL_RATIO = 1.5  # original-form ingest / floor (first ingest issue)
GOAL_CONVERT_FLOOR = 2.0  # conversion ingest / floor
GOAL_CONVERT_WSIDICOMIZER = 1.1  # conversion ingest / wsidicomizer command line
# Steps on another thread than the ingest's own, by stored form: left out of the sum that
# gives "the rest". Converting, the source is hashed and then validated beside the
# conversion; stored as it came, it is validated while it is hashed and copied.
BESIDE = {
    "dicom": (
        "hash source (beside the conversion)",
        "validate (after the hash, beside the conversion)",
    ),
    "original": ("validate (concurrent with hashing)",),
}
GOAL_RSS_MB = 300.0
KINDS = ("floor", "ingest", "wsidicomizer", "original")
FREE_SPACE_FACTOR = 3
READ_CHUNK = 16 * 1024 * 1024


@dataclass
class Process:
    """One timed child process: wall time, its own resources, and what else ran meanwhile."""

    seconds: float
    rss_mb: float  # ru_maxrss via wait4
    user_s: float
    sys_s: float
    anon_mb: float  # largest RssAnon seen by polling (private memory)
    file_mb: float  # largest RssFile seen by polling (mapped page-cache pages)
    other_cpu_s: float  # CPU seconds of other processes during the measurement
    load: float  # 1-minute load average when it started

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


@dataclass
class Repetition:
    index: int
    order: str
    floor_s: float
    sync_s: float
    sha256sum_s: float
    cp_s: float
    floor_other_cpu_s: float
    ingest: Process
    wsidicomizer: Process
    wsidicomizer_sync_s: float
    original: Process | None

    @property
    def floor_sync_s(self) -> float:
        return self.floor_s + self.sync_s

    @property
    def wsidicomizer_sync_total_s(self) -> float:
        return self.wsidicomizer.seconds + self.wsidicomizer_sync_s


@dataclass
class Results:
    slide: dict[str, Any]
    wsidicomizer_command: list[str]
    repetitions: list[Repetition] = field(default_factory=list)
    cli_startup_s: float | None = None
    wsidicomizer_import_s: float | None = None
    phases: dict[str, Any] | None = None
    phases_original: dict[str, Any] | None = None


# --------------------------------------------------------------------------- the slide


def slide_for(size_gb: float, tissue: Path | None) -> SlideResult:
    """A cached slide of at least ``size_gb`` x 10^9 bytes under benchmarks/data."""
    target_bytes = int(size_gb * 1e9)
    tissue_pattern, _ = load_tissue(tissue)
    scale = math.sqrt(size_gb / BASE_GB)
    width, height = round(BASE_WIDTH * scale), round(BASE_HEIGHT * scale)
    estimate = estimate_bytes(tissue_pattern, width, height)
    if estimate < target_bytes * 1.02:
        grow = math.sqrt(target_bytes * 1.02 / estimate)
        width, height = math.ceil(width * grow), math.ceil(height * grow)
        estimate = estimate_bytes(tissue_pattern, width, height)
    for _attempt in range(4):
        path = DATA / f"ingest-{width}x{height}.svs"
        if not path.exists():
            check_free_space(estimate, "generating the slide and its copies")
            print(f"generating {path.name} (about {estimate / 1e9:.2f} GB) ...", flush=True)
        result = make_slide(path, width, height, tissue, reuse=True)
        verb = "reused" if result.reused else f"generated in {result.seconds:.1f} s"
        print(f"slide: {path} {width}x{height} px, {result.size_bytes:,} bytes ({verb})")
        if result.size_bytes >= target_bytes:
            return result
        grow = math.sqrt(target_bytes * 1.03 / result.size_bytes)
        print(f"  below {target_bytes:,} bytes: scaling each side by {grow:.3f}")
        path.unlink()
        width, height = math.ceil(width * grow), math.ceil(height * grow)
        estimate = int(result.size_bytes * grow * grow)
    raise SystemExit("error: could not generate a large enough slide")


def check_free_space(slide_bytes: int, purpose: str) -> None:
    free = shutil.disk_usage(DATA).free
    needed = FREE_SPACE_FACTOR * slide_bytes
    if free < needed:
        raise SystemExit(
            f"error: {DATA} has {free / 1e9:.1f} GB free; {purpose} needs at least "
            f"{FREE_SPACE_FACTOR} x {slide_bytes / 1e9:.2f} GB = {needed / 1e9:.1f} GB. "
            "Free some space or choose a smaller slide with --size-gb."
        )


# --------------------------------------------------------------------------- measurements


@contextlib.contextmanager
def fresh_folder(prefix: str) -> Iterator[Path]:
    """An empty folder under benchmarks/data (the repository's file system), then removed."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=DATA))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        flush()


def flush() -> None:
    """Write back every dirty page, so no measurement pays for the previous one's writes."""
    subprocess.run(["sync"], check=True)


def warm(path: Path) -> None:
    with path.open("rb", buffering=0) as handle:
        buffer = bytearray(READ_CHUNK)
        while handle.readinto(buffer):
            pass


def busy_cpu_s() -> float:
    """CPU seconds every process on the machine has used since boot (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and of its waited-for children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@contextlib.contextmanager
def others_cpu() -> Iterator[list[float]]:
    """Yields a one-element list that receives other processes' CPU seconds meanwhile."""
    measured = [0.0]
    busy, own = busy_cpu_s(), own_cpu_s()
    try:
        yield measured
    finally:
        measured[0] = max(0.0, (busy_cpu_s() - busy) - (own_cpu_s() - own))


def measure_floor(slide: Path) -> tuple[float, float, float, float]:
    """Seconds for ``sha256sum``, for ``cp``, for the ``sync DEST`` that follows, and other
    processes' CPU seconds meanwhile."""
    with fresh_folder("floor-") as folder, others_cpu() as other:
        destination = folder / slide.name
        started = time.perf_counter()
        subprocess.run(["sha256sum", str(slide)], check=True, stdout=subprocess.DEVNULL)
        hashed = time.perf_counter()
        subprocess.run(["cp", str(slide), str(destination)], check=True)
        copied = time.perf_counter()
        subprocess.run(["sync", str(destination)], check=True)  # fsync of that file
        synced = time.perf_counter()
    return hashed - started, copied - hashed, synced - copied, other[0]


def venv_command(name: str) -> Path:
    command = Path(sys.executable).parent / name
    if not command.exists():
        command = PROJECT_ROOT / ".venv" / "bin" / name
    if not command.exists():
        raise SystemExit(f"error: no {name} entry point next to this Python; install the venv")
    return command


def slidebank_command() -> Path:
    return venv_command("slidebank")


class MemoryPoller(threading.Thread):
    """Samples a process's RssAnon and RssFile from /proc every few milliseconds.

    ru_maxrss counts both; file-backed pages (an mmap of the slide) are page cache the
    kernel can drop, anonymous ones are the process's own memory. Polling can miss a
    short spike, so these are lower bounds.
    """

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.interval = interval
        self.stop = threading.Event()
        self.anon_kb = 0
        self.file_kb = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                text = self.status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("RssAnon:"):
                    self.anon_kb = max(self.anon_kb, int(line.split()[1]))
                elif line.startswith("RssFile:"):
                    self.file_kb = max(self.file_kb, int(line.split()[1]))
            self.stop.wait(self.interval)


@dataclass
class ChildRun:
    process: Process
    code: int


def run_child(
    arguments: list[str], log: Path, environment: dict[str, str] | None = None
) -> ChildRun:
    """Run a child; its wall time, exit code, own rusage (via os.wait4) and polled memory."""
    load = os.getloadavg()[0]
    with log.open("wb") as output, others_cpu() as other:
        started = time.perf_counter()
        process = subprocess.Popen(
            arguments, stdout=output, stderr=subprocess.STDOUT, env=environment
        )
        poller = MemoryPoller(process.pid)
        poller.start()
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        poller.stop.set()
        poller.join()
    process.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits again
    return ChildRun(
        Process(
            seconds=elapsed,
            rss_mb=usage.ru_maxrss * 1024 / 1e6,
            user_s=usage.ru_utime,
            sys_s=usage.ru_stime,
            anon_mb=poller.anon_kb * 1024 / 1e6,
            file_mb=poller.file_kb * 1024 / 1e6,
            other_cpu_s=other[0],
            load=load,
        ),
        process.returncode,
    )


def measure_ingest(slide: Path, stored_form: str) -> Process:
    """One ``slidebank ingest`` of ``slide`` into a fresh home (which is then removed)."""
    environment = os.environ | {"SLIDEBANK_STORED_FORM": stored_form}
    with fresh_folder("ingest-home-") as home:
        log = home.parent / f"{home.name}.log"
        command = [str(slidebank_command()), "ingest", str(slide), "--home", str(home), "--json"]
        try:
            run = run_child(command, log, environment)
            output = log.read_text(errors="replace")
        finally:
            log.unlink(missing_ok=True)
        outcomes = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        if run.code != 0 or [o.get("status") for o in outcomes] != ["ingested"]:
            raise SystemExit(f"error: ingest ({stored_form}) failed (exit {run.code}):\n{output}")
        expected = "dicom" if stored_form == "dicom" else None
        if expected and outcomes[0].get("format") != expected:
            raise SystemExit(f"error: ingest stored {outcomes[0].get('format')}, not DICOM")
    return run.process


def conversion_settings() -> dict[str, Any]:
    """What the ingest hands wsidicomizer for a slide whose stored tiles are passed through
    (this one), read from slidebank.deid.convert."""
    from slidebank.deid import convert

    offset_table = getattr(convert, "OFFSET_TABLE", "eot")
    workers = getattr(convert, "PASSTHROUGH_WORKERS", convert.ConversionOptions().workers)
    return {
        "workers": workers,
        "offset_table": {"bot": "basic", "eot": "extended"}.get(offset_table, offset_table),
        "chunk_size": getattr(convert, "PASSTHROUGH_CHUNK_TILES", None),
        "source": convert.SOURCES[0],
    }


def wsidicomizer_command(slide: Path, output: Path) -> list[str]:
    """The command line that converts as the ingest does (``output`` must not exist)."""
    settings = conversion_settings()
    command = [str(venv_command("wsidicomizer")), "-i", str(slide), "-o", str(output)]
    command += ["--no-label", "--no-overview", "--no-confidential"]
    command += ["--workers", str(settings["workers"])]
    command += ["--offset-table", settings["offset_table"], "--source", settings["source"]]
    if settings["chunk_size"] is not None:
        command += ["--chunk-size", str(settings["chunk_size"])]
    return command


def measure_wsidicomizer(slide: Path) -> tuple[Process, float]:
    """One ``wsidicomizer`` conversion into a fresh folder, then the timed ``sync`` of what
    it wrote (the ingest fsyncs its files)."""
    with fresh_folder("wsidicomizer-") as folder:
        output = folder / "out"
        run = run_child(wsidicomizer_command(slide, output), folder / "log")
        written = sorted(output.glob("*.dcm")) if output.is_dir() else []
        if run.code != 0 or not written:
            log = (folder / "log").read_text(errors="replace")
            raise SystemExit(f"error: wsidicomizer failed (exit {run.code}):\n{log}")
        started = time.perf_counter()
        subprocess.run(["sync", *map(str, written)], check=True)  # fsync of each file
        sync_s = time.perf_counter() - started
    return run.process, sync_s


def measure_cli_startup() -> float:
    """Wall seconds of ``slidebank --help``: interpreter start and imports, paid by ingest."""
    times = []
    with fresh_folder("startup-") as folder:
        for _ in range(3):
            times.append(
                run_child([str(slidebank_command()), "--help"], folder / "log").process.seconds
            )
    return statistics.median(times)


def measure_wsidicomizer_import() -> float:
    """Seconds to import wsidicomizer in a fresh interpreter: paid by the command line and
    by the first conversion of an ingest process alike."""
    code = (
        "import time; t = time.perf_counter(); import wsidicomizer; print(time.perf_counter() - t)"
    )
    times = []
    for _ in range(3):
        result = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        )
        times.append(float(result.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


# --------------------------------------------------------------------------- phases


def measure_phases(slide: Path, stored_form: str) -> dict[str, Any]:
    """One in-process ingest with each step timed (wall seconds, peak RSS after).

    Wraps the step functions the pipeline modules call; if their names changed, the
    breakdown is skipped rather than the benchmark failing. wsidicomizer is imported before
    the timed ingest if it has not been (its import is measured on its own).
    """
    from slidebank.config import Settings
    from slidebank.deid import convert as convert_module
    from slidebank.ingest import deidentify as deidentify_module
    from slidebank.ingest import pipeline
    from slidebank.services.ingesting import ingest_paths
    from slidebank.services.repository import open_repository
    from slidebank.storage import LocalBlobStore

    seconds: dict[str, float] = {}
    calls: dict[str, int] = {}
    peak_mb: dict[str, float] = {}

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
                calls[name] = calls.get(name, 0) + 1
                peak_mb[name] = peak()

        return wrapper

    # Disjoint steps (none calls another), in the order they start; the sum of those on the
    # ingest's own thread plus the rest is the whole ingest (``BESIDE``: the others).
    beside = BESIDE[stored_form]
    steps: list[tuple[Any, str, str]] = [
        (pipeline, "open_slide", "open slide (source; stored DICOM)"),
        (pipeline, "stage_copy", beside[0] if stored_form == "dicom" else "hash + copy + fsync"),
        (pipeline, "validate", beside[-1]),
        (deidentify_module, "source_values", "identifying values of the source"),
        (convert_module, "_dicomize", "conversion (wsidicomizer with our tile reader and writer)"),
        (convert_module, "_fsync", "fsync converted files"),
        (deidentify_module, "verify_files", "byte scan + SHA-256 of converted files"),
        (pipeline, "describe", "describe"),
        (pipeline, "write_thumbnail", "thumbnail"),
        (pipeline, "describe_instances", "DICOM index (headers)"),
        (LocalBlobStore, "commit", "commit to store"),
    ]
    missing = [name for owner, name, _ in steps if not hasattr(owner, name)]
    if missing:
        return {"skipped": f"no {', '.join(missing)} to wrap"}
    with contextlib.ExitStack() as stack:
        keep = getattr(convert_module, "_pydicom_validation_kept", contextlib.nullcontext)
        stack.enter_context(keep())
        import wsidicomizer  # noqa: F401  (imported once, as in any long-lived process)
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in steps]
    saved_fsync = os.fsync
    fsync_seconds = [0.0]

    def fsync(fd: FileDescriptorLike) -> None:
        started = time.perf_counter()
        try:
            saved_fsync(fd)
        finally:
            fsync_seconds[0] += time.perf_counter() - started

    rss_before = peak()
    try:
        for owner, name, label in steps:
            setattr(owner, name, timed(label, getattr(owner, name)))
        os.fsync = fsync
        with fresh_folder("phases-home-") as home:
            started = time.perf_counter()
            repository = timed("open repository (migrate)", open_repository)(
                Settings.from_env(home=home, stored_form=stored_form)
            )
            report = timed("ingest_paths", ingest_paths)(repository, [slide])
            repository.close()
            total = time.perf_counter() - started
    finally:
        for owner, name, function in saved:
            setattr(owner, name, function)
        os.fsync = saved_fsync
    if [outcome.status for outcome in report.outcomes] != ["ingested"]:
        return {"skipped": f"in-process ingest did not succeed: {report.outcomes}"}
    labels = [label for _, _, label in steps]
    inner = sum(seconds.get(label, 0.0) for label in labels if label not in beside)
    seconds["catalogue, discovery, report, seal (rest)"] = seconds.pop("ingest_paths") - inner
    calls.pop("ingest_paths", None)
    ordered = ["open repository (migrate)", *labels, "catalogue, discovery, report, seal (rest)"]
    return {
        "stored_form": stored_form,
        "total_s": total,
        "seconds": {name: seconds[name] for name in ordered if name in seconds},
        "calls": calls,
        "all_fsync_s": fsync_seconds[0],
        "peak_rss_mb_after_step": peak_mb,
        "peak_rss_mb_before": rss_before,
    }


# --------------------------------------------------------------------------- reporting


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def originals(results: Results) -> list[Process]:
    return [r.original for r in results.repetitions if r.original is not None]


def summary(results: Results) -> dict[str, float]:
    reps = results.repetitions
    medians = {
        "floor_s": median([r.floor_s for r in reps]),
        "floor_sync_s": median([r.floor_sync_s for r in reps]),
        "sha256sum_s": median([r.sha256sum_s for r in reps]),
        "cp_s": median([r.cp_s for r in reps]),
        "ingest_s": median([r.ingest.seconds for r in reps]),
        "wsidicomizer_s": median([r.wsidicomizer.seconds for r in reps]),
        "wsidicomizer_sync_s": median([r.wsidicomizer_sync_total_s for r in reps]),
        "ratio_ingest_floor": median([r.ingest.seconds / r.floor_s for r in reps]),
        "ratio_ingest_floor_sync": median([r.ingest.seconds / r.floor_sync_s for r in reps]),
        "ratio_ingest_wsidicomizer": median(
            [r.ingest.seconds / r.wsidicomizer.seconds for r in reps]
        ),
        "ratio_ingest_wsidicomizer_sync": median(
            [r.ingest.seconds / r.wsidicomizer_sync_total_s for r in reps]
        ),
        "ingest_peak_rss_mb": median([r.ingest.rss_mb for r in reps]),
        "ingest_peak_anon_mb_polled": median([r.ingest.anon_mb for r in reps]),
        "ingest_peak_file_mb_polled": median([r.ingest.file_mb for r in reps]),
        "ingest_cpu_s": median([r.ingest.cpu_s for r in reps]),
        "wsidicomizer_peak_rss_mb": median([r.wsidicomizer.rss_mb for r in reps]),
        "wsidicomizer_cpu_s": median([r.wsidicomizer.cpu_s for r in reps]),
        "other_cpu_s_max": max(
            max(r.floor_other_cpu_s, r.ingest.other_cpu_s, r.wsidicomizer.other_cpu_s) for r in reps
        ),
    }
    kept = [r for r in reps if r.original is not None]
    if kept:
        medians |= {
            "original_s": median([r.original.seconds for r in kept if r.original]),
            "ratio_original_floor": median(
                [r.original.seconds / r.floor_s for r in kept if r.original]
            ),
            "original_peak_rss_mb": median([r.original.rss_mb for r in kept if r.original]),
            "original_cpu_s": median([r.original.cpu_s for r in kept if r.original]),
        }
    return medians


Row = tuple[str, str, str, str]


def markdown(results: Results, facts: dict[str, Any]) -> str:
    reps = results.repetitions
    medians = summary(results)
    size = results.slide["size_bytes"]
    kept = originals(results)

    def row(label: str, values: list[float], digits: int = 2, note: str = "") -> Row:
        """Median and every run of one measure (medians are of the per-run values)."""
        runs = ", ".join(f"{value:.{digits}f}" for value in values)
        return (label, f"{median(values):.{digits}f}", runs, note)

    def speed(key: str) -> str:
        return f"{size / 1e6 / medians[key]:.0f} MB/s"

    def verdict(value: float, goal: float) -> str:
        return f"goal ≤ {goal:g}: " + ("meets goal" if value <= goal else "**misses goal**")

    settings = conversion_settings()
    rows = [
        row("floor: `sha256sum` + `cp` (s)", [r.floor_s for r in reps]),
        row("of which `sha256sum` (s)", [r.sha256sum_s for r in reps], note=speed("sha256sum_s")),
        row("of which `cp` (s)", [r.cp_s for r in reps], note=speed("cp_s")),
        row("floor + `sync` of the copy (s)", [r.floor_sync_s for r in reps]),
        row(
            "`wsidicomizer` command line (s)",
            [r.wsidicomizer.seconds for r in reps],
            note=f"workers {settings['workers']}, {settings['offset_table']} offset table, "
            f"{settings['chunk_size']} tiles per batch, source {settings['source']}",
        ),
        row(
            "`wsidicomizer` + `sync` of its files (s)", [r.wsidicomizer_sync_total_s for r in reps]
        ),
        row(
            "**`slidebank ingest`, converting** (s)",
            [r.ingest.seconds for r in reps],
            note=speed("ingest_s"),
        ),
        row(
            "**ingest / floor**",
            [r.ingest.seconds / r.floor_s for r in reps],
            note=verdict(medians["ratio_ingest_floor"], GOAL_CONVERT_FLOOR),
        ),
        row("ingest / (floor + sync)", [r.ingest.seconds / r.floor_sync_s for r in reps]),
        row(
            "**ingest / wsidicomizer**",
            [r.ingest.seconds / r.wsidicomizer.seconds for r in reps],
            note=verdict(medians["ratio_ingest_wsidicomizer"], GOAL_CONVERT_WSIDICOMIZER),
        ),
        row(
            "ingest / (wsidicomizer + sync)",
            [r.ingest.seconds / r.wsidicomizer_sync_total_s for r in reps],
            note="the ingest fsyncs its files; the command line does not",
        ),
        row(
            "ingest peak RSS (MB)",
            [r.ingest.rss_mb for r in reps],
            0,
            verdict(medians["ingest_peak_rss_mb"], GOAL_RSS_MB) + " (ru_maxrss via wait4)",
        ),
        row(
            "ingest peak anonymous RSS, polled (MB)",
            [r.ingest.anon_mb for r in reps],
            0,
            "the process's own memory",
        ),
        row("ingest CPU, user + sys (s)", [r.ingest.cpu_s for r in reps]),
        row("wsidicomizer peak RSS (MB)", [r.wsidicomizer.rss_mb for r in reps], 0),
        row("wsidicomizer CPU, user + sys (s)", [r.wsidicomizer.cpu_s for r in reps]),
    ]
    if kept:
        rows += [
            row(
                "`slidebank ingest`, stored form original (s)",
                [p.seconds for p in kept],
                note=speed("original_s"),
            ),
            row(
                "original / floor",
                [r.original.seconds / r.floor_s for r in reps if r.original],
                note=verdict(medians["ratio_original_floor"], GOAL_RATIO),
            ),
            row(
                "original peak RSS (MB)",
                [p.rss_mb for p in kept],
                0,
                verdict(medians["original_peak_rss_mb"], GOAL_RSS_MB),
            ),
            row(
                "conversion's cost: ingest − original (s)",
                [r.ingest.seconds - r.original.seconds for r in reps if r.original],
            ),
        ]
    if results.cli_startup_s is not None:
        rows.append(("`slidebank --help` start-up (s)", f"{results.cli_startup_s:.2f}", "", ""))
    if results.wsidicomizer_import_s is not None:
        rows.append(
            (
                "`import wsidicomizer` (s)",
                f"{results.wsidicomizer_import_s:.2f}",
                "",
                "paid by the command line and the ingest alike",
            )
        )
    rows += [
        row(
            "other processes' CPU during floor / ingest / wsidicomizer (s)",
            [r.floor_other_cpu_s for r in reps]
            + [r.ingest.other_cpu_s for r in reps]
            + [r.wsidicomizer.other_cpu_s for r in reps],
            1,
            "interference from the rest of the machine (0 on a quiet one)",
        ),
        row("1-minute load average at each ingest start", [r.ingest.load for r in reps]),
    ]
    slide = results.slide
    lines = [
        f"Ingest of one {slide['width']:,} x {slide['height']:,} px SVS, "
        f"{size:,} bytes ({size / 1e9:.2f} GB), median of {len(reps)} rounds "
        f"({', '.join(KINDS if kept else KINDS[:3])} alternating, order rotated each round; "
        f"page cache warm; {facts['nproc']} CPUs, Python {facts['python']}, "
        f"{facts['filesystem']}).",
        "",
        "| measure | median | runs | note |",
        "|---|---:|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
        "wsidicomizer command line: `" + " ".join(results.wsidicomizer_command) + "`",
    ]
    for phases in (results.phases, results.phases_original):
        if phases and "seconds" in phases:
            lines += [
                "",
                f"Where one in-process ingest (stored form {phases['stored_form']}) spends its "
                f"{phases['total_s']:.2f} s (fsync calls in all: {phases['all_fsync_s']:.2f} s; "
                "wsidicomizer imported beforehand):",
                "",
                "| step | seconds | peak RSS after (MB) |",
                "|---|---:|---:|",
            ]
            peaks = phases["peak_rss_mb_after_step"]
            for name, value in phases["seconds"].items():
                after = f"{peaks[name]:.0f}" if name in peaks else ""
                lines.append(f"| {name} | {value:.2f} | {after} |")
        elif phases:
            lines += ["", f"Phase breakdown skipped: {phases['skipped']}"]
    return "\n".join(lines)


def machine_facts() -> dict[str, Any]:
    def output(*command: str) -> str | None:
        try:
            return subprocess.run(
                command, check=True, capture_output=True, text=True, cwd=PROJECT_ROOT
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(memory / 1e9, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "filesystem": output("findmnt", "-n", "-o", "FSTYPE", "-T", str(DATA))
        or "unknown file system",
        "git_commit": output("git", "rev-parse", "HEAD"),
        "git_dirty": bool(output("git", "status", "--porcelain", "--untracked-files=no")),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def write_json(results: Results, facts: dict[str, Any], table: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)

    def repetition(r: Repetition) -> dict[str, Any]:
        return asdict(r) | {
            "floor_sync_s": r.floor_sync_s,
            "wsidicomizer_sync_total_s": r.wsidicomizer_sync_total_s,
        }

    record = {
        "benchmark": "ingest",
        "goals": {
            "ratio_ingest_floor_max": GOAL_CONVERT_FLOOR,
            "ratio_ingest_wsidicomizer_max": GOAL_CONVERT_WSIDICOMIZER,
            "ratio_original_floor_max": GOAL_RATIO,
            "peak_rss_mb_max": GOAL_RSS_MB,
        },
        "machine": facts,
        "slide": results.slide,
        "wsidicomizer_command": results.wsidicomizer_command,
        "medians": summary(results),
        "cli_startup_s": results.cli_startup_s,
        "wsidicomizer_import_s": results.wsidicomizer_import_s,
        "repetitions": [repetition(r) for r in results.repetitions],
        "phases": results.phases,
        "phases_original": results.phases_original,
        "markdown": table,
    }
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(target)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--size-gb",
        type=float,
        default=2.0,
        help="smallest slide size in GB (10^9 bytes) [default: 2.0; 0.2 for a smoke run]",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds [default: 3]")
    parser.add_argument(
        "--tissue", type=Path, default=None, help="real tiled JPEG slide to build the slide from"
    )
    parser.add_argument(
        "--no-original",
        action="store_true",
        help="skip the ingest with SLIDEBANK_STORED_FORM=original",
    )
    parser.add_argument(
        "--no-phases", action="store_true", help="skip the in-process per-step breakdowns"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS / "ingest-latest.json",
        help="where to write the results [default: benchmarks/results/ingest-latest.json]",
    )
    args = parser.parse_args(argv)
    if args.size_gb <= 0 or args.repeat < 1:
        parser.error("--size-gb must be positive and --repeat at least 1")

    DATA.mkdir(parents=True, exist_ok=True)
    for prefix in ("floor-", "ingest-home-", "phases-home-", "startup-", "wsidicomizer-"):
        for stale in DATA.glob(prefix + "*"):  # left by an interrupted run
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
    slide = slide_for(args.size_gb, args.tissue)
    check_free_space(slide.size_bytes, "a copy by cp and one by ingest")
    results = Results(
        slide={
            "path": str(slide.path.relative_to(PROJECT_ROOT)),
            "width": slide.width,
            "height": slide.height,
            "size_bytes": slide.size_bytes,
            "tissue": slide.tissue,
        },
        wsidicomizer_command=[
            Path(part).name if part.startswith("/") else part
            for part in wsidicomizer_command(slide.path, DATA / "OUT")
        ],
    )
    flush()
    warm(slide.path)
    results.cli_startup_s = measure_cli_startup()
    results.wsidicomizer_import_s = measure_wsidicomizer_import()
    kinds = KINDS[:3] if args.no_original else KINDS
    for index in range(args.repeat):
        # The order rotated each round, so that drift favours none.
        order = kinds[index % len(kinds) :] + kinds[: index % len(kinds)]
        floor: tuple[float, float, float, float] | None = None
        ingest = converter = original = None
        converter_sync_s = 0.0
        for which in order:
            if which == "floor":
                floor = measure_floor(slide.path)
            elif which == "ingest":
                ingest = measure_ingest(slide.path, "dicom")
            elif which == "wsidicomizer":
                converter, converter_sync_s = measure_wsidicomizer(slide.path)
            else:
                original = measure_ingest(slide.path, "original")
        assert floor is not None and ingest is not None and converter is not None
        sha256sum_s, cp_s, sync_s, floor_other_s = floor
        repetition = Repetition(
            index=index + 1,
            order=",".join(order),
            floor_s=sha256sum_s + cp_s,
            sync_s=sync_s,
            sha256sum_s=sha256sum_s,
            cp_s=cp_s,
            floor_other_cpu_s=floor_other_s,
            ingest=ingest,
            wsidicomizer=converter,
            wsidicomizer_sync_s=converter_sync_s,
            original=original,
        )
        results.repetitions.append(repetition)
        extra = f", original {original.seconds:.2f} s" if original is not None else ""
        print(
            f"round {repetition.index} ({repetition.order}): floor {repetition.floor_s:.2f} s "
            f"(sha256sum {sha256sum_s:.2f} + cp {cp_s:.2f}; then sync {sync_s:.2f}), "
            f"ingest {ingest.seconds:.2f} s (peak RSS {ingest.rss_mb:.0f} MB), "
            f"wsidicomizer {converter.seconds:.2f} s (+ sync {converter_sync_s:.2f}){extra}; "
            f"others' CPU {floor_other_s:.1f}/{ingest.other_cpu_s:.1f}/"
            f"{converter.other_cpu_s:.1f} s",
            flush=True,
        )
    if not args.no_phases:
        results.phases = measure_phases(slide.path, "dicom")
        if not args.no_original:
            results.phases_original = measure_phases(slide.path, "original")
    facts = machine_facts()
    table = markdown(results, facts)
    print()
    print(table)
    write_json(results, facts, table, args.json)
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
