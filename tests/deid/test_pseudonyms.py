from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from slidebank.deid.pseudonyms import Pseudonymizer, load_or_create_key


def test_same_source_same_pseudonym_and_other_key_other_pseudonym() -> None:
    ours, theirs = Pseudonymizer(b"a" * 32), Pseudonymizer(b"b" * 32)
    assert ours.pseudonym("case", "H-2024-118") == ours.pseudonym("case", "H-2024-118")
    assert ours.pseudonym("case", "H-2024-118") != ours.pseudonym("case", "H-2024-119")
    assert ours.pseudonym("case", "H-2024-118") != theirs.pseudonym("case", "H-2024-118")
    # the kind is part of the input: a slide and a case with the same label differ
    assert ours.pseudonym("case", "A1")[2:] != ours.pseudonym("slide", "A1")[2:]


def test_pseudonyms_fit_dicom_short_strings_and_hide_the_source() -> None:
    names = Pseudonymizer(b"k" * 32)
    value = names.pseudonym("case", "Jane Doe 1970-01-01")
    assert len(value) <= 16 and value.startswith("C-")
    assert "Jane" not in value and "1970" not in value


def test_uids_are_valid_and_stable() -> None:
    names = Pseudonymizer(b"k" * 32)
    uid = names.uid("1.2.3.4")
    assert uid == names.uid("1.2.3.4") != names.uid("1.2.3.5")
    assert uid.startswith("2.25.") and len(uid) <= 64
    assert all(
        part.isdigit() and (part == "0" or not part.startswith("0")) for part in uid.split(".")
    )


def test_date_shift_is_per_case_and_between_one_and_ten_years() -> None:
    names = Pseudonymizer(b"k" * 32)
    shifts = {names.date_shift(f"case {i}").days for i in range(50)}
    assert len(shifts) > 40
    assert all(365 <= days <= 3650 for days in shifts)
    assert names.date_shift("case 1") == names.date_shift("case 1")


def test_key_file_is_created_once_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pseudonym.key"
    key = load_or_create_key(path)
    assert load_or_create_key(path) == key and len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# Run in a fresh interpreter: forking the test process (with its threads) is not safe.
RACING_CREATORS = """
import os, sys
from pathlib import Path
from slidebank.deid.pseudonyms import load_or_create_key

folder, rounds, creators = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for number in range(rounds):
    path = folder / str(number) / "keys" / "pseudonym.key"
    start_r, start_w = os.pipe()
    children = []
    for creator in range(creators):
        result = folder / f"{number}.{creator}"
        pid = os.fork()
        if pid == 0:
            os.read(start_r, 1)  # all wait, then all go at once
            try:
                result.write_text(load_or_create_key(path).hex())
            except Exception as exc:
                result.write_text(f"error: {exc}")
            os._exit(0)
        children.append(pid)
    os.write(start_w, b"x" * creators)
    for pid in children:
        os.waitpid(pid, 0)
    os.close(start_r)
    os.close(start_w)
"""


def test_processes_creating_the_key_at_once_all_get_the_one_written(tmp_path: Path) -> None:
    """A steward's first ingests, started together, must agree on the key (one reading a key
    file still being written used to fail: about 4% of such rounds of six)."""
    rounds, creators = 100, 6
    subprocess.run(
        [sys.executable, "-c", RACING_CREATORS, str(tmp_path), str(rounds), str(creators)],
        check=True,
        timeout=120,
    )
    for number in range(rounds):
        keys = {(tmp_path / f"{number}.{c}").read_text() for c in range(creators)}
        written = (tmp_path / str(number) / "keys" / "pseudonym.key").read_bytes().hex()
        assert keys == {written}, (number, keys)
        assert [p.name for p in (tmp_path / str(number) / "keys").iterdir()] == ["pseudonym.key"]


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Pseudonymizer(b"short")
