"""Grid keys: a spatial index kept in an ordinary B-tree index (SQLite and PostgreSQL).

Each annotation gets one integer key: the level of a hierarchy of square grids (cells of
256 px, 512 px, 1,024 px…) whose cell is at least as large as the annotation's bounding
box, and, in that grid, the cell holding the box's top-left corner. The box then lies
within that cell and its right and lower neighbours, so a window meets only annotations
whose cell, at their level, lies in the window's cells widened by one to the left and
above. Keys are ordered by level, row, column: each grid row of a window is one range of
keys, and a query is a few dozen index range scans (``key_ranges``).

Why not SQLite's R*Tree: it inserted a million nuclei at about 50,000 boxes/s on its own,
a cost paid on top of the row, and imports are meant to run at that rate end to end. A
B-tree index entry whose keys arrive nearly in order costs a few microseconds, and window
queries read about as many candidates (a box meets at most 2 × 2 cells at its level).
PostgreSQL has GiST, but there one index for both engines imports faster (no GiST page
splits during ``COPY``; measured in the README) and keeps one query. This is the "loose"
hierarchical grid of spatial hashing; no library keeps one in SQL.
"""

from __future__ import annotations

import math

import numpy as np

BASE_CELL = 256.0
"""Side (level-0 px) of the finest grid's cells: a nucleus fits in one."""
TOP_LEVEL = 24
"""Coarsest grid: cells of 256 × 2**24 px (4.3 billion px), larger than any slide; what is
larger still is kept there too, and every window reads that whole level."""
_AXIS_BITS = 26
_OFFSET = 1 << (_AXIS_BITS - 1)  # cells left of or above the origin still get a key >= 0
_AXIS_MASK = (1 << _AXIS_BITS) - 1
_LEVEL_SHIFT = 2 * _AXIS_BITS
ROWS_PER_RANGE = 64
"""A window taller than this many cells of a level is read as one range of that level:
rows outside the window's columns come along, but such windows hold most of the set."""


def grid_keys(bounds: np.ndarray) -> np.ndarray:
    """The key of each box of ``bounds`` (rows of min_x, min_y, max_x, max_y)."""
    bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    size = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
    level = np.clip(np.ceil(np.log2(np.maximum(size, 1.0) / BASE_CELL)), 0, TOP_LEVEL)
    # log2 may round a size just above a cell's side down onto it: one level up then.
    level = np.minimum(level + (size > BASE_CELL * np.exp2(level)), TOP_LEVEL).astype(np.int64)
    cell = BASE_CELL * np.exp2(level)
    column = _axis(np.floor(bounds[:, 0] / cell))
    row = _axis(np.floor(bounds[:, 1] / cell))
    keys: np.ndarray = (level << _LEVEL_SHIFT) | (row << _AXIS_BITS) | column
    return keys


def _axis(cells: np.ndarray) -> np.ndarray:
    """Cell numbers moved to non-negative and kept to their bits (coordinates beyond
    ±8 billion px, far outside any slide, share the edge cells: still found, as the
    window's ranges are clipped the same way)."""
    moved: np.ndarray = np.clip(cells + _OFFSET, 0, _AXIS_MASK).astype(np.int64)
    return moved


def key_level(key: int) -> int:
    return key >> _LEVEL_SHIFT


def key_ranges(x0: float, y0: float, x1: float, y1: float, top_level: int) -> list[tuple[int, int]]:
    """Inclusive key ranges holding every annotation of levels up to ``top_level`` whose
    box may meet the window (boxes still need the exact test)."""
    ranges = []
    for level in range(min(top_level, TOP_LEVEL) + 1):
        cell = BASE_CELL * 2.0**level
        first_column = _clipped(_floor(x0 / cell, "x0") - 1)
        last_column = _clipped(_floor(x1 / cell, "x1"))
        first_row = _clipped(_floor(y0 / cell, "y0") - 1)
        last_row = _clipped(_floor(y1 / cell, "y1"))
        start = level << _LEVEL_SHIFT
        if level == TOP_LEVEL:
            # Boxes larger than even these cells (absurd sizes) may span many: read them all.
            ranges.append((start, start | (1 << _LEVEL_SHIFT) - 1))
            continue
        if last_row - first_row >= ROWS_PER_RANGE:
            ranges.append(
                (
                    start | (first_row << _AXIS_BITS) | first_column,
                    start | (last_row << _AXIS_BITS) | last_column,
                )
            )
            continue
        for row in range(first_row, last_row + 1):
            line = start | (row << _AXIS_BITS)
            ranges.append((line | first_column, line | last_column))
    return ranges


def _clipped(cell: int) -> int:
    return min(max(cell + _OFFSET, 0), _AXIS_MASK)


def _floor(cells: float, edge: str) -> int:
    """``floor(cells)``; an infinite window edge lies beyond the edge cells, as a finite one
    far outside any slide does (``math.floor`` has no integer for it)."""
    if math.isnan(cells):
        raise ValueError(f"window edge {edge} is not a number")
    if math.isinf(cells):
        return _AXIS_MASK + 1 if cells > 0 else -(_AXIS_MASK + 1)
    return math.floor(cells)
