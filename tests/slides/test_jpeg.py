from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from slidebank.slides.jpeg import ADOBE_RGB, complete_tile


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_complete_tile_keeps_a_full_stream_decodable() -> None:
    data = complete_tile(_jpeg((200, 30, 40)), tables=None, rgb_components=False)
    pixel = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[8, 8]
    assert np.allclose(pixel, (200, 30, 40), atol=6)


def test_rgb_marker_is_added_only_where_colour_space_is_unstated() -> None:
    jfif = _jpeg((0, 0, 0))
    assert ADOBE_RGB not in complete_tile(jfif, None, rgb_components=True)
    bare = b"\xff\xd8\xff\xdb" + b"\0" * 10
    assert complete_tile(bare, None, rgb_components=True).startswith(b"\xff\xd8" + ADOBE_RGB)


def test_tables_are_spliced_between_start_and_frame() -> None:
    tables = b"\xff\xd8\xff\xdbTABLES\xff\xd9"
    tile = b"\xff\xd8\xff\xc0FRAME\xff\xd9"
    assert complete_tile(tile, tables, False) == b"\xff\xd8\xff\xdbTABLES\xff\xc0FRAME\xff\xd9"


def test_garbage_is_refused() -> None:
    with pytest.raises(ValueError, match="not a JPEG"):
        complete_tile(b"\0\0\0", None, False)
    with pytest.raises(ValueError, match="JPEGTables"):
        complete_tile(b"\xff\xd8x", b"nonsense", False)
