"""Benchmark: ``slidebank ingest`` of one large slide against the I/O floor.

The floor is what any ingest must at least do: read the file to hash it and write a copy,
measured as ``sha256sum FILE`` then ``cp FILE DEST`` (subprocesses, timed together), and as
the same followed by ``sync DEST`` (the ingest fsyncs what it stores; cp does not).

Floor and ingest alternate in one run (order swapped every repetition), each against a fresh
folder on the repository's file system; every folder is removed, and dirty pages flushed
with an untimed ``sync``, before the next measurement. The source slide is read once before
the first measurement, so every measurement reads it from the page cache.

Goals (from the issue): ingest wall time <= 1.5 x floor; ingest peak RSS <= 300 MB.

    python benchmarks/ingest.py                       # >= 2 GB slide, 3 repetitions
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
GOAL_RATIO = 1.5
CONCURRENT_STEP = "validate (concurrent with hash + copy)"
GOAL_RSS_MB = 300.0
FREE_SPACE_FACTOR = 3
READ_CHUNK = 16 * 1024 * 1024


@dataclass
class Repetition:
    index: int
    order: str
    floor_s: float
    sync_s: float
    sha256sum_s: float
    cp_s: float
    ingest_s: float
    ingest_rss_mb: float
    ingest_user_s: float
    ingest_sys_s: float
    ingest_anon_mb: float
    ingest_file_mb: float

    @property
    def floor_sync_s(self) -> float:
        return self.floor_s + self.sync_s


@dataclass
class Results:
    slide: dict[str, Any]
    repetitions: list[Repetition] = field(default_factory=list)
    cli_startup_s: float | None = None
    phases: dict[str, Any] | None = None


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


def measure_floor(slide: Path) -> tuple[float, float, float]:
    """Seconds for ``sha256sum``, for ``cp``, and for the ``sync DEST`` that follows."""
    with fresh_folder("floor-") as folder:
        destination = folder / slide.name
        started = time.perf_counter()
        subprocess.run(["sha256sum", str(slide)], check=True, stdout=subprocess.DEVNULL)
        hashed = time.perf_counter()
        subprocess.run(["cp", str(slide), str(destination)], check=True)
        copied = time.perf_counter()
        subprocess.run(["sync", str(destination)], check=True)  # fsync of that file
        synced = time.perf_counter()
    return hashed - started, copied - hashed, synced - copied


def slidebank_command() -> Path:
    command = Path(sys.executable).parent / "slidebank"
    if not command.exists():
        command = PROJECT_ROOT / ".venv" / "bin" / "slidebank"
    if not command.exists():
        raise SystemExit("error: no slidebank entry point next to this Python; install the venv")
    return command


@dataclass
class ChildRun:
    seconds: float
    code: int
    usage: resource.struct_rusage
    anon_mb: float  # largest RssAnon seen by polling (private memory)
    file_mb: float  # largest RssFile seen by polling (mapped page-cache pages)


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


def run_child(arguments: list[str], log: Path) -> ChildRun:
    """Run a child; its wall time, exit code, own rusage (via os.wait4) and polled memory."""
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(arguments, stdout=output, stderr=subprocess.STDOUT)
        poller = MemoryPoller(process.pid)
        poller.start()
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        poller.stop.set()
        poller.join()
    process.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits again
    return ChildRun(
        elapsed, process.returncode, usage, poller.anon_kb * 1024 / 1e6, poller.file_kb * 1024 / 1e6
    )


def measure_ingest(slide: Path) -> ChildRun:
    """One ``slidebank ingest`` of ``slide`` into a fresh home (which is then removed)."""
    with fresh_folder("ingest-home-") as home:
        log = home.parent / f"{home.name}.log"
        command = [str(slidebank_command()), "ingest", str(slide), "--home", str(home), "--json"]
        try:
            run = run_child(command, log)
            output = log.read_text(errors="replace")
        finally:
            log.unlink(missing_ok=True)
        outcomes = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        if run.code != 0 or [o.get("status") for o in outcomes] != ["ingested"]:
            raise SystemExit(f"error: ingest failed (exit {run.code}):\n{output}")
    return run


def measure_cli_startup() -> float:
    """Wall seconds of ``slidebank --help``: interpreter start and imports, paid by ingest."""
    times = []
    with fresh_folder("startup-") as folder:
        for _ in range(3):
            times.append(run_child([str(slidebank_command()), "--help"], folder / "log").seconds)
    return statistics.median(times)


# --------------------------------------------------------------------------- phases


def measure_phases(slide: Path) -> dict[str, Any]:
    """One in-process ingest with each pipeline step timed (wall seconds, peak RSS after).

    Wraps the step functions the pipeline module calls; if their names changed, the
    breakdown is skipped rather than the benchmark failing.
    """
    from slidebank.config import Settings
    from slidebank.ingest import pipeline
    from slidebank.services.ingesting import ingest_paths
    from slidebank.services.repository import open_repository
    from slidebank.storage import LocalBlobStore

    seconds: dict[str, float] = {}
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
                peak_mb[name] = peak()

        return wrapper

    steps = {
        "open_slide": "open slide",
        "validate": CONCURRENT_STEP,
        "stage_copy": "hash + copy + fsync",
        "describe": "describe",
        "write_thumbnail": "thumbnail",
    }
    missing = [name for name in steps if not hasattr(pipeline, name)]
    if missing:
        return {"skipped": f"slidebank.ingest.pipeline has no {', '.join(missing)}"}
    saved: dict[str, Any] = {name: getattr(pipeline, name) for name in steps}
    saved_commit = LocalBlobStore.commit
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
        for name, label in steps.items():
            setattr(pipeline, name, timed(label, saved[name]))
        LocalBlobStore.commit = timed("commit to store", saved_commit)  # type: ignore[method-assign]
        os.fsync = fsync
        with fresh_folder("phases-home-") as home:
            started = time.perf_counter()
            repository = timed("open repository (migrate)", open_repository)(
                Settings.from_env(home=home)
            )
            report = timed("ingest_paths", ingest_paths)(repository, [slide])
            repository.close()
            total = time.perf_counter() - started
    finally:
        for name in steps:
            setattr(pipeline, name, saved[name])
        LocalBlobStore.commit = saved_commit  # type: ignore[method-assign]
        os.fsync = saved_fsync
    if [outcome.status for outcome in report.outcomes] != ["ingested"]:
        return {"skipped": f"in-process ingest did not succeed: {report.outcomes}"}
    # Validation runs on a second thread while the slide is hashed and copied: its time
    # overlaps the copy and is not part of the sum.
    inner = sum(
        value for key, value in seconds.items() if key in steps.values() and key != CONCURRENT_STEP
    )
    inner += seconds.get("commit to store", 0.0)
    seconds["catalogue + discovery (rest)"] = seconds.pop("ingest_paths") - inner
    return {
        "total_s": total,
        "seconds": seconds,
        "all_fsync_s": fsync_seconds[0],
        "peak_rss_mb_after_step": peak_mb,
        "peak_rss_mb_before": rss_before,
    }


# --------------------------------------------------------------------------- reporting


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def summary(results: Results) -> dict[str, float]:
    reps = results.repetitions
    return {
        "ingest_s": median([r.ingest_s for r in reps]),
        "floor_s": median([r.floor_s for r in reps]),
        "floor_sync_s": median([r.floor_sync_s for r in reps]),
        "sha256sum_s": median([r.sha256sum_s for r in reps]),
        "cp_s": median([r.cp_s for r in reps]),
        "ratio_ingest_floor": median([r.ingest_s / r.floor_s for r in reps]),
        "ratio_ingest_floor_sync": median([r.ingest_s / r.floor_sync_s for r in reps]),
        "ingest_peak_rss_mb": median([r.ingest_rss_mb for r in reps]),
        "ingest_peak_anon_mb_polled": median([r.ingest_anon_mb for r in reps]),
        "ingest_peak_file_mb_polled": median([r.ingest_file_mb for r in reps]),
        "ingest_cpu_s": median([r.ingest_user_s + r.ingest_sys_s for r in reps]),
    }


Row = tuple[str, str, str, str]


def markdown(results: Results, facts: dict[str, Any]) -> str:
    reps = results.repetitions
    medians = summary(results)
    size = results.slide["size_bytes"]

    def row(label: str, values: list[float], digits: int = 2, note: str = "") -> Row:
        """Median and every run of one measure (medians are of the per-run values)."""
        runs = ", ".join(f"{value:.{digits}f}" for value in values)
        return (label, f"{median(values):.{digits}f}", runs, note)

    def speed(key: str) -> str:
        return f"{size / 1e6 / medians[key]:.0f} MB/s"

    def verdict(ok: bool) -> str:
        return "meets goal" if ok else "**misses goal**"

    ratio = medians["ratio_ingest_floor"]
    rss = medians["ingest_peak_rss_mb"]
    rows = [
        row("floor: `sha256sum` + `cp` (s)", [r.floor_s for r in reps]),
        row("of which `sha256sum` (s)", [r.sha256sum_s for r in reps], note=speed("sha256sum_s")),
        row("of which `cp` (s)", [r.cp_s for r in reps], note=speed("cp_s")),
        row("floor + `sync` of the copy (s)", [r.floor_sync_s for r in reps]),
        row(
            "`slidebank ingest` wall time (s)",
            [r.ingest_s for r in reps],
            note=speed("ingest_s"),
        ),
        row(
            "ingest / floor",
            [r.ingest_s / r.floor_s for r in reps],
            note=f"goal ≤ {GOAL_RATIO}: {verdict(ratio <= GOAL_RATIO)}",
        ),
        row("ingest / (floor + sync)", [r.ingest_s / r.floor_sync_s for r in reps]),
        row(
            "ingest peak RSS (MB)",
            [r.ingest_rss_mb for r in reps],
            0,
            f"goal ≤ {GOAL_RSS_MB:.0f}: {verdict(rss <= GOAL_RSS_MB)} (ru_maxrss via wait4)",
        ),
        row(
            "ingest peak anonymous RSS, polled (MB)",
            [r.ingest_anon_mb for r in reps],
            0,
            "the process's own memory",
        ),
        row(
            "ingest peak file-backed RSS, polled (MB)",
            [r.ingest_file_mb for r in reps],
            0,
            "mapped page cache (mmap of the slide, libraries)",
        ),
        row("ingest CPU, user + sys (s)", [r.ingest_user_s + r.ingest_sys_s for r in reps]),
    ]
    if results.cli_startup_s is not None:
        rows.append(
            (
                "of which CLI start-up, `slidebank --help` (s)",
                f"{results.cli_startup_s:.2f}",
                "",
                "",
            )
        )
    slide = results.slide
    lines = [
        f"Ingest of one {slide['width']:,} x {slide['height']:,} px SVS, "
        f"{size:,} bytes ({size / 1e9:.2f} GB), median of {len(reps)} "
        f"(floor and ingest alternating; page cache warm; {facts['nproc']} CPUs, "
        f"Python {facts['python']}, {facts['filesystem']}).",
        "",
        "| measure | median | runs | note |",
        "|---|---:|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]
    phases = results.phases
    if phases and "seconds" in phases:
        lines += [
            "",
            f"Where one in-process ingest spends its {phases['total_s']:.2f} s "
            f"(fsync calls in all: {phases['all_fsync_s']:.2f} s):",
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
    record = {
        "benchmark": "ingest",
        "goals": {"ratio_ingest_floor_max": GOAL_RATIO, "peak_rss_mb_max": GOAL_RSS_MB},
        "machine": facts,
        "slide": results.slide,
        "medians": summary(results),
        "cli_startup_s": results.cli_startup_s,
        "repetitions": [asdict(r) | {"floor_sync_s": r.floor_sync_s} for r in results.repetitions],
        "phases": results.phases,
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
    parser.add_argument("--repeat", type=int, default=3, help="repetitions [default: 3]")
    parser.add_argument(
        "--tissue", type=Path, default=None, help="real tiled JPEG slide to build the slide from"
    )
    parser.add_argument(
        "--no-phases", action="store_true", help="skip the in-process per-step breakdown"
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
    for prefix in ("floor-", "ingest-home-", "phases-home-", "startup-"):
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
        }
    )
    flush()
    warm(slide.path)
    results.cli_startup_s = measure_cli_startup()
    for index in range(args.repeat):
        # Order swapped each repetition, so drift favours neither.
        order = "floor,ingest" if index % 2 == 0 else "ingest,floor"
        sha256sum_s = cp_s = sync_s = 0.0
        ingest: ChildRun | None = None
        for which in order.split(","):
            if which == "floor":
                sha256sum_s, cp_s, sync_s = measure_floor(slide.path)
            else:
                ingest = measure_ingest(slide.path)
        assert ingest is not None
        repetition = Repetition(
            index=index + 1,
            order=order,
            floor_s=sha256sum_s + cp_s,
            sync_s=sync_s,
            sha256sum_s=sha256sum_s,
            cp_s=cp_s,
            ingest_s=ingest.seconds,
            ingest_rss_mb=ingest.usage.ru_maxrss * 1024 / 1e6,
            ingest_user_s=ingest.usage.ru_utime,
            ingest_sys_s=ingest.usage.ru_stime,
            ingest_anon_mb=ingest.anon_mb,
            ingest_file_mb=ingest.file_mb,
        )
        results.repetitions.append(repetition)
        print(
            f"rep {repetition.index} ({order}): floor {repetition.floor_s:.2f} s "
            f"(sha256sum {sha256sum_s:.2f} + cp {cp_s:.2f}; then sync {sync_s:.2f} s), "
            f"ingest {repetition.ingest_s:.2f} s, peak RSS {repetition.ingest_rss_mb:.0f} MB "
            f"(anonymous {ingest.anon_mb:.0f} MB, file-backed {ingest.file_mb:.0f} MB)",
            flush=True,
        )
    if not args.no_phases:
        results.phases = measure_phases(slide.path)
    facts = machine_facts()
    table = markdown(results, facts)
    print()
    print(table)
    write_json(results, facts, table, args.json)
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
