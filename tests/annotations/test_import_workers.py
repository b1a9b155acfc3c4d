"""Imports decoded in worker processes: what they prepare is what one process prepares (rows,
classes, check counts), in file order, and errors are those one process would raise."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pytest

from slidebank.annotations.checking import CheckReport, checked
from slidebank.annotations.formats import geojson
from slidebank.annotations.formats.base import ImportLimits, LabelStyle
from slidebank.annotations.import_workers import ImportJob, _result, prepared_in_workers
from slidebank.annotations.stored_rows import PreparedBatch, prepare
from slidebank.errors import InvalidInput, SlidebankError

WIDTH, HEIGHT = 17_965, 20_000  # cells reach x = 19,176: some clipped, some dropped


def _cell(i: int) -> dict[str, Any]:
    x, y = (i % 400) * 48.0, (i // 400) * 48.0
    ring = [[x, y], [x + 20, y], [x + 24, y + 18], [x, y + 20], [x, y]]
    if i % 997 == 5:  # a bow tie: repaired
        ring = [[x, y], [x + 20, y + 20], [x + 20, y], [x, y + 20], [x, y]]
    label = ("Tumor", "Stroma", "Lymphocyte")[i % 3]
    colour = None if i < 5_000 and label == "Stroma" else [i % 3 * 90, 40, 40]
    classification: dict[str, Any] = {"name": label}
    if colour:
        classification["color"] = colour
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "detection",
            "classification": classification,
            "measurements": {"Area": float(i)},
        },
    }


def _collection(features: list[dict[str, Any]], tail: bytes = b"]}") -> bytes:
    body = b",\n".join(json.dumps(feature).encode() for feature in features)
    return b'{"type":"FeatureCollection","features":[' + body + tail


def _in_one_process(data: bytes) -> tuple[PreparedBatch, dict[str, LabelStyle], CheckReport]:
    classes: dict[str, LabelStyle] = {}
    report = CheckReport()
    parsed = geojson.reader.read(io.BytesIO(data), "cells.geojson", ImportLimits(), classes)
    items = list(checked(parsed, "cells.geojson", WIDTH, HEIGHT, outside="clip", report=report))
    return prepare(items), classes, report


def _in_workers(data: bytes) -> tuple[list[PreparedBatch], dict[str, LabelStyle], CheckReport]:
    classes: dict[str, LabelStyle] = {}
    report = CheckReport()
    job = ImportJob("geojson", "cells.geojson", ImportLimits(), WIDTH, HEIGHT, "clip")
    batches = list(prepared_in_workers(geojson.reader, io.BytesIO(data), job, 2, classes, report))
    return batches, classes, report


def test_workers_prepare_what_one_process_prepares() -> None:
    # 25,000 cells, some across the slide's right edge (clipped) or past it (dropped), a few
    # bow ties (repaired).
    data = _collection([_cell(i) for i in range(25_000)])
    assert len(data) > 3 * geojson.CHUNK  # several pieces, spread over both workers
    expected, expected_classes, expected_report = _in_one_process(data)
    batches, classes, report = _in_workers(data)
    assert len(batches) >= 3
    assert sum(len(batch) for batch in batches) == len(expected) == 25_000 - report.dropped
    for column in ("shapes", "labels", "wkb", "properties", "measurements", "confidences"):
        together = [value for batch in batches for value in getattr(batch, column)]
        assert together == getattr(expected, column), column
    for column in ("areas", "bounds", "keys"):
        joined = np.concatenate([getattr(batch, column) for batch in batches])
        assert np.array_equal(joined, getattr(expected, column)), column
    # Stroma is first met without a colour (first piece), then with one (a later piece).
    assert classes == expected_classes
    assert list(classes) == ["Tumor", "Stroma", "Lymphocyte"]
    assert classes["Stroma"].color == "#5a2828"
    assert report == expected_report
    assert report.repaired > 0 and report.clipped > 0 and report.dropped > 0


def test_the_first_error_in_the_file_is_the_one_raised() -> None:
    features = [_cell(i) for i in range(12_000)]
    features[9_000]["geometry"]["coordinates"] = [[[0, 0], [1, 1]]]
    features[9_000]["properties"]["name"] = "the bad one"
    data = _collection(features)
    message = r"cells.geojson: feature 9000 \('the bad one'\): malformed Polygon coordinates"
    with pytest.raises(InvalidInput, match=message):
        _in_one_process(data)
    with pytest.raises(InvalidInput, match=message):
        _in_workers(data)
    # A file that also ends too early: the earlier feature's error still comes first.
    truncated = _collection(features, tail=b"")
    with pytest.raises(InvalidInput, match=message):
        _in_workers(truncated)
    with pytest.raises(InvalidInput, match="the file ends inside"):
        _in_workers(_collection([_cell(i) for i in range(12_000)], tail=b""))


def test_a_worker_that_dies_fails_the_import_with_a_clear_error() -> None:
    job = ImportJob("geojson", "cells.geojson", ImportLimits(), WIDTH, HEIGHT, "clip")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        dying = pool.submit(os._exit, 9)  # as the kernel's OOM killer would end it
        with pytest.raises(SlidebankError, match=r"cells\.geojson: an import worker process"):
            _result(dying, job)  # type: ignore[arg-type]  # it never returns
