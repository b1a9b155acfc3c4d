"""`deid verify`: every stored byte against the sealed identifying values of the source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from slidebank.access.policy import COMMAND_LINE
from slidebank.services import browsing, deidentification
from slidebank.services.ingesting import ingest_paths
from slidebank.services.repository import Repository
from tests.test_cli import run


def _content(repository: Repository, public_id: str) -> Path:
    record = browsing.show_slide(repository, COMMAND_LINE, public_id)["image"]
    return repository.store.content_dir(record["storage_key"])


def test_clean_slides_pass_and_a_planted_value_or_label_is_found(
    repository: Repository, cmu_small: Path, wg26_files: tuple[Path, ...]
) -> None:
    report = ingest_paths(repository, [cmu_small, wg26_files[0].parent])
    svs_id, wg26_id = (o.id or "" for o in report.outcomes)
    checks = deidentification.verify_slides(repository, COMMAND_LINE, None)
    assert [c.passed for c in checks] == [True, True]
    assert all(c.verification and c.verification.bytes_scanned > 0 for c in checks)

    # A scanner id planted in UTF-16 at the end of a stored file, as a bad tool might.
    stored = sorted(_content(repository, svs_id).iterdir())[0]
    with stored.open("ab") as out:
        out.write("CPAPERIOCS".encode("utf-16-be"))
    # The label instance of the source, copied back into the stored WG26 slide.
    label = next(p for p in wg26_files if p.name == "2")
    shutil.copyfile(label, _content(repository, wg26_id) / "planted.dcm")

    by_id = {c.id: c for c in deidentification.verify_slides(repository, COMMAND_LINE, None)}
    svs = by_id[svs_id].verification
    assert not by_id[svs_id].passed and svs is not None
    assert [(f.field, f.file, f.encoding) for f in svs.findings] == [
        ("aperio.ScanScope ID", stored.name, "utf-16-be")
    ]
    wg26 = by_id[wg26_id].verification
    assert wg26 is not None
    assert ("ImageType LABEL instance", "planted.dcm") in {(f.field, f.file) for f in wg26.findings}


def test_cli_exits_1_on_a_finding_and_names_it(tmp_path: Path, cmu_small: Path) -> None:
    home = tmp_path / "home"
    ingested = run("ingest", cmu_small, "--json", home=home)
    public_id = json.loads(ingested.stdout)["id"]
    clean = run("deid", "verify", "--all", "--json", home=home)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)[0]["passed"] is True

    content = next((home / "blobs" / "objects").rglob("content"))
    with sorted(content.iterdir())[0].open("ab") as out:
        out.write(b"...User = b414003d-95c6-48b0-9369-8010ed517ba7...")
    found = run("deid", "verify", public_id, home=home)
    assert found.returncode == 1
    assert "aperio.User in" in found.stdout and "FAILED" in found.stdout

    report = run("deid", "report", public_id, home=home)
    data = json.loads(report.stdout)
    assert set(data["images_left_out"]) == {"label", "overview"}
    assert "b414003d" not in report.stdout  # the report names fields, never their values


def test_a_slide_stored_as_it_came_does_not_pass(tmp_path: Path, cmu_small: Path) -> None:
    home = tmp_path / "home"
    run("ingest", cmu_small, home=home, extra_env={"SLIDEBANK_STORED_FORM": "original"})
    result = run("deid", "verify", "--all", "--json", home=home)
    assert result.returncode == 1
    assert "no de-identification report" in json.loads(result.stdout)[0]["problem"]
