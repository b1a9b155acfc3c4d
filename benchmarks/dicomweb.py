"""Benchmark: WADO-RS frames from ``slidebank serve`` against Orthanc (DICOMweb + WSI plugins).

One run, on one large generated SVS (real CMU-1 JPEG tiles, ``benchmarks/make_slide.py``,
80,000 x 60,000 px by default) ingested into a repository under benchmarks/data, where ingest
converts it to DICOM WSI (one instance file per pyramid level):

* Orthanc 1.10 with its DICOMweb and WSI plugins (Debian packages ``orthanc``,
  ``orthanc-dicomweb``, ``orthanc-wsi``) is started on loopback with a generated
  configuration in a temporary folder, and the very instance files slidebank stores are
  uploaded to it (``POST /instances``);
* a seeded list of random frames (``FRAMES`` requests; levels mixed by ``LEVEL_MIX``: mostly
  level 0, as a viewer at 1:1 asks, and the coarser levels in decreasing shares) is replayed
  with ``wrk`` at concurrency 1, 8 and 32 against both servers, asking
  ``/studies/{study}/series/{series}/instances/{instance}/frames/{n}`` with
  ``Accept: multipart/related; type="application/octet-stream"; transfer-syntax=*`` (the
  stored JPEG bytes, which both servers answer without transcoding);
* the HTTP floor: slidebank's ``/healthz`` (a constant answer through the same stack).

Before timing, sampled frames of every level are fetched from both servers one at a time:
both must answer 200 with exactly the stored frame bytes (a JPEG stream); these requests also
give each level's latency of a single request. Non-2xx answers during the timed runs are
counted as failures (and the run flagged).

Orthanc's DICOMweb plugin reads and parses the whole instance file for every frame request
(``/instances/{id}/file``, then DCMTK): for the 0.94 GB level-0 instance that is about 5 s
of CPU and 1.5-2 GB of memory per request in flight. So that the benchmark cannot exhaust
the machine's memory, Orthanc runs with ``ORTHANC_HTTP_THREADS`` HTTP threads (it answers
that many requests at once; on 2 cores more would not be faster) and without keep-alive
(CivetWeb keeps a thread per open connection, so with fewer threads than connections
keep-alive would starve the other connections); its storage cache holds the whole slide;
a watchdog stops Orthanc if the machine runs low on memory. Orthanc cannot replay thousands
of such requests in reasonable time, so its runs are bounded to ``--orthanc-seconds``: it
replays a prefix of the same list (random order, so the same mix in expectation; the
requests still in flight at the end are not counted, which favours Orthanc) and its rate is
frames completed / time. Slidebank replays the whole list every run.

Rounds alternate the servers (order swapped every round); figures are medians over rounds.
Each run: wrk, 1 thread, N connections taking the next URL of the list in order; rate =
requests completed / (last response - first request).

Goal (from the issue, for this 2-core machine): slidebank >= 10 x Orthanc's frames/s at
concurrency 8.

    python benchmarks/dicomweb.py                  # 80,000 x 60,000 px slide, 3 rounds
    python benchmarks/dicomweb.py --quick          # smoke run: small slide, short runs
    python benchmarks/dicomweb.py --skip-orthanc   # slidebank alone (while tuning it)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pydicom

from ingest import machine_facts, slidebank_command, warm
from make_slide import PROJECT_ROOT, estimate_bytes, load_tissue, make_slide
from slidebank.slides.dicom_frames import frame_table
from tiles import (
    LOGS,
    REPLAY_LUA,
    Replayer,
    Run,
    RunFailed,
    Server,
    ServerFailed,
    _die_with_parent,
    _terminate,
    free_port,
    json_values,
    latencies,
    log,
    median,
    running,
    write_json,
)
from tiles import run_cli as tiles_run_cli

BENCHMARKS = Path(__file__).resolve().parent
DATA = BENCHMARKS / "data"
RESULTS = BENCHMARKS / "results"
HOME = DATA / "dicomweb-home"
DATASET = "dicomweb-benchmark"

CONCURRENCIES = (1, 8, 32)
SERVERS = ("slidebank", "orthanc")
WORKERS = 2
SEED = 20261129
ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
# Shares of the requests per pyramid level, finest first (renormalised over the levels the
# slide has): a viewer at 1:1 asks level 0, zoomed out the coarser levels.
LEVEL_MIX = (0.60, 0.25, 0.10, 0.04, 0.01)
CHECK_FRAMES = 3  # frames per level fetched one at a time from both servers before timing

GOAL_RATIO = 10.0  # slidebank / Orthanc frames/s at concurrency 8
GOAL_RATIO_AT = 8

ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_PLUGINS = Path("/usr/share/orthanc/plugins")
ORTHANC_PLUGIN_FILES = ("libOrthancDicomWeb.so", "libOrthancWSI.so")
ORTHANC_HTTP_THREADS = 4
ORTHANC_STORAGE_CACHE_MB = 2048  # holds every instance of the slide (its largest is ~1 GB)
MIN_AVAILABLE_GB = 2.5  # the watchdog stops Orthanc below this much available memory
ORTHANC_NEEDS_GB = 10.0  # available memory needed before starting Orthanc's runs


@dataclass(frozen=True)
class Profile:
    width: int
    height: int
    rounds: int
    frames: int  # requests in the frame list
    floor: int
    orthanc_seconds: int  # bound of one Orthanc run


FULL = Profile(80_000, 60_000, 3, 10_000, 30_000, 60)
QUICK = Profile(20_000, 15_000, 1, 2_000, 5_000, 20)


# --------------------------------------------------------------------------- the slide


@dataclass(frozen=True)
class StoredInstance:
    path: Path
    study: str
    series: str
    sop: str
    frames: int
    width: int  # total pixel matrix
    height: int
    kind: str  # VOLUME, THUMBNAIL, LABEL, OVERVIEW
    transfer_syntax: str
    size_bytes: int

    def frame_path(self, number: int) -> str:
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}/frames/{number}"


def run_cli(*args: str) -> str:
    return tiles_run_cli(*args, home=HOME)


def ingest(path: Path) -> str:
    """Ingest (or find as a duplicate) the slide; its public id."""
    for record in json_values(run_cli("ingest", str(path), "--dataset", DATASET, "--json")):
        if record["status"] in ("ingested", "duplicate") and record["id"]:
            return str(record["id"])
        raise SystemExit(f"error: ingest failed: {record}")
    raise SystemExit(f"error: ingest reported nothing for {path}")


def stored_instances(slide_id: str) -> list[StoredInstance]:
    """The DICOM instance files slidebank stores for the slide (what both servers serve)."""
    image = json.loads(run_cli("show", slide_id, "--json"))["image"]
    key: str = image["storage_key"]
    content = HOME / "blobs" / "objects" / key[:2] / key / "content"
    found = []
    for item in image["files"]:
        path = content / item["name"]
        if path.suffix.lower() != ".dcm":
            continue
        header = pydicom.dcmread(path, stop_before_pixels=True)
        image_type = [str(v).upper() for v in header.get("ImageType", [])]
        kind = next(
            (k for k in ("VOLUME", "THUMBNAIL", "LABEL", "OVERVIEW") if k in image_type), "OTHER"
        )
        found.append(
            StoredInstance(
                path=path,
                study=str(header.StudyInstanceUID),
                series=str(header.SeriesInstanceUID),
                sop=str(header.SOPInstanceUID),
                frames=int(header.get("NumberOfFrames") or 1),
                width=int(header.get("TotalPixelMatrixColumns") or header.Columns),
                height=int(header.get("TotalPixelMatrixRows") or header.Rows),
                kind=kind,
                transfer_syntax=str(header.file_meta.TransferSyntaxUID),
                size_bytes=path.stat().st_size,
            )
        )
    if not any(i.kind == "VOLUME" for i in found):
        raise SystemExit(f"error: {slide_id} has no stored VOLUME instances in {content}")
    return found


def pyramid(instances: Sequence[StoredInstance]) -> list[StoredInstance]:
    """The VOLUME instances, finest level first."""
    return sorted((i for i in instances if i.kind == "VOLUME"), key=lambda i: -i.width)


# --------------------------------------------------------------------------- the frame list

Frame = tuple[int, int]  # (level, frame number from 1)


def frame_list(levels: Sequence[StoredInstance], count: int, seed: int) -> list[Frame]:
    """``count`` random frames, levels drawn by ``LEVEL_MIX`` (seeded)."""
    rng = random.Random(seed)
    weights = list(LEVEL_MIX[: len(levels)])
    weights += [LEVEL_MIX[-1]] * (len(levels) - len(weights))
    chosen = rng.choices(range(len(levels)), weights=weights, k=count)
    return [(level, rng.randint(1, levels[level].frames)) for level in chosen]


def mix_of(frames: Sequence[Frame], levels: Sequence[StoredInstance]) -> list[dict[str, Any]]:
    counts = Counter(level for level, _ in frames)
    return [
        {
            "level": index,
            "downsample": round(levels[0].width / level.width, 2),
            "size": [level.width, level.height],
            "frames_in_instance": level.frames,
            "instance_mb": round(level.size_bytes / 1e6, 1),
            "requests": counts[index],
            "share": counts[index] / len(frames),
        }
        for index, level in enumerate(levels)
    ]


# --------------------------------------------------------------------------- HTTP checks


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    seconds: float


def get(port: int, path: str, accept: str = ACCEPT, timeout: float = 300.0) -> Answer:
    """One GET on loopback (a fresh connection)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        started = time.perf_counter()
        connection.request("GET", path, headers={"Accept": accept})
        response = connection.getresponse()
        body = response.read()
        seconds = time.perf_counter() - started
        return Answer(response.status, response.getheader("Content-Type") or "", body, seconds)
    finally:
        connection.close()


def multipart_parts(content_type: str, body: bytes) -> list[bytes]:
    """The bodies of the parts of a multipart/related answer."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not content_type.lower().startswith("multipart/related") or not boundary:
        raise ValueError(f"not multipart/related with a boundary: {content_type!r}")
    delimiter = b"--" + boundary.encode("latin-1")
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head_end = chunk.find(b"\r\n\r\n")
        if head_end < 0:
            raise ValueError("a part without a header end")
        parts.append(chunk[head_end + 4 :].removesuffix(b"\r\n"))
    return parts


def check_frames(
    servers: dict[str, tuple[int, str]],
    levels: Sequence[StoredInstance],
    seed: int,
) -> list[dict[str, Any]]:
    """Fetch ``CHECK_FRAMES`` random frames of every level from every server, one at a time:
    each answer must be 200 and exactly the stored frame (a JPEG stream). Returns the
    single-request latencies per level and server."""
    rng = random.Random(seed)
    rows = []
    for index, level in enumerate(levels):
        table = frame_table(level.path)
        numbers = [rng.randint(1, level.frames) for _ in range(CHECK_FRAMES)]
        fd = os.open(level.path, os.O_RDONLY)
        try:
            stored = {n: table.read(fd, n - 1) for n in numbers}
        finally:
            os.close(fd)
        row: dict[str, Any] = {"level": index, "frames": numbers}
        for name, (port, prefix) in servers.items():
            seconds = []
            for number in numbers:
                answer = get(port, prefix + level.frame_path(number))
                if answer.status != 200:
                    raise SystemExit(
                        f"error: {name} answered {answer.status} for level {index} frame "
                        f"{number}: {answer.body[:300]!r}"
                    )
                parts = multipart_parts(answer.content_type, answer.body)
                expected = stored[number]
                # A fragment of odd length is stored with one padding byte.
                if len(parts) != 1 or parts[0].rstrip(b"\0") != expected.rstrip(b"\0"):
                    raise SystemExit(
                        f"error: {name}, level {index} frame {number}: not the stored frame "
                        f"({[len(p) for p in parts]} bytes against {len(expected)})"
                    )
                if not parts[0].startswith(b"\xff\xd8"):
                    raise SystemExit(f"error: {name}, level {index} frame {number}: not JPEG")
                seconds.append(answer.seconds)
            row[name] = {"ms": [round(s * 1000, 2) for s in seconds]}
            row[name]["median_ms"] = median([s * 1000 for s in seconds])
        rows.append(row)
        log(
            f"checked level {index}: "
            + ", ".join(f"{n} {row[n]['median_ms']:.1f} ms" for n in servers)
            + " per frame (one at a time, stored bytes)"
        )
    return rows


# --------------------------------------------------------------------------- servers


def slidebank_server(log_path: Path) -> Server:
    command = [str(slidebank_command()), "serve", "--workers", str(WORKERS)]
    return Server(
        f"slidebank ({WORKERS} workers)", command, {"SLIDEBANK_HOME": str(HOME)}, log_path
    )


@dataclass
class OrthancServer(Server):
    """Orthanc with a generated configuration in a temporary folder (storage there too)."""

    folder: Path = field(default_factory=Path)
    stopped_for_memory: bool = False
    _watching: threading.Event = field(default_factory=threading.Event)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "Name": "slidebank-benchmark",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": False,
            "DicomPort": free_port(),  # unused: the DICOM server is disabled
            "Plugins": [str(ORTHANC_PLUGINS / name) for name in ORTHANC_PLUGIN_FILES],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "HttpThreadsCount": ORTHANC_HTTP_THREADS,
            "KeepAlive": False,
            "MaximumStorageCacheSize": ORTHANC_STORAGE_CACHE_MB,
            "StorageCompression": False,
            "HttpCompressionEnabled": False,
        }

    def start(self, ready_timeout: float = 60.0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        configuration = self.folder / "orthanc.json"
        configuration.write_text(json.dumps(self.config, indent=2))
        self.command = [ORTHANC, str(configuration)]
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                self.command,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                cwd=self.folder,
            )
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"Orthanc exited with code {self.process.returncode} while starting:\n"
                    f"{self.log_tail()}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if get(self.port, "/system", "application/json", timeout=2).status == 200:
                    break
            if time.monotonic() > deadline:
                raise ServerFailed(f"Orthanc not ready after {ready_timeout:.0f} s")
            time.sleep(0.2)
        self.processes()
        self._watching.clear()
        threading.Thread(target=self._watch_memory, daemon=True).start()

    def _watch_memory(self) -> None:
        limit = MIN_AVAILABLE_GB * 1e9
        while not self._watching.wait(0.25):
            if psutil.virtual_memory().available < limit and self.process is not None:
                self.stopped_for_memory = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                return

    def stop(self) -> None:
        self._watching.set()
        super().stop()

    def peak_rss_mb(self) -> float:
        """The largest resident size the Orthanc process reached (VmHWM)."""
        if self.process is None:
            return 0.0
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1000
        return 0.0

    def upload(self, instances: Sequence[StoredInstance]) -> list[str]:
        """POST each instance file to /instances; Orthanc's ids."""
        ids = []
        for item in instances:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            try:
                with item.path.open("rb") as body:
                    connection.request(
                        "POST",
                        "/instances",
                        body=body,
                        headers={
                            "Content-Type": "application/dicom",
                            "Content-Length": str(item.size_bytes),
                        },
                    )
                response = connection.getresponse()
                answer = response.read()
            finally:
                connection.close()
            if response.status != 200:
                raise SystemExit(f"error: Orthanc refused {item.path.name}: {answer[:500]!r}")
            record = json.loads(answer)
            if record.get("Status") not in ("Success", "AlreadyStored"):
                raise SystemExit(f"error: Orthanc did not store {item.path.name}: {record}")
            ids.append(str(record["ID"]))
        return ids


# --------------------------------------------------------------------------- load generator

# tiles.py's replay script, asking for frames as stored (both servers) and, for runs
# bounded in time (Orthanc), counting until wrk stops rather than failing them.
_UNFINISHED = "if e < 0 then finished = false end"
if _UNFINISHED not in REPLAY_LUA:
    raise ImportError("benchmarks/tiles.py's REPLAY_LUA changed: update dicomweb.py")
FRAMES_LUA = f"wrk.headers[\"Accept\"] = '{ACCEPT}'\n" + REPLAY_LUA.replace(
    _UNFINISHED, "if e < 0 then finished = false; e = now() end"
)


@dataclass
class FrameRun(Run):
    bounded: bool = False  # the run stopped at its time bound, not at the list's end
    listed: int = 0  # requests in the list
    failures: int = 0  # non-2xx answers, timeouts, socket errors


class FrameReplayer(Replayer):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.script.write_text(FRAMES_LUA)

    def run(  # type: ignore[override]
        self,
        server: Server,
        trace: str,
        connections: int,
        round_: int,
        seconds: float | None = None,
    ) -> FrameRun:
        """Replay ``trace`` once (or for at most ``seconds``)."""
        length = self.lengths[trace]
        bound = int(seconds) if seconds else int(min(900, max(60, length / 10)))
        result, usage = self.replay(server, trace, connections, bound, timeout_s=bound + 60)
        completed = int(result["completed"])
        failures = sum(int(v) for v in result["errors"].values())
        if seconds is None and (not result["finished"] or completed != length):
            raise RunFailed(
                f"{server.name} {trace} c{connections}: {completed} of {length} requests done "
                f"within {bound} s, errors {result['errors']}\n{server.log_tail()}"
            )
        if completed == 0:
            raise RunFailed(f"{server.name} {trace} c{connections}: no request completed")
        elapsed = float(result["seconds"])
        return FrameRun(
            server=server.name,
            trace=trace,
            connections=connections,
            round=round_,
            requests=completed,
            seconds=elapsed,
            rate=completed / elapsed,
            **asdict(latencies(result)),
            **asdict(usage),
            bounded=not result["finished"],
            listed=length,
            failures=failures,
        )


# --------------------------------------------------------------------------- reporting


def summarise(runs: Sequence[FrameRun]) -> dict[str, Any]:
    medians: dict[str, Any] = {}
    for server, trace in (("slidebank", "frames"), ("orthanc", "frames"), ("slidebank", "floor")):
        for c in CONCURRENCIES:
            chosen = [
                r
                for r in runs
                if r.server.startswith(server) and r.trace == trace and r.connections == c
            ]
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
                "requests": [r.requests for r in chosen],
                "failures": sum(r.failures for r in chosen),
                "rates": [round(r.rate, 3) for r in chosen],
            }
    for c in CONCURRENCIES:
        ratios = []
        for ours in (r for r in runs if r.server.startswith("slidebank") and r.trace == "frames"):
            if ours.connections != c:
                continue
            theirs = [
                r
                for r in runs
                if r.server.startswith("orthanc") and r.connections == c and r.round == ours.round
            ]
            if theirs:
                ratios.append(ours.rate / theirs[0].rate)
        if ratios:
            medians[f"ratio/c{c}"] = {"median": median(ratios), "rounds": ratios}
    return medians


def markdown(record: dict[str, Any]) -> str:
    m = record["medians"]
    slide = record["slide"]

    def verdict(ok: bool) -> str:
        return "yes" if ok else "**no**"

    def rates(row: dict[str, Any]) -> str:
        return ", ".join(f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}" for rate in row["rates"])

    def figure(rate: float) -> str:
        return f"{rate:,.2f}" if rate < 10 else f"{rate:,.0f}"

    lines = [
        f"WADO-RS frames of one {slide['width']:,} x {slide['height']:,} px slide stored as DICOM "
        f"WSI ({slide['stored_bytes'] / 1e9:.2f} GB in {len(slide['levels'])} levels, "
        f"{slide['tile']} px JPEG frames), {record['profile']['rounds']} round(s), medians; "
        f"slidebank: {WORKERS} uvicorn workers; Orthanc {record.get('orthanc', {}).get('version')}"
        f" (DICOMweb plugin, {ORTHANC_HTTP_THREADS} HTTP threads); wrk, 1 thread; "
        f"{record['machine']['nproc']} CPUs.",
        "",
        "| measure | frames/s (or req/s) | p50 ms | p99 ms | rounds (per s) | requests "
        "| failures | goal | met |",
        "|---|---:|---:|---:|---|---|---:|---|---|",
    ]
    names = {"slidebank": "slidebank serve", "orthanc": "Orthanc + DICOMweb plugin"}
    for c in CONCURRENCIES:
        for server in SERVERS:
            row = m.get(f"{server}/frames/c{c}")
            if row is None:
                continue
            done = ", ".join(f"{n:,}" for n in row["requests"])
            lines.append(
                f"| {names[server]}, frames, c{c} | {figure(row['rate'])} | "
                f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {rates(row)} | {done} | "
                f"{row['failures']} | | |"
            )
        ratio = m.get(f"ratio/c{c}")
        if ratio:
            goal, met = "", ""
            if c == GOAL_RATIO_AT:
                goal = f"≥ {GOAL_RATIO:.0f} ×"
                met = verdict(ratio["median"] >= GOAL_RATIO)
            spread = ", ".join(f"{v:,.0f}" for v in ratio["rounds"])
            lines.append(
                f"| **ratio** slidebank / Orthanc, c{c} | **{ratio['median']:,.0f} ×** | | | "
                f"{spread} | | | {goal} | {met} |"
            )
    for c in CONCURRENCIES:
        floor = m.get(f"slidebank/floor/c{c}")
        if floor:
            frames = m.get(f"slidebank/frames/c{c}")
            share = f" (frames: {frames['rate'] / floor['rate']:.0%})" if frames else ""
            lines.append(
                f"| HTTP floor: slidebank `/healthz`, c{c}{share} | {floor['rate']:,.0f} | "
                f"{floor['p50_ms']:.2f} | {floor['p99_ms']:.2f} | {rates(floor)} | | "
                f"{floor['failures']} | | |"
            )
    lines += [
        "",
        "Frame list: "
        + ", ".join(
            f"level {row['level']} (1/{row['downsample']:g}, {row['instance_mb']:,.0f} MB "
            f"instance) {row['share']:.0%}"
            for row in record["trace"]["mix"]
        )
        + ". Orthanc's runs stop after "
        f"{record['profile']['orthanc_seconds']} s (a prefix of the same list).",
    ]
    checks = record.get("check")
    if checks:
        lines += [
            "",
            "One request at a time (median ms per frame, before the timed runs):",
            "",
            "| level | " + " | ".join(n for n in SERVERS if n in checks[0]) + " |",
            "|---:|" + "---:|" * sum(1 for n in SERVERS if n in checks[0]),
        ]
        for row in checks:
            values = " | ".join(f"{row[n]['median_ms']:,.1f}" for n in SERVERS if n in row)
            lines.append(f"| {row['level']} | {values} |")
    others = record["interference"]
    lines += [
        "",
        f"Other users of the machine took a median {others['median_cores']:.2f} cores "
        f"(max {others['max_cores']:.2f}) during the runs.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def check_tools(skip_orthanc: bool) -> None:
    missing = [] if shutil.which("wrk") else ["wrk"]
    if not skip_orthanc:
        if not Path(ORTHANC).exists():
            missing.append("orthanc")
        missing += [
            f"orthanc plugin {name}"
            for name in ORTHANC_PLUGIN_FILES
            if not (ORTHANC_PLUGINS / name).exists()
        ]
    if missing:
        raise SystemExit(
            f"error: not installed: {', '.join(missing)} (`make benchmark-dicomweb` installs "
            "wrk, orthanc, orthanc-dicomweb and orthanc-wsi with apt-get)"
        )


def orthanc_version(server: OrthancServer) -> str:
    answer = get(server.port, "/system", "application/json")
    return str(json.loads(answer.body).get("Version"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small fast smoke run")
    parser.add_argument("--rounds", type=int, default=None, help="rounds [default: 3; quick 1]")
    parser.add_argument(
        "--frames", type=int, default=None, help="requests in the frame list [default: 10000]"
    )
    parser.add_argument(
        "--orthanc-seconds",
        type=int,
        default=None,
        help="bound of one Orthanc run in seconds [default: 60; quick 20]",
    )
    parser.add_argument(
        "--skip-orthanc", action="store_true", help="measure slidebank alone (no ratios)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results [default: benchmarks/results/dicomweb-latest.json; "
        "with --skip-orthanc: dicomweb-slidebank-only.json]",
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    rounds = args.rounds if args.rounds is not None else profile.rounds
    count = args.frames if args.frames is not None else profile.frames
    bound = args.orthanc_seconds if args.orthanc_seconds is not None else profile.orthanc_seconds
    if rounds < 1 or count < max(CONCURRENCIES) or bound < 5:
        parser.error("--rounds >= 1, --frames >= 32 and --orthanc-seconds >= 5, please")
    target = args.json or RESULTS / (
        "dicomweb-slidebank-only.json" if args.skip_orthanc else "dicomweb-latest.json"
    )
    check_tools(args.skip_orthanc)
    signal.signal(signal.SIGTERM, _terminate)
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    width, height = profile.width, profile.height
    slide_path = DATA / f"dicomweb-{width}x{height}.svs"
    tissue, _ = load_tissue(None)
    if not slide_path.exists():
        needed = 3 * estimate_bytes(tissue, width, height) + 2 * 10**9
        if shutil.disk_usage(DATA.parent).free < needed:
            raise SystemExit(f"error: generating the slide needs {needed / 1e9:.1f} GB free")
    made = make_slide(slide_path, width, height, reuse=True)
    log(
        f"slide: {slide_path.relative_to(PROJECT_ROOT)} {width}x{height} px, "
        f"{made.size_bytes:,} bytes ({'reused' if made.reused else f'{made.seconds:.0f} s'})"
    )
    slide_id = ingest(slide_path)
    run_cli("dataset", "policy", DATASET, "open")  # readable anonymously by both clients
    instances = stored_instances(slide_id)
    levels = pyramid(instances)
    stored_bytes = sum(i.size_bytes for i in instances)
    log(
        f"ingested as {slide_id}: {len(instances)} DICOM instances, {stored_bytes:,} bytes; "
        f"levels {[f'{i.width}x{i.height} ({i.frames} frames)' for i in levels]}"
    )
    frames = frame_list(levels, count, SEED)
    mix = mix_of(frames, levels)
    tile = int(pydicom.dcmread(levels[0].path, stop_before_pixels=True).Columns)

    record: dict[str, Any] = {
        "benchmark": "dicomweb",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "goals": {"ratio_at_c8_min": GOAL_RATIO},
        "machine": machine_facts(),
        "profile": asdict(profile) | {"rounds": rounds, "frames": count, "orthanc_seconds": bound},
        "slide": {
            "id": slide_id,
            "source": str(slide_path.relative_to(PROJECT_ROOT)),
            "width": width,
            "height": height,
            "tile": tile,
            "stored_bytes": stored_bytes,
            "transfer_syntax": levels[0].transfer_syntax,
            "levels": [
                {
                    "file": str(i.path.relative_to(PROJECT_ROOT)),
                    "size": [i.width, i.height],
                    "frames": i.frames,
                    "bytes": i.size_bytes,
                }
                for i in levels
            ],
            "other_instances": [i.kind for i in instances if i.kind != "VOLUME"],
        },
        "trace": {
            "seed": SEED,
            "requests": count,
            "level_mix": list(LEVEL_MIX),
            "mix": mix,
            "accept": ACCEPT,
            "replay": "each slidebank run replays the whole list once, in order, over N "
            "keep-alive connections (wrk, 1 thread); Orthanc runs replay it for at most "
            f"{bound} s; rate = requests completed / (last response - first request)",
        },
    }
    for row in mix:
        log(f"  level {row['level']}: {row['requests']:6d} requests ({row['share']:.0%})")

    runs: list[FrameRun] = []
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slidebank-dw-")))
        replayer = FrameReplayer(scratch)
        slidebank = stack.enter_context(running(slidebank_server(LOGS / "dicomweb-slidebank.log")))
        servers: dict[str, Server] = {"slidebank": slidebank}
        orthanc: OrthancServer | None = None
        prefixes = {"slidebank": "/dicomweb"}
        for level in levels:
            warm(level.path)
        if not args.skip_orthanc:
            available = psutil.virtual_memory().available / 1e9
            if available < ORTHANC_NEEDS_GB:
                raise SystemExit(
                    f"error: {available:.1f} GB of memory available; Orthanc's runs need about "
                    f"{ORTHANC_NEEDS_GB:.0f} GB (each level-0 frame request holds the whole "
                    "instance, parsed)"
                )
            orthanc = OrthancServer(
                "orthanc",
                [],
                {},
                LOGS / "dicomweb-orthanc.log",
                folder=scratch / "orthanc",
            )
            stack.enter_context(running(orthanc))
            upload_started = time.perf_counter()
            orthanc.upload(instances)
            record["orthanc"] = {
                "version": orthanc_version(orthanc),
                "config": orthanc.config | {"DicomPort": "(a free port; server disabled)"},
                "upload_s": time.perf_counter() - upload_started,
            }
            log(
                f"Orthanc {record['orthanc']['version']} at {orthanc.url}: uploaded "
                f"{len(instances)} instances in {record['orthanc']['upload_s']:.0f} s"
            )
            servers["orthanc"] = orthanc
            prefixes["orthanc"] = "/dicom-web"
        log(f"slidebank at {slidebank.url}")

        for name in servers:
            replayer.add(
                f"frames-{name}", [prefixes[name] + levels[lv].frame_path(n) for lv, n in frames]
            )
        warmup = frame_list(levels, min(2000, count), SEED + 2)
        replayer.add("warmup", ["/dicomweb" + levels[lv].frame_path(n) for lv, n in warmup])
        replayer.add("floor", ["/healthz"] * profile.floor)
        replayer.add("floor-warmup", ["/healthz"] * max(1000, profile.floor // 10))
        replayer.run(slidebank, "warmup", 8, 0)
        replayer.run(slidebank, "floor-warmup", 8, 0)
        if orthanc is not None:
            for level in levels:  # into its storage cache
                get(orthanc.port, "/dicom-web" + level.frame_path(1))
        record["check"] = check_frames(
            {name: (server.port, prefixes[name]) for name, server in servers.items()},
            levels,
            SEED + 1,
        )

        for round_ in range(1, rounds + 1):
            order = [n for n in (SERVERS if round_ % 2 else SERVERS[::-1]) if n in servers]
            for c in CONCURRENCIES:
                for name in order:
                    seconds = bound if name == "orthanc" else None
                    run = replayer.run(servers[name], f"frames-{name}", c, round_, seconds)
                    run.trace = "frames"
                    runs.append(run)
                    log(
                        f"round {round_} {name:9s} frames c{c:<2d} {run.rate:9,.1f}/s "
                        f"p50 {run.p50_ms:8.1f} p99 {run.p99_ms:8.1f} ms  {run.requests:,} "
                        f"of {run.listed:,} in {run.seconds:.1f} s, failures {run.failures}; "
                        f"CPU: server {run.server_cpu_s:5.1f} s, wrk {run.wrk_cpu_s:4.1f} s"
                    )
                    if orthanc is not None and orthanc.stopped_for_memory:
                        raise SystemExit("error: Orthanc stopped: the machine ran low on memory")
            for c in CONCURRENCIES:
                run = replayer.run(slidebank, "floor", c, round_)
                runs.append(run)
                log(
                    f"round {round_} slidebank floor  c{c:<2d} {run.rate:9,.0f}/s "
                    f"p50 {run.p50_ms:8.2f} p99 {run.p99_ms:8.2f} ms"
                )
        if orthanc is not None:
            record["orthanc"]["peak_rss_mb"] = orthanc.peak_rss_mb()

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
    write_json(record, target)
    print(f"\nresults written to {target}")
    failed = sum(r.failures for r in runs)
    if failed:
        print(f"\n{failed} requests failed (non-2xx or socket errors): see the table")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
