from __future__ import annotations

from pathlib import Path

import pytest

from slidebank.errors import InvalidInput
from slidebank.slides.sniff import kind_of, read_header


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        (b"", "empty"),
        (b"II*\x00rest", "tiff"),
        (b"MM\x00+rest", "bigtiff"),
        (b"\0" * 128 + b"DICM" + b"\0" * 8, "dicom"),
        (b"[GENERAL]\nSLIDE_VERSION=1\n", "ini"),
        (b"just words\n", "text"),
        (b"\x00\x01\x02\x03\xfe\xff", "unknown binary"),
    ],
)
def test_kind_of(header: bytes, kind: str) -> None:
    assert kind_of(header) == kind


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"missing\.svs: cannot read file"):
        read_header(tmp_path / "missing.svs")
