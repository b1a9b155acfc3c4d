"""kill -9 at random moments of a real ingest, then the same command again: the repository
is consistent after every kill and complete after the re-run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slidebank.config import Settings
from slidebank.services import checking
from slidebank.services.repository import open_repository
from slidebank.services.samples import make_sample_slide
from slidebank.storage.blobs import YOUNG_SECONDS

# Spreads its kills over the time an uninterrupted run takes: not beside other tests (make test).
pytestmark = pytest.mark.alone

SLIDEBANK = Path(sys.executable).with_name("slidebank")
KILLS = 8


@pytest.fixture(scope="module")
def medium_svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Large enough (about 60 MB) that kills land in the middle of copying."""
    target = tmp_path_factory.mktemp("kill") / "medium.svs"
    return make_sample_slide(target, 16000, 12000)


def _ingest_command(paths: list[Path]) -> list[str]:
    return [str(SLIDEBANK), "ingest", *map(str, paths), "--json"]


@pytest.mark.slow
def test_kill_at_random_moments_then_rerun(
    tmp_path: Path, database_url: str, slides_dir: Path, medium_svs: Path
) -> None:
    paths = [
        medium_svs,
        slides_dir / "aperio",
        slides_dir / "hamamatsu",
        slides_dir / "dicom",
        slides_dir / "synthetic" / "boxes-dicom",
    ]
    home = tmp_path / "home"
    env = {**os.environ, "SLIDEBANK_HOME": str(home), "SLIDEBANK_DATABASE_URL": database_url}
    seed = int(os.environ.get("SLIDEBANK_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    settings = Settings(home=home, database_url=database_url)

    # How long a whole uninterrupted run takes here, to spread the kills over it.
    started = time.monotonic()
    probe_env = {**env, "SLIDEBANK_HOME": str(tmp_path / "probe")}
    probe_env.pop("SLIDEBANK_DATABASE_URL")
    probe = subprocess.run(_ingest_command(paths), env=probe_env, capture_output=True, timeout=300)
    assert probe.returncode == 0, (probe.stdout, probe.stderr)
    full_run = max(time.monotonic() - started, 1.0)

    for attempt in range(KILLS):
        process = subprocess.Popen(
            _ingest_command(paths), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(0.05, full_run))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        repository = open_repository(settings)
        report = checking.check_repository(repository, rehash=True)
        repository.close()
        context = f"seed {seed}, attempt {attempt}"
        # No catalogue row without its complete, intact content.
        assert report.missing == [], context
        assert report.corrupt == [], context

    final_started = time.time()
    final = subprocess.run(
        _ingest_command(paths), env=env, capture_output=True, text=True, timeout=600
    )
    assert final.returncode == 0, (seed, final.stdout, final.stderr)
    records = [json.loads(line) for line in final.stdout.splitlines()]
    assert {r["status"] for r in records} <= {"ingested", "duplicate"}
    assert len(records) == 6  # medium, 2 aperio, ndpi, WG26, boxes-dicom

    repository = open_repository(settings)
    report = checking.check_repository(repository, rehash=True)
    leftovers = repository.store.stale_staging()
    repository.close()
    assert report.images == 6
    assert (report.missing, report.corrupt, report.orphans) == ([], [], []), (seed, report)
    # A killed run's staging folder is swept by the next ingest once it is YOUNG_SECONDS
    # old; one that was younger when the final run swept may be left, and only such.
    for folder in leftovers:
        assert folder.stat().st_mtime > final_started - YOUNG_SECONDS, (seed, folder)
