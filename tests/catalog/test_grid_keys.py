"""Grid keys: every box that meets a window has its key in the window's ranges."""

from __future__ import annotations

import numpy as np
import pytest

from slidebank.catalog.grid_keys import (
    BASE_CELL,
    ROWS_PER_RANGE,
    TOP_LEVEL,
    grid_keys,
    key_level,
    key_ranges,
)


def _boxes(rng: np.random.Generator, count: int, extent: float, largest: float) -> np.ndarray:
    x = rng.uniform(-extent / 10, extent, count)
    y = rng.uniform(-extent / 10, extent, count)
    # Sizes spread over many levels: log-uniform from a point to ``largest``.
    w = np.exp(rng.uniform(np.log(0.01), np.log(largest), count))
    h = np.exp(rng.uniform(np.log(0.01), np.log(largest), count))
    return np.stack([x, y, x + w, y + h], axis=1)


def _in_ranges(keys: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    found = np.zeros(len(keys), dtype=bool)
    for low, high in ranges:
        found |= (keys >= low) & (keys <= high)
    return found


@pytest.mark.parametrize(
    ("window_size", "largest"),
    [(2048.0, 40.0), (2048.0, 300_000.0), (300.0, 5_000.0), (500_000.0, 300_000.0)],
)
def test_every_box_meeting_the_window_is_in_its_ranges(window_size: float, largest: float) -> None:
    rng = np.random.default_rng(7)
    boxes = _boxes(rng, 200_000, 200_000.0, largest)
    keys = grid_keys(boxes)
    top = max(key_level(int(key)) for key in keys)
    met = 0
    for _ in range(200):
        x0, y0 = rng.uniform(-20_000, 200_000, 2)
        x1, y1 = x0 + window_size, y0 + window_size * rng.uniform(0.3, 1.0)
        meeting = (
            (boxes[:, 0] <= x1) & (boxes[:, 2] >= x0) & (boxes[:, 1] <= y1) & (boxes[:, 3] >= y0)
        )
        candidates = _in_ranges(keys, key_ranges(x0, y0, x1, y1, top))
        met += int(meeting.sum())
        assert not (meeting & ~candidates).any()
        # And the index narrows: a screenful reads a small part of the set.
        if largest <= BASE_CELL:
            assert candidates.sum() < len(boxes) / 20
    assert met > 50  # the windows did meet boxes: the check above was not vacuous


def test_levels_follow_box_size() -> None:
    boxes = np.array(
        [
            [0, 0, 5, 9],  # a nucleus: finest grid
            [0, 0, BASE_CELL, 1],  # exactly one cell wide: still the finest
            [0, 0, BASE_CELL + 1, 1],  # a pixel more: the next
            [0, 0, 100_000, 80_000],  # a whole slide
            [0, 0, 1e15, 1e15],  # absurd sizes stay at the top
        ],
        dtype=np.float64,
    )
    levels = [key_level(int(key)) for key in grid_keys(boxes)]
    assert levels == [0, 0, 1, 9, TOP_LEVEL]


def test_tall_windows_read_one_range_per_level() -> None:
    tall = key_ranges(0, 0, 1000, BASE_CELL * (ROWS_PER_RANGE + 10), top_level=0)
    short = key_ranges(0, 0, 1000, BASE_CELL * 10, top_level=0)
    assert len(tall) == 1
    assert len(short) == 12  # ten rows, the one above, and the last partial row


def test_far_coordinates_are_still_found() -> None:
    boxes = np.array([[-1e12, -1e12, -1e12 + 5, -1e12 + 5], [1e12, 1e12, 1e12 + 5, 1e12 + 5]])
    keys = grid_keys(boxes)
    assert _in_ranges(keys, key_ranges(-1e12, -1e12, -1e12 + 10, -1e12 + 10, 0))[0]
    assert _in_ranges(keys, key_ranges(1e12, 1e12, 1e12 + 10, 1e12 + 10, 0))[1]


def test_boxes_larger_than_the_coarsest_cells_are_found_anywhere_they_reach() -> None:
    huge = np.array([[0.0, 0.0, 1e15, 1e15]])
    keys = grid_keys(huge)
    assert key_level(int(keys[0])) == TOP_LEVEL
    assert _in_ranges(keys, key_ranges(5e14, 5e14, 5e14 + 10, 5e14 + 10, TOP_LEVEL))[0]


def test_a_box_just_over_a_cell_goes_one_level_up() -> None:
    # One ulp over 4,096 px: log2(side / 256) rounds down to exactly 4, whose cells are
    # 4,096 px, a hair too small for the box.
    side = np.nextafter(BASE_CELL * 16, np.inf)
    keys = grid_keys(np.array([[0.0, 0.0, side, 1.0]]))
    assert key_level(int(keys[0])) == 5


def test_infinite_window_edges_reach_every_box() -> None:
    """An infinite edge (which ``math.floor`` has no integer for) reads as far as the
    farthest finite one: every box on that side, at every level."""
    rng = np.random.default_rng(3)
    boxes = _boxes(rng, 5_000, 1e12, 1e9)
    keys = grid_keys(boxes)
    top = max(key_level(int(key)) for key in keys)
    inf = float("inf")
    assert _in_ranges(keys, key_ranges(-inf, -inf, inf, inf, top)).all()
    assert key_ranges(0, 0, inf, inf, top) == key_ranges(0, 0, 1e300, 1e300, top)
    with pytest.raises(ValueError, match="window edge y1 is not a number"):
        key_ranges(0, 0, 1, float("nan"), top)
