"""Making a TIFF's stored JPEG tile a stream that any decoder reads correctly.

Written by hand because no maintained library exposes it: tifffile and libtiff decode such
tiles but do not hand back a standalone stream, and serving a stored tile without decoding
needs exactly that. Two things can be missing from a stored tile:

* the quantisation and Huffman tables, which TIFF keeps once per level in ``JPEGTables``;
* the colour space: Aperio writes RGB components (TIFF Photometric RGB) in a JPEG with no
  JFIF or Adobe marker, which decoders take for YCbCr. An Adobe APP14 segment with
  transform 0 says "RGB, no transform".
"""

from __future__ import annotations

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
# APP14 "Adobe", version 100, flags 0/0, transform 0 (components are RGB, not YCbCr).
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def complete_tile(tile: bytes, tables: bytes | None, rgb_components: bool) -> bytes:
    """A standalone JPEG from a stored tile, its level's tables and its colour space."""
    if not tile.startswith(SOI):
        raise ValueError("stored tile is not a JPEG stream (no start-of-image marker)")
    # A view, not a slice: the tile is copied once, into the result (tiles are served at
    # thousands a second, and every fresh buffer of their size shows in the rate).
    body = memoryview(tile)[2:]
    prefix = SOI
    if rgb_components and not _has_colour_marker(tile):
        prefix += ADOBE_RGB
    if tables:
        if not (tables.startswith(SOI) and tables.endswith(EOI)):
            raise ValueError("JPEGTables is not a tables-only JPEG stream")
        prefix += tables[2:-2]
    return b"".join((prefix, body))


def _has_colour_marker(tile: bytes) -> bool:
    """True if the stream already says its colour space (JFIF APP0 or Adobe APP14)."""
    head = tile[:64]
    return b"JFIF\x00" in head or b"Adobe" in head
