"""The IIIF consortium's own validator (the iiif-validator package) against a running server:
every test of compliance level 2 must pass on the validator's test image."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from tests.served import ServedRepository

RESULT = re.compile(r"^\[\d+\] test (\w+) (PASS|FAIL)", re.MULTILINE)
# The level-2 tests of Image API 3.0 in iiif-validator 1.x; the run must include each of them.
LEVEL_2 = {
    "baseurl_redirect", "cors", "format_error_random", "format_jpg", "format_png",
    "id_basic", "id_error_escapedslash", "id_error_random", "id_error_unescaped", "id_escaped",
    "id_squares", "info_json", "jsonld", "quality_bitonal", "quality_color",
    "quality_error_random", "quality_grey", "region_error_random", "region_percent",
    "region_pixels", "region_square", "rot_error_random", "rot_full_basic", "rot_region_basic",
    "size_bwh", "size_ch", "size_error_random", "size_nofull", "size_noup", "size_percent",
    "size_region", "size_wc", "size_wh",
}  # fmt: skip


def test_every_level_2_test_of_the_validator_passes(
    live_server: str, served: ServedRepository
) -> None:
    validator = Path(sys.executable).with_name("iiif-validate.py")
    run = subprocess.run(
        [
            sys.executable,
            str(validator),
            "-s",
            urlsplit(live_server).netloc,
            "-p",
            "iiif/3",
            "-i",
            served.grid_id,
            "--version=3.0",
            "--level=2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    results = dict(RESULT.findall(run.stdout))
    failed = {name: status for name, status in results.items() if status != "PASS"}
    assert not failed, run.stdout[-4000:]
    assert set(results) >= LEVEL_2, f"tests not run: {sorted(LEVEL_2 - set(results))}"
    assert "0 failures" in run.stdout
