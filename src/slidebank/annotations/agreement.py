"""Agreement between two annotation sets on one slide, such as two annotators' work: the basis
for judging annotation quality (how far one pathologist's regions and cells match another's,
or a model's output matches a reference).

Set A is the *reference* and set B the *test*. Three families of figures, all computed on
the geometries in level-0 pixels (no rasterising; exact up to floating-point rounding):

* Regions (Polygon and MultiPolygon geometries: shapes polygon, multipolygon, rectangle,
  ellipse): per class and overall, Dice and IoU of the union of each set's regions.
* Detections (Point and MultiPoint geometries, and polygons when the caller treats them as
  cells): per class and overall, precision, recall and F1 of a one-to-one matching within a
  distance.
* Cohen's kappa of region labels, weighted by area.

Anything else (lines, geometry collections, empty geometries, polygons with no area) is left
out and counted as ``ignored``, so that a caller can see that the figures do not cover it.

Unlabelled annotations (``label is None``) form a class of their own, reported with the
label ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

# scipy ships no type information and pyproject's ignore list does not name it.
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from shapely import STRtree

from slidebank.annotations.model import Annotation

Label = str | None

# shapely.get_type_id codes.
_POINT, _POLYGON, _MULTIPOINT, _MULTIPOLYGON, _COLLECTION = 0, 3, 4, 6, 7
_MULTIPART = (_MULTIPOINT, 5, _MULTIPOLYGON, _COLLECTION)
_NO_GEOMETRIES: npt.NDArray[np.object_] = np.empty(0, dtype=object)


@dataclass(frozen=True)
class RegionScore:
    """Overlap of the reference's and the test's regions of one class (or of all classes).

    ``dice`` is 2|A∩B| / (|A| + |B|) and ``iou`` |A∩B| / |A∪B|, where A is the union of the
    reference's regions (overlaps count once) and B that of the test's; areas in square
    level-0 pixels."""

    reference_area: float
    test_area: float
    intersection_area: float
    union_area: float
    dice: float
    iou: float

    def to_dict(self) -> dict[str, float]:
        return {
            "reference_area": self.reference_area,
            "test_area": self.test_area,
            "intersection_area": self.intersection_area,
            "union_area": self.union_area,
            "dice": self.dice,
            "iou": self.iou,
        }


@dataclass(frozen=True)
class DetectionScore:
    """A one-to-one matching of test detections to reference detections within the distance.

    ``precision`` is TP / (TP + FP), ``None`` when the test has no detections; ``recall`` is
    TP / (TP + FN), ``None`` when the reference has none; ``f1`` is 2TP / (2TP + FP + FN)
    (the harmonic mean of the two, 0 when either is 0 or undefined)."""

    reference_count: int
    test_count: int
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float | None
    recall: float | None
    f1: float

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "reference_count": self.reference_count,
            "test_count": self.test_count,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa of region labels, weighted by area, within the union U of both sets'
    regions.

    Categories are ``labels`` followed by one more, "not covered" (the part of U that the set
    has no region on). ``confusion[i][j]`` is the area of (reference category i) ∩ (test
    category j); reference row "not covered" is U minus the reference's regions, likewise for
    the test's column; the ("not covered", "not covered") cell is 0 by construction.

    Overlapping regions of different classes in one set: the overlap counts once for each of
    its classes (category i of a set is the union of its regions of class i, with no attempt
    to decide which one is right). The matrix then sums to ``total`` > the area of U, and
    ``observed``, ``expected`` and ``kappa`` are computed from the matrix as it is, normalised
    by ``total``. With no such overlaps ``total`` is the area of U.

    ``observed`` is po = trace / total, ``expected`` pe = Σ row_i · column_i / total², and
    ``kappa`` (po - pe) / (1 - pe); when pe is 1 (both sets put all the area in one same
    category) kappa is 1."""

    labels: tuple[Label, ...]
    confusion: tuple[tuple[float, ...], ...]
    total: float
    observed: float
    expected: float
    kappa: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "confusion": [list(row) for row in self.confusion],
            "total": self.total,
            "observed": self.observed,
            "expected": self.expected,
            "kappa": self.kappa,
        }


@dataclass(frozen=True)
class SetCounts:
    """What one set held: ``regions`` annotations scored as regions, ``detections`` points
    scored as detections (a MultiPoint gives one per point, a cell polygon one), ``ignored``
    annotations in neither."""

    regions: int
    detections: int
    ignored: int

    def to_dict(self) -> dict[str, int]:
        return {"regions": self.regions, "detections": self.detections, "ignored": self.ignored}


@dataclass(frozen=True)
class Agreement:
    """The result of `compare`. Per-class mappings are ordered by label (``None`` first) and
    hold only classes present in at least one set; ``*_overall`` and ``kappa`` are ``None``
    when neither set has regions (respectively detections)."""

    distance: float
    cells: bool
    reference: SetCounts
    test: SetCounts
    regions: Mapping[Label, RegionScore]
    regions_overall: RegionScore | None
    detections: Mapping[Label, DetectionScore]
    detections_overall: DetectionScore | None
    kappa: Kappa | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values; per-class results are lists of dicts with a ``label`` key
        (labels may be ``None``, which JSON object keys could not hold)."""
        return {
            "distance": self.distance,
            "cells": self.cells,
            "reference": self.reference.to_dict(),
            "test": self.test.to_dict(),
            "regions": {
                "overall": None if self.regions_overall is None else self.regions_overall.to_dict(),
                "classes": [{"label": k, **v.to_dict()} for k, v in self.regions.items()],
            },
            "detections": {
                "overall": (
                    None if self.detections_overall is None else self.detections_overall.to_dict()
                ),
                "classes": [{"label": k, **v.to_dict()} for k, v in self.detections.items()],
            },
            "kappa": None if self.kappa is None else self.kappa.to_dict(),
        }


def compare(
    reference: Sequence[Annotation],
    test: Sequence[Annotation],
    *,
    distance: float = 10.0,
    cells: bool = False,
) -> Agreement:
    """Agreement of ``test`` with ``reference`` (annotations of one slide, level-0 pixels).

    ``distance``: the largest distance in pixels (inclusive) at which a test detection matches
    a reference detection. ``cells``: score polygonal annotations as cells, by their centroid,
    among the detections instead of as regions.

    An annotation is a region or a detection by its geometry type, not its ``shape`` name
    (rectangles and ellipses are polygons). Invalid polygons are repaired with
    ``shapely.make_valid``; polygons with no area left are ignored."""
    if not (math.isfinite(distance) and distance >= 0):
        raise ValueError(f"distance must be finite and >= 0, not {distance}")
    ref = _split(reference, cells=cells)
    tst = _split(test, cells=cells)

    region_labels = _sorted_labels(set(ref.regions) | set(tst.regions))
    regions: dict[Label, RegionScore] = {}
    regions_overall = None
    kappa = None
    if region_labels:
        regions, regions_overall, kappa = _region_results(region_labels, ref, tst)

    point_labels = _sorted_labels(set(ref.points) | set(tst.points))
    no_points = np.empty((0, 2))
    detections = {
        label: _detection_score(
            ref.points.get(label, no_points), tst.points.get(label, no_points), distance
        )
        for label in point_labels
    }
    detections_overall = None
    if point_labels:
        detections_overall = _detection_score(
            np.concatenate([ref.points.get(label, no_points) for label in point_labels]),
            np.concatenate([tst.points.get(label, no_points) for label in point_labels]),
            distance,
        )

    return Agreement(
        distance=float(distance),
        cells=cells,
        reference=ref.counts,
        test=tst.counts,
        regions=MappingProxyType(regions),
        regions_overall=regions_overall,
        detections=MappingProxyType(detections),
        detections_overall=detections_overall,
        kappa=kappa,
    )


@dataclass(frozen=True)
class _Split:
    # Per class, polygons whose union is the union of the set's regions of that class and that
    # are pairwise interior-disjoint, so that areas add up (see _dissolve).
    regions: dict[Label, npt.NDArray[np.object_]]
    # The same for the union of all the set's regions, whatever their class.
    regions_all: npt.NDArray[np.object_]
    points: dict[Label, npt.NDArray[np.float64]]  # label → (n, 2) coordinates
    counts: SetCounts


def _split(annotations: Sequence[Annotation], *, cells: bool) -> _Split:
    """One set's regions as disjoint pieces per class, and its detections' coordinates per
    class."""
    n = len(annotations)
    geometries = np.empty(n, dtype=object)
    geometries[:] = [a.geometry for a in annotations]
    # Labels as small integer codes, so that grouping is numpy work rather than a Python loop.
    codes_of: dict[Label, int] = {}
    codes = np.fromiter(
        (codes_of.setdefault(a.label, len(codes_of)) for a in annotations), np.intp, count=n
    )
    labels = list(codes_of)

    kinds = shapely.get_type_id(geometries)
    nonempty = ~shapely.is_empty(geometries)
    polygonal = nonempty & np.isin(kinds, (_POLYGON, _MULTIPOLYGON))
    pointlike = nonempty & np.isin(kinds, (_POINT, _MULTIPOINT))

    region_pieces: dict[Label, npt.NDArray[np.object_]] = {}
    regions_all = _NO_GEOMETRIES
    regions = 0
    if not cells and polygonal.any():
        where = np.flatnonzero(polygonal)
        parts, owner = _polygon_parts(geometries[where])
        regions = len(np.unique(owner))
        part_codes = codes[where][owner]
        for code in np.unique(part_codes):
            region_pieces[labels[code]] = _dissolve(parts[part_codes == code])
        regions_all = _dissolve(np.concatenate(list(region_pieces.values())))

    # Coordinates are read in bulk; each point of a MultiPoint is one detection of the
    # annotation's class. Cells count at their centroid.
    point_where = np.flatnonzero(pointlike | polygonal if cells else pointlike)
    point_geometries = geometries[point_where]
    if cells:
        point_geometries = shapely.centroid(point_geometries)
    # Each of a MultiPoint's coordinates is one of its points: no need to explode it first.
    coordinates, owner = shapely.get_coordinates(point_geometries, return_index=True)
    finite = np.isfinite(coordinates).all(axis=1)
    coordinates = coordinates[finite]
    point_codes = codes[point_where][owner[finite]]
    points = {labels[c]: coordinates[point_codes == c] for c in np.unique(point_codes)}
    detected = len(np.unique(owner[finite]))

    counts = SetCounts(regions=regions, detections=len(coordinates), ignored=n - regions - detected)
    return _Split(regions=region_pieces, regions_all=regions_all, points=points, counts=counts)


def _polygon_parts(
    geometries: npt.NDArray[np.object_],
) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.intp]]:
    """The single polygons with area that make up ``geometries``, and the index of the
    geometry each came from. Invalid polygons are repaired first: GEOS refuses to union
    self-intersecting rings, and the repair keeps their area where a buffer(0) could drop it."""
    invalid = ~shapely.is_valid(geometries)
    if invalid.any():
        geometries = geometries.copy()
        geometries[invalid] = shapely.make_valid(geometries[invalid])
    owner = np.arange(len(geometries))
    # make_valid may return collections of polygons, multipolygons and lines; flatten until
    # only single parts remain.
    while True:
        multi = np.isin(shapely.get_type_id(geometries), _MULTIPART)
        if not multi.any():
            break
        parts, index = shapely.get_parts(geometries, return_index=True)
        geometries, owner = parts, owner[index]
    keep = (shapely.get_type_id(geometries) == _POLYGON) & (shapely.area(geometries) > 0)
    return geometries[keep], owner[keep]


def _dissolve(polygons: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Polygons with the same union as ``polygons`` but pairwise interior-disjoint: each
    cluster of polygons that intersect one another is replaced by its union.

    Why not one ``union_all`` per class: a class of thousands of cells becomes one
    MultiPolygon of thousands of parts, slow to build (GEOS took ~1 s for 7,000 disjoint
    octagons) and slower still to intersect with the other set's. Disjoint pieces instead let
    every later area be a sum over candidate pairs from an STRtree, exact all the same."""
    n = len(polygons)
    if n < 2:
        return polygons
    i, j = STRtree(polygons).query(polygons, predicate="intersects")
    keep = i < j
    graph = coo_matrix((np.ones(int(keep.sum())), (i[keep], j[keep])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    alone = np.bincount(component)[component] == 1
    grouped = np.flatnonzero(~alone)
    grouped = grouped[np.argsort(component[grouped], kind="stable")]
    groups = np.split(grouped, np.flatnonzero(np.diff(component[grouped])) + 1)
    unions = [shapely.union_all(polygons[group]) for group in groups if len(group)]
    out = np.empty(int(alone.sum()) + len(unions), dtype=object)
    out[: len(out) - len(unions)] = polygons[alone]
    out[len(out) - len(unions) :] = unions
    return out


def _overlaps(
    a: npt.NDArray[np.object_], b: npt.NDArray[np.object_]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Every pair (a[i], b[j]) that intersects, with the area of its intersection."""
    if len(a) == 0 or len(b) == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0)
    ia, ib = STRtree(b).query(a, predicate="intersects")
    return ia, ib, shapely.area(shapely.intersection(a[ia], b[ib]))


def _stack(
    pieces: Mapping[Label, npt.NDArray[np.object_]], labels: Sequence[Label]
) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.intp]]:
    """All classes' pieces in one array, and each piece's index in ``labels``."""
    arrays = [pieces.get(label, _NO_GEOMETRIES) for label in labels]
    codes = np.repeat(np.arange(len(labels)), [len(x) for x in arrays])
    return np.concatenate(arrays), codes


def _region_results(
    labels: Sequence[Label], ref: _Split, tst: _Split
) -> tuple[dict[Label, RegionScore], RegionScore, Kappa]:
    k = len(labels)
    ref_pieces, ref_codes = _stack(ref.regions, labels)
    tst_pieces, tst_codes = _stack(tst.regions, labels)
    ref_areas = np.bincount(ref_codes, weights=shapely.area(ref_pieces), minlength=k)
    tst_areas = np.bincount(tst_codes, weights=shapely.area(tst_pieces), minlength=k)

    # Pieces are interior-disjoint within a class, so area(A_i ∩ B_j) is the sum over the
    # intersecting pairs of pieces: all k² cells in one pass.
    matrix = np.zeros((k + 1, k + 1))
    ia, ib, areas = _overlaps(ref_pieces, tst_pieces)
    np.add.at(matrix, (ref_codes[ia], tst_codes[ib]), areas)
    # Within U, "the test does not cover it" ∩ A_i is A_i minus the test's coverage B:
    # |A_i| - |A_i ∩ B|. Likewise for the test's classes.
    ia, _, areas = _overlaps(ref_pieces, tst.regions_all)
    matrix[:k, k] = ref_areas - np.bincount(ref_codes[ia], weights=areas, minlength=k)
    ib, _, areas = _overlaps(tst_pieces, ref.regions_all)
    matrix[k, :k] = tst_areas - np.bincount(tst_codes[ib], weights=areas, minlength=k)
    # Differences of sums may round a few ulps below 0 where a class is covered exactly.
    np.clip(matrix, 0.0, None, out=matrix)

    scores = {
        label: _region_score(float(ref_areas[n]), float(tst_areas[n]), float(matrix[n, n]))
        for n, label in enumerate(labels)
    }
    overall = _region_score(
        float(shapely.area(ref.regions_all).sum()),
        float(shapely.area(tst.regions_all).sum()),
        float(_overlaps(ref.regions_all, tst.regions_all)[2].sum()),
    )
    return scores, overall, _kappa(labels, matrix)


def _region_score(area_a: float, area_b: float, intersection: float) -> RegionScore:
    # Sums of piece areas can put the intersection a few ulps above the smaller area.
    intersection = min(intersection, area_a, area_b)
    union = area_a + area_b - intersection
    # Every reported class has a region with area in one set, so the denominators are > 0.
    return RegionScore(
        reference_area=area_a,
        test_area=area_b,
        intersection_area=intersection,
        union_area=union,
        dice=2 * intersection / (area_a + area_b),
        iou=intersection / union,
    )


def _kappa(labels: Sequence[Label], matrix: npt.NDArray[np.float64]) -> Kappa:
    total = float(matrix.sum())
    observed = float(np.trace(matrix)) / total
    expected = float(matrix.sum(axis=1) @ matrix.sum(axis=0)) / total**2
    # pe = 1 only when all the area lies in one cell of the diagonal, hence po = 1 too:
    # perfect agreement on a single category, where the formula is 0 / 0.
    kappa = 1.0 if expected >= 1.0 else (observed - expected) / (1.0 - expected)
    return Kappa(
        labels=tuple(labels),
        confusion=tuple(tuple(float(v) for v in row) for row in matrix),
        total=total,
        observed=observed,
        expected=expected,
        kappa=kappa,
    )


def _detection_score(
    reference: npt.NDArray[np.float64], test: npt.NDArray[np.float64], distance: float
) -> DetectionScore:
    tp = _matches(reference, test, distance)
    fp = len(test) - tp
    fn = len(reference) - tp
    return DetectionScore(
        reference_count=len(reference),
        test_count=len(test),
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        precision=tp / len(test) if len(test) else None,
        recall=tp / len(reference) if len(reference) else None,
        f1=2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 0.0,
    )


def _matches(
    reference: npt.NDArray[np.float64], test: npt.NDArray[np.float64], distance: float
) -> int:
    """The number of one-to-one pairs (reference, test) within ``distance``, matched greedily
    by increasing distance.

    Greedy rather than optimal assignment (Hungarian): the optimal one costs O(n³) and cell
    sets reach 10⁶ per slide, while greedy by distance is what detection challenges commonly
    use (and differs from the optimum only where candidates crowd within the distance of
    each other). The k-d tree keeps the candidate pairs to those within the distance."""
    if len(reference) == 0 or len(test) == 0:
        return 0
    pairs = cKDTree(reference).sparse_distance_matrix(
        cKDTree(test), distance, output_type="ndarray"
    )
    if len(pairs) == 0:
        return 0
    # Ties broken by index so that the result does not depend on the tree's enumeration order.
    order = np.lexsort((pairs["j"], pairs["i"], pairs["v"]))
    taken_ref = bytearray(len(reference))
    taken_test = bytearray(len(test))
    matched = 0
    for i, j in zip(pairs["i"][order].tolist(), pairs["j"][order].tolist(), strict=True):
        if taken_ref[i] or taken_test[j]:
            continue
        taken_ref[i] = taken_test[j] = 1
        matched += 1
    return matched


def _sorted_labels(labels: Iterable[Label]) -> list[Label]:
    return sorted(labels, key=lambda label: (label is not None, label or ""))
