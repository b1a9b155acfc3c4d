"""The command line as users run it: real processes, real exit codes, real output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

SLIDEBANK = Path(sys.executable).with_name("slidebank")
COMMANDS = [
    "ingest",
    "list",
    "show",
    "thumbnail",
    "datasets",
    "check",
    "sample-slide",
    "demo",
    "deid",
    "deid verify",
    "deid report",
    "dicomweb",
    "dicomweb index",
    "pyramid",
]


def run(
    *args: str | Path,
    home: Path,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLIDEBANK_HOME": str(home), "COLUMNS": "200", **(extra_env or {})}
    env.pop("SLIDEBANK_DATABASE_URL", None)
    if database_url:
        env["SLIDEBANK_DATABASE_URL"] = database_url
    return subprocess.run(
        [str(SLIDEBANK), *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(tmp_path: Path, command: str | None) -> None:
    result = run(*(command.split() if command else []), "--help", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    if command is None:
        for name in COMMANDS:
            assert name.split()[0] in result.stdout


def test_ingest_list_show_round_trip(
    tmp_path: Path, database_url: str, cmu_small: Path, slides_dir: Path
) -> None:
    home = tmp_path / "home"
    result = run(
        "ingest",
        cmu_small,
        slides_dir / "synthetic" / "boxes-dicom",
        "--json",
        home=home,
        database_url=database_url,
    )
    assert result.returncode == 0, result.stderr
    # Nothing but the outcomes: no library's notices (pydicom's deprecations) on stderr.
    assert result.stderr == ""
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in records] == ["ingested"] * 2
    assert all(set(r) >= {"id", "status", "reason"} for r in records)

    again = run("ingest", cmu_small, "--json", home=home, database_url=database_url)
    assert again.returncode == 0
    assert json.loads(again.stdout)["status"] == "duplicate"
    # The table for people: the status in colour, never the markup's brackets.
    shown_again = run("ingest", cmu_small, home=home, database_url=database_url)
    assert "duplicate" in shown_again.stdout
    assert "[yellow]" not in shown_again.stdout and "[/]" not in shown_again.stdout

    listed = run("list", "--json", "--vendor", "aperio", home=home, database_url=database_url)
    rows = json.loads(listed.stdout)
    assert [row["id"] for row in rows] == [records[0]["id"]]

    shown = run("show", records[0]["id"], "--json", home=home, database_url=database_url)
    record = json.loads(shown.stdout)
    assert record["image"]["width"] == 2220
    assert record["image"]["properties"]["slidebank.source-format"] == "aperio"
    assert not any(key.startswith("aperio.") for key in record["image"]["properties"])

    picture = tmp_path / "thumb.jpg"
    saved = run("thumbnail", records[0]["id"], "-o", picture, home=home, database_url=database_url)
    assert saved.returncode == 0, saved.stderr
    with Image.open(picture) as image:
        assert image.format == "JPEG"
        assert max(image.size) == 512
        assert image.size[0] < image.size[1]  # CMU-1-Small-Region is portrait

    human = run("show", records[0]["id"], home=home, database_url=database_url)
    assert "2220x2967 px" in human.stdout

    table = run("list", home=home, database_url=database_url)
    assert records[0]["id"] in table.stdout

    datasets = json.loads(run("datasets", "--json", home=home, database_url=database_url).stdout)
    assert [(d["short_name"], d["images"]) for d in datasets] == [("default", 2)]

    checked = run("check", "--rehash", "--json", home=home, database_url=database_url)
    assert checked.returncode == 0
    assert json.loads(checked.stdout)["consistent"] is True


def test_failed_ingest_exits_non_zero_and_says_why(
    tmp_path: Path, database_url: str, testdata: Path
) -> None:
    result = run(
        "ingest",
        testdata / "bad" / "nonconformant-wsi.dcm",
        home=tmp_path / "h",
        database_url=database_url,
    )
    assert result.returncode == 1
    assert "failed" in result.stdout
    assert "nonconformant-wsi.dcm" in result.stdout
    assert "Level files not found" in result.stdout


def test_unknown_slide_is_a_clear_error(tmp_path: Path) -> None:
    result = run("show", "sb-doesnotexist", home=tmp_path)
    assert result.returncode == 1
    assert "no slide with id 'sb-doesnotexist'" in result.stderr


def test_errors_print_whole_whatever_the_names_in_them(tmp_path: Path) -> None:
    """Names from users' files and arguments are text, never markup, and an error sent to a
    file or pipe is one line however narrow the terminal it came from."""
    named = tmp_path / "cells [bold] [@x] [link=y].geojson"
    named.write_text('{"type": "FeatureCollection", "features": []}')
    slide = "sb-[/x]-" + "n" * 90
    result = run(
        "annotations", "import", slide, named, home=tmp_path / "home", extra_env={"COLUMNS": "60"}
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert f"error: no slide with id '{slide}'" in result.stderr


def test_bad_option_values_are_refused(tmp_path: Path, cmu_small: Path) -> None:
    assert run("ingest", cmu_small, "--validation", "sloppy", home=tmp_path).returncode == 2
    assert run("list", "--limit", "0", home=tmp_path).returncode == 2


def test_sidecar_errors_name_the_field(tmp_path: Path, cmu_small: Path) -> None:
    sidecar = tmp_path / "meta.json"
    sidecar.write_text(json.dumps({"slides": [{"file": "x.svs", "case": {"species": "mouse"}}]}))
    result = run("ingest", cmu_small, "--metadata", sidecar, home=tmp_path / "h")
    assert result.returncode == 1
    assert "meta.json" in result.stderr
    assert "slides.0.case.id" in result.stderr


def test_sample_slide_and_demo_need_no_shared_data(tmp_path: Path, database_url: str) -> None:
    target = tmp_path / "sample.svs"
    made = run("sample-slide", target, "--width", "3000", "--height", "2000", home=tmp_path)
    assert made.returncode == 0, made.stderr
    assert target.stat().st_size > 100_000

    demo = run("demo", home=tmp_path / "demo-home", database_url=database_url)
    assert demo.returncode == 0, demo.stderr
    assert "1 ingested" in demo.stdout
    assert "colon" in demo.stdout
    # Sample annotations: nuclei found on the slide's pixels, imported as users import.
    assert "nuclei found on the demo slide" in demo.stdout
    slide = json.loads(
        run("list", "--json", home=tmp_path / "demo-home", database_url=database_url).stdout
    )[0]["id"]
    listed = run(
        "annotations",
        "list",
        slide,
        "--json",
        home=tmp_path / "demo-home",
        database_url=database_url,
    )
    (nuclei,) = json.loads(listed.stdout)
    assert nuclei["kind"] == "automatic" and nuclei["annotations"] > 1000
    again = run("demo", home=tmp_path / "demo-home", database_url=database_url)
    assert again.returncode == 0
    assert "1 duplicate" in again.stdout
    assert "nuclei found" not in again.stdout  # once only


def _without_file_override() -> list[str]:
    """A command prefix under which even root obeys file permissions."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def test_unreadable_file_fails_clearly_and_stores_nothing(
    tmp_path: Path, database_url: str, cmu_small: Path
) -> None:
    secret = tmp_path / "secret.svs"
    shutil.copyfile(cmu_small, secret)
    secret.chmod(0)
    home = tmp_path / "home"
    env = {
        **os.environ,
        "SLIDEBANK_HOME": str(home),
        "SLIDEBANK_DATABASE_URL": database_url,
    }
    result = subprocess.run(
        [*_without_file_override(), str(SLIDEBANK), "ingest", str(secret), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "failed"
    assert record["source"] == str(secret)
    assert "permission denied" in record["reason"]
    assert list((home / "blobs" / "objects").iterdir()) == []


def _python(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLIDEBANK_HOME": str(home)}
    env.pop("SLIDEBANK_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_a_command_s_exit_runs_exit_handlers_and_flushes_its_output(tmp_path: Path) -> None:
    # main() ends the process without the interpreter's teardown; what a script relies on
    # from a normal exit must still happen.
    marker = tmp_path / "handler-ran"
    result = _python(
        "import atexit, pathlib, sys\n"
        "from slidebank import cli\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'ran')\n"
        "sys.stdout.write('x' * 100_000)  # buffered, not yet written\n"
        "sys.argv = ['slidebank', 'datasets', '--json']\n"
        "cli.main()\n",
        tmp_path / "home",
    )
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "ran"
    assert result.stdout.startswith("x" * 100_000)
    assert json.loads(result.stdout[100_000:]) == []


def test_a_command_s_exit_waits_for_a_thread_still_working(tmp_path: Path) -> None:
    finished = tmp_path / "thread-finished"
    result = _python(
        "import pathlib, sys, threading\n"
        "from slidebank import cli\n"
        "def work():  # until the main thread is done: at its exit\n"
        "    threading.main_thread().join()\n"
        f"    pathlib.Path({str(finished)!r}).write_text('done')\n"
        "threading.Thread(target=work).start()\n"
        "sys.argv = ['slidebank', 'show', 'sb-doesnotexist']\n"
        "cli.main()\n",
        tmp_path / "home",
    )
    assert result.returncode == 1
    assert finished.read_text() == "done"


def test_an_exit_with_a_message_prints_it_and_fails(tmp_path: Path) -> None:
    result = _python(
        "from slidebank import cli\ncli._exit_without_teardown(SystemExit('gone wrong'))\n",
        tmp_path,
    )
    assert (result.returncode, result.stderr) == (1, "gone wrong\n")
