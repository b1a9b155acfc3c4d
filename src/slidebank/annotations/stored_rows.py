"""Annotations in the form the SQL store writes them, computed a batch at a time.

What a row needs beyond the annotation itself (WKB, bounding box, area, grid key, JSON text
of the properties) is computed here with vectorised shapely, without a database: a parallel
import (``annotations.import_workers``) prepares batches in worker processes, which then
need neither SQLAlchemy nor a connection, and the process holding the transaction only
numbers and writes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from slidebank.annotations.model import Annotation
from slidebank.catalog.grid_keys import grid_keys
from slidebank.errors import InvalidInput

EMPTY_JSON = "{}"


@dataclass(frozen=True)
class PreparedBatch:
    """A batch of annotations as columns (ids, set, numbers and revision come at writing).
    Numbers as numpy arrays: they cross between processes as one buffer each."""

    shapes: list[str]
    labels: list[str | None]
    areas: np.ndarray
    bounds: np.ndarray
    """min x, min y, max x, max y per annotation."""
    wkb: list[bytes]
    properties: list[str]
    measurements: list[str]
    confidences: list[float | None]
    keys: np.ndarray
    """The grid key of each bounding box (``catalog.grid_keys``)."""

    def __len__(self) -> int:
        return len(self.shapes)


def prepare(batch: Sequence[Annotation], first_number: int = 0) -> PreparedBatch:
    """``batch`` as columns; ``first_number`` names the first in errors."""
    geometries = np.array([a.geometry for a in batch], dtype=object)
    bounds = shapely.bounds(geometries).reshape(len(batch), 4)
    if np.isnan(bounds).any():
        index = int(np.flatnonzero(np.isnan(bounds).any(axis=1))[0])
        raise InvalidInput(f"annotation {first_number + index}: empty geometry")
    texts: dict[int, str] = {}  # readers share equal values between annotations: encode once

    def _text(value: Mapping[str, Any]) -> str:
        found = texts.get(id(value))
        if found is None:
            found = texts[id(value)] = json_text(value)
        return found

    return PreparedBatch(
        shapes=[a.shape for a in batch],
        labels=[a.label for a in batch],
        areas=shapely.area(geometries),
        bounds=bounds,
        wkb=list(shapely.to_wkb(geometries)),
        properties=[_text(a.properties) for a in batch],
        measurements=[_text(a.measurements) for a in batch],
        confidences=[a.confidence for a in batch],
        keys=grid_keys(bounds),
    )


def rows(
    set_id: int, batch: PreparedBatch, first_id: int, numbers: Sequence[int], revision: int
) -> list[tuple[Any, ...]]:
    """Rows in the order of ``sql_store.WRITTEN``: id, set, shape, label, area, bounds,
    geometry, properties, measurements, confidence, number, grid key, revision."""
    areas = batch.areas.tolist()
    boxes = batch.bounds.tolist()
    keys = batch.keys.tolist()
    return [
        (
            first_id + i,
            set_id,
            batch.shapes[i],
            batch.labels[i],
            areas[i],
            *boxes[i],
            batch.wkb[i],
            batch.properties[i],
            batch.measurements[i],
            batch.confidences[i],
            numbers[i],
            keys[i],
            revision,
        )
        for i in range(len(batch))
    ]


def json_text(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":")) if value else EMPTY_JSON
