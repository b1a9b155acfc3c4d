"""Two ingests of the same slides into one repository at the same time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from slidebank.config import Settings
from slidebank.services import checking
from slidebank.services.repository import open_repository

SLIDEBANK = Path(sys.executable).with_name("slidebank")


def test_concurrent_ingests_store_each_slide_once(
    tmp_path: Path, database_url: str, slides_dir: Path, generated_svs: Path
) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "SLIDEBANK_HOME": str(home), "SLIDEBANK_DATABASE_URL": database_url}
    paths = [str(generated_svs), str(slides_dir / "aperio"), str(slides_dir / "dicom")]
    runs = [
        subprocess.Popen(
            [str(SLIDEBANK), "ingest", *paths, "--dataset", "shared", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (_, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr
    statuses: dict[str, list[str]] = {}
    ids: dict[str, set[str]] = {}
    for stdout, _ in outputs:
        for line in stdout.splitlines():
            record = json.loads(line)
            statuses.setdefault(record["source"], []).append(record["status"])
            ids.setdefault(record["source"], set()).add(record["id"])
    assert len(statuses) == 4
    for source, seen in statuses.items():
        assert sorted(seen) == ["duplicate", "ingested"], source
        assert len(ids[source]) == 1, source  # the duplicate names the ingested slide
    repository = open_repository(Settings(home=home, database_url=database_url))
    report = checking.check_repository(repository, rehash=True)
    repository.close()
    assert report.images == 4
    assert report.consistent
