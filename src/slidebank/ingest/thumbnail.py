"""Thumbnail step: a JPEG overview written next to the staged slide."""

from __future__ import annotations

import os
from pathlib import Path

from slidebank.slides.reader import SlideReader


def write_thumbnail(reader: SlideReader, target: Path, max_size: int) -> None:
    image = reader.thumbnail(max_size)
    with target.open("wb") as handle:
        image.save(handle, format="JPEG", quality=85)
        handle.flush()
        os.fsync(handle.fileno())
