"""Where each frame of a DICOM instance file lies, found once, then read with ``os.pread``.

Encapsulated pixel data: when the Extended Offset Table with its lengths says every frame is
one item, back to back (what the ingest writes), positions come from it after checking its
first and last items and the delimiter after them; otherwise the item headers are scanned
once (one small read per fragment) and frames are one fragment each, or grouped by the Basic
or Extended Offset Table. Native pixel data: frames are fixed-size slices. Positions are kept
in two arrays of 64-bit integers: a level of 150,000 tiles held as tuples took 25 MB of a
server worker's memory, as arrays it takes 2.4 MB. ``FramePositions`` keeps the answer for a
bounded number of files (least recently used first out); content is addressed by checksum,
so it never goes stale.
"""

from __future__ import annotations

import os
import struct
import threading
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from slidebank.errors import CorruptSlide, NotFound, UnsupportedFormat

PIXEL_DATA = 0x7FE00010
ITEM = 0xE000FFFE  # (FFFE,E000) read as one little-endian 32-bit word
SEQUENCE_END = 0xE0DDFFFE
UNDEFINED = 0xFFFFFFFF
IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFAULT_CACHED = 1024
CHECKED_ITEMS = 64  # item headers read to confirm an Extended Offset Table before trusting it

# (offset, length) pieces whose bytes, in order, make one frame.
Frame = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class FrameTable:
    """Each frame's first piece (``offsets``, ``lengths``); frames of several fragments
    (rare) have all their pieces in ``split``."""

    offsets: array[int]
    lengths: array[int]
    split: Mapping[int, Frame] = field(default_factory=dict)

    @classmethod
    def of(cls, frames: Sequence[Frame]) -> FrameTable:
        return cls(
            array("q", (frame[0][0] for frame in frames)),
            array("q", (frame[0][1] for frame in frames)),
            {index: frame for index, frame in enumerate(frames) if len(frame) > 1},
        )

    def __len__(self) -> int:
        return len(self.offsets)

    def read(self, fd: int, index: int) -> bytes:
        """The bytes of frame ``index`` (0-based), read from the open file ``fd``."""
        if self.split and index in self.split:
            return read_frame(fd, self.split[index])
        length = self.lengths[index]
        data = os.pread(fd, length, self.offsets[index])
        if len(data) != length:
            raise CorruptSlide("frame truncated")
        return data


def frame_table(path: Path) -> FrameTable:
    """Find every frame of the instance file at ``path``."""
    try:
        with path.open("rb") as handle:
            header = pydicom.dcmread(handle, stop_before_pixels=True)
            start = handle.tell()
            head = handle.read(12)
            size = os.fstat(handle.fileno()).st_size
            syntax = str(header.file_meta.get("TransferSyntaxUID", ""))
            if syntax == BIG_ENDIAN:
                raise UnsupportedFormat(f"{path.name}: big endian pixel data is not served")
            tag, length, value_at = _element_header(head, start, syntax)
            if tag != PIXEL_DATA:
                raise UnsupportedFormat(f"{path.name}: has no pixel data")
            if length != UNDEFINED:
                return _native(header, value_at, length, size, path.name)
            return _encapsulated(handle, header, value_at, size, path.name)
    except FileNotFoundError as exc:
        raise NotFound(f"{path.name}: not in the store") from exc
    except (OSError, ValueError, struct.error) as exc:
        raise CorruptSlide(f"{path.name}: cannot find its frames ({exc})") from exc


def _element_header(head: bytes, start: int, syntax: str) -> tuple[int, int, int]:
    if len(head) < 8:
        raise CorruptSlide("pixel data truncated")
    group, element = struct.unpack_from("<HH", head)
    tag = (group << 16) | element
    if syntax == IMPLICIT_LITTLE_ENDIAN:
        (length,) = struct.unpack_from("<I", head, 4)
        return tag, length, start + 8
    (length,) = struct.unpack_from("<I", head, 8)  # OB/OW: 2 reserved bytes before it
    return tag, length, start + 12


def _native(header: Dataset, start: int, length: int, size: int, name: str) -> FrameTable:
    count = int(header.get("NumberOfFrames") or 1)
    bits = int(header.get("BitsAllocated") or 8)
    frame_bytes = int(header.Rows) * int(header.Columns) * int(header.SamplesPerPixel)
    frame_bytes = frame_bytes * bits // 8
    if frame_bytes * count > length or start + length > size:
        raise CorruptSlide(f"{name}: pixel data shorter than its frames")
    return FrameTable(
        array("q", range(start, start + count * frame_bytes, frame_bytes)),
        array("q", [frame_bytes]) * count,
    )


def _encapsulated(handle: object, header: Dataset, start: int, size: int, name: str) -> FrameTable:
    assert hasattr(handle, "seek") and hasattr(handle, "read")
    count = int(header.get("NumberOfFrames") or 1)
    trusted = _from_extended_table(handle, header, start, size, count)
    if trusted is not None:
        return trusted
    items: list[tuple[int, int]] = []  # (offset of the item's tag, value length)
    position = start
    while position + 8 <= size:
        handle.seek(position)
        tag, length = struct.unpack("<II", handle.read(8))
        if tag == SEQUENCE_END:
            break
        if tag != ITEM or length == UNDEFINED or position + 8 + length > size:
            raise CorruptSlide(f"{name}: damaged pixel data item at byte {position}")
        items.append((position, length))
        position += 8 + length
    if not items:
        raise CorruptSlide(f"{name}: encapsulated pixel data without offset table")
    table_at, table_length = items[0]
    fragments = items[1:]
    pieces = [(at + 8, length) for at, length in fragments]
    if len(fragments) == count:
        return FrameTable.of([(piece,) for piece in pieces])
    first = fragments[0][0] if fragments else 0
    starts: list[int] = []
    if table_length:
        handle.seek(table_at + 8)
        starts = list(struct.unpack(f"<{table_length // 4}I", handle.read(table_length)))
    elif "ExtendedOffsetTable" in header:
        raw = bytes(header.ExtendedOffsetTable)
        starts = list(struct.unpack(f"<{len(raw) // 8}Q", raw))
    elif count == 1:
        return FrameTable.of([tuple(pieces)])
    if len(starts) != count:
        raise CorruptSlide(f"{name}: {len(fragments)} fragments for {count} frames, no table")
    return _grouped(fragments, [first + offset for offset in starts], name)


def _grouped(fragments: list[tuple[int, int]], starts: list[int], name: str) -> FrameTable:
    frames: list[Frame] = []
    index = 0
    for number, begin in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else None
        while index < len(fragments) and fragments[index][0] < begin:
            index += 1
        if index == len(fragments) or fragments[index][0] != begin:
            raise CorruptSlide(f"{name}: offset table does not point at a fragment")
        group = []
        while index < len(fragments) and (end is None or fragments[index][0] < end):
            at, length = fragments[index]
            group.append((at + 8, length))
            index += 1
        frames.append(tuple(group))
    return FrameTable.of(frames)


def _from_extended_table(
    handle: object, header: Dataset, start: int, size: int, count: int
) -> FrameTable | None:
    """Frame positions from the Extended Offset Table, without a scan, when its offsets and
    lengths describe one item per frame, back to back, and the file agrees: the empty Basic
    Offset Table before the first item, the item headers of up to ``CHECKED_ITEMS`` frames
    spread over the file (the last among them), the sequence delimiter after the last.
    Otherwise None, and the items are scanned."""
    assert hasattr(handle, "seek") and hasattr(handle, "read")
    if "ExtendedOffsetTable" not in header or "ExtendedOffsetTableLengths" not in header:
        return None
    starts = np.frombuffer(bytes(header.ExtendedOffsetTable), dtype="<i8")
    stated = np.frombuffer(bytes(header.ExtendedOffsetTableLengths), dtype="<i8")
    if len(starts) != count or len(stated) != count or count == 0 or starts[0] != 0:
        return None
    # Each frame's data runs to the next frame's item. The standard's lengths are of the
    # data (pydicom writes them so); wsidicom writes the distance to the next item instead.
    between = np.diff(starts) - 8
    if not np.all((stated[:-1] == between) | (stated[:-1] == between + 8)):
        return None
    handle.seek(start)
    tag, table_length = struct.unpack("<II", handle.read(8))
    if tag != ITEM or table_length != 0:
        return None
    first = start + 8
    handle.seek(first + int(starts[-1]))
    tag, last_length = struct.unpack("<II", handle.read(8))
    end = first + int(starts[-1]) + 8 + last_length
    if tag != ITEM or end + 8 > size:
        return None
    lengths = np.append(between, last_length).astype(np.int64)
    step = max(1, count // CHECKED_ITEMS)
    for index in [*range(0, count, step), count - 1]:
        handle.seek(first + int(starts[index]))
        if struct.unpack("<II", handle.read(8)) != (ITEM, int(lengths[index])):
            return None
    handle.seek(end)
    if struct.unpack("<I", handle.read(4))[0] != SEQUENCE_END:
        return None
    offsets = (starts + (first + 8)).astype(np.int64)
    return FrameTable(array("q", offsets.tobytes()), array("q", lengths.tobytes()))


def read_frame(fd: int, frame: Frame) -> bytes:
    """The bytes of one frame, read from the open file ``fd``."""
    if len(frame) == 1:
        at, length = frame[0]
        data = os.pread(fd, length, at)
        if len(data) != length:
            raise CorruptSlide("frame truncated")
        return data
    return b"".join(read_frame(fd, (piece,)) for piece in frame)


class FramePositions:
    """Frame tables of recently read instance files, by path (thread-safe, bounded)."""

    def __init__(self, max_files: int = DEFAULT_CACHED) -> None:
        self.max_files = max_files
        self._tables: OrderedDict[Path, FrameTable] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, path: Path) -> bool:
        with self._lock:
            return path in self._tables

    def table(self, path: Path) -> FrameTable:
        with self._lock:
            found = self._tables.get(path)
            if found is not None:
                self._tables.move_to_end(path)
                return found
        found = frame_table(path)  # outside the lock: two first reads may both scan
        with self._lock:
            self._tables[path] = found
            while len(self._tables) > self.max_files:
                self._tables.popitem(last=False)
        return found

    def read(self, path: Path, numbers: list[int]) -> list[bytes]:
        """Frames by number (1-based), in the order asked."""
        return _read(path, self.table(path), numbers)

    def read_known(self, path: Path, numbers: list[int]) -> list[bytes] | None:
        """The frames if the file's table is known already (a few ``pread`` from the page
        cache: cheap enough for an event loop), else None: then ``read`` them in a thread."""
        with self._lock:
            table = self._tables.get(path)
            if table is None:
                return None
            self._tables.move_to_end(path)
        return _read(path, table, numbers)


def _read(path: Path, table: FrameTable, numbers: list[int]) -> list[bytes]:
    count = len(table)
    for number in numbers:
        if not 1 <= number <= count:
            raise NotFound(f"frame {number}: the instance has frames 1-{count}")
    fd = os.open(path, os.O_RDONLY)
    try:
        return [table.read(fd, number - 1) for number in numbers]
    finally:
        os.close(fd)
