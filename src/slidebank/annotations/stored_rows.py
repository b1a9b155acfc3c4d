"""Annotations in the form the SQL store writes them, computed a batch at a time.

What a row needs beyond the annotation itself (WKB, bounding box, area, grid key, JSON text
of the properties) is computed here with vectorised shapely, without a database: a parallel
import (``annotations.import_workers``) prepares batches in worker processes, which then
need neither SQLAlchemy nor a connection, and the process holding the transaction only
numbers and writes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from slidebank.annotations.model import Annotation, not_finite
from slidebank.catalog.grid_keys import grid_keys
from slidebank.errors import InvalidInput

EMPTY_JSON = "{}"
# The columns of a row, in the order ``rows`` makes them. KEPT: what a copied row keeps
# (revert): everything but id, set and revision.
KEPT = (
    "shape, label, area, min_x, min_y, max_x, max_y, geometry, properties, measurements, "
    "confidence, number, grid_key"
)
WRITTEN = f"id, set_id, {KEPT}, added_in"
WIDTH = WRITTEN.count(",") + 1


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
    refused: tuple[int, str] | None = None
    """The first annotation of the batch whose values JSON cannot hold (NaN, infinities),
    by its place in the batch, and why: ``rows`` refuses it, naming its number."""

    def __len__(self) -> int:
        return len(self.shapes)


def prepare(batch: Sequence[Annotation]) -> PreparedBatch:
    """``batch`` as columns. An empty geometry has no bounds (NaN), and a property,
    measurement or confidence may not be finite: ``rows`` refuses either, naming the
    annotation by its number in the set, which is known only there."""
    geometries = np.array([a.geometry for a in batch], dtype=object)
    bounds = shapely.bounds(geometries).reshape(len(batch), 4)
    texts: dict[int, str] = {}  # readers share equal values between annotations: encode once
    bad: list[int] = []

    def _text(index: int, value: Mapping[str, Any]) -> str:
        found = texts.get(id(value))
        if found is None:
            try:
                found = texts[id(value)] = json_text(value)
            except ValueError:
                bad.append(index)
                return EMPTY_JSON
        return found

    properties = [_text(i, a.properties) for i, a in enumerate(batch)]
    measurements = [_text(i, a.measurements) for i, a in enumerate(batch)]
    confidences = [a.confidence for a in batch]
    bad += [i for i, c in enumerate(confidences) if c is not None and not math.isfinite(c)]
    first = min(bad, default=None)
    return PreparedBatch(
        shapes=[a.shape for a in batch],
        labels=[a.label for a in batch],
        areas=shapely.area(geometries),
        bounds=bounds,
        wkb=list(shapely.to_wkb(geometries)),
        properties=properties,
        measurements=measurements,
        confidences=confidences,
        keys=grid_keys(np.nan_to_num(bounds)),
        refused=None
        if first is None
        else (first, not_finite(batch[first]) or "a value is not finite"),
    )


def rows(
    set_id: int, batch: PreparedBatch, first_id: int, numbers: Sequence[int], revision: int
) -> list[tuple[Any, ...]]:
    """Rows in the order of ``WRITTEN``, the annotations numbered ``numbers`` in the set."""
    empty = np.flatnonzero(np.isnan(batch.bounds).any(axis=1))
    refusals = [(int(empty[0]), "empty geometry")] if len(empty) else []
    if batch.refused is not None:
        refusals.append(batch.refused)
    if refusals:  # the first in the batch, as a store that checks one by one finds it
        index, reason = min(refusals)
        raise InvalidInput(f"annotation {numbers[index]}: {reason}")
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
    """``value`` as JSON text; ValueError when it holds NaN or an infinity, which JSON has no
    spelling for (``model.not_finite`` says where)."""
    if not value:
        return EMPTY_JSON
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
