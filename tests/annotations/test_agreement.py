"""Agreement between two annotation sets: expected values computed by hand on squares and
points, and the fast path (disjoint pieces, STRtree pairs) checked against plain unions."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
import shapely
from shapely.geometry import GeometryCollection, LineString, MultiPoint, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from slidebank.annotations.agreement import Agreement, Kappa, compare
from slidebank.annotations.model import Annotation, Shape


def region(
    geometry: BaseGeometry, label: str | None = "tumour", shape: Shape = "polygon"
) -> Annotation:
    return Annotation(geometry=geometry, shape=shape, label=label)


def point(x: float, y: float, label: str | None = "lymphocyte") -> Annotation:
    return Annotation(geometry=Point(x, y), shape="point", label=label)


def manual_kappa(matrix: Sequence[Sequence[float]]) -> float:
    """Cohen's kappa straight from its definition, for comparison."""
    n = sum(sum(row) for row in matrix)
    k = len(matrix)
    po = sum(matrix[i][i] for i in range(k)) / n
    rows = [sum(matrix[i]) for i in range(k)]
    columns = [sum(matrix[i][j] for i in range(k)) for j in range(k)]
    pe = sum(rows[i] * columns[i] for i in range(k)) / n**2
    return (po - pe) / (1 - pe)


def assert_confusion(kappa: Kappa, expected: Sequence[Sequence[float]]) -> None:
    assert np.allclose(np.array(kappa.confusion), np.array(expected), atol=1e-9)


# Regions


def test_identical_sets_agree_perfectly() -> None:
    annotations = [
        region(box(0, 0, 10, 10), "tumour"),
        region(box(20, 0, 30, 10), "stroma", "rectangle"),
        point(50, 50),
        point(60, 60, "tumour"),
    ]
    result = compare(annotations, list(annotations))
    for score in [*result.regions.values(), result.regions_overall]:
        assert score is not None
        assert score.dice == pytest.approx(1.0)
        assert score.iou == pytest.approx(1.0)
    assert result.regions["tumour"].reference_area == pytest.approx(100.0)
    assert result.kappa is not None
    assert result.kappa.kappa == pytest.approx(1.0)
    assert result.kappa.observed == pytest.approx(1.0)
    for detection in [*result.detections.values(), result.detections_overall]:
        assert detection is not None
        assert (detection.precision, detection.recall, detection.f1) == (1.0, 1.0, 1.0)


def test_identical_single_class_has_pe_one_and_kappa_one() -> None:
    # All of U is "tumour" for both: pe = 1, where the formula would be 0 / 0.
    result = compare([region(box(0, 0, 10, 10))], [region(box(0, 0, 10, 10))])
    assert result.kappa is not None
    assert result.kappa.expected == 1.0
    assert result.kappa.kappa == 1.0


def test_half_overlapping_squares() -> None:
    result = compare([region(box(0, 0, 10, 10))], [region(box(5, 0, 15, 10))])
    score = result.regions["tumour"]
    assert score.reference_area == pytest.approx(100.0)
    assert score.test_area == pytest.approx(100.0)
    assert score.intersection_area == pytest.approx(50.0)
    assert score.union_area == pytest.approx(150.0)
    assert score.dice == pytest.approx(2 * 50 / 200)
    assert score.iou == pytest.approx(50 / 150)
    # U = [0, 15] × [0, 10]; categories (tumour, not covered):
    # A tumour ∩ B tumour = 50, A tumour ∩ B none = 50, A none ∩ B tumour = 50.
    assert result.kappa is not None
    assert_confusion(result.kappa, [[50, 50], [50, 0]])
    # po = 50/150 = 1/3, pe = (100·100 + 50·50)/150² = 5/9, kappa = (1/3 - 5/9)/(4/9) = -1/2.
    assert result.kappa.observed == pytest.approx(1 / 3)
    assert result.kappa.expected == pytest.approx(5 / 9)
    assert result.kappa.kappa == pytest.approx(-0.5)
    assert result.kappa.kappa == pytest.approx(manual_kappa([[50, 50], [50, 0]]))


def test_class_present_in_one_set_only_scores_zero() -> None:
    square = box(0, 0, 10, 10)
    result = compare([region(square, "tumour")], [region(square, "stroma")])
    assert list(result.regions) == ["stroma", "tumour"]
    for label in ("stroma", "tumour"):
        assert result.regions[label].dice == 0.0
        assert result.regions[label].iou == 0.0
    assert result.regions["tumour"].test_area == 0.0
    assert result.regions["stroma"].reference_area == 0.0
    # Overall (classes merged) the two sets cover the same area.
    assert result.regions_overall is not None
    assert result.regions_overall.dice == pytest.approx(1.0)
    # Categories (stroma, tumour, none): all 100 px² are reference tumour × test stroma.
    assert result.kappa is not None
    assert result.kappa.labels == ("stroma", "tumour")
    assert_confusion(result.kappa, [[0, 0, 0], [100, 0, 0], [0, 0, 0]])
    assert result.kappa.observed == 0.0
    assert result.kappa.expected == 0.0
    assert result.kappa.kappa == 0.0


def test_class_in_neither_set_is_not_reported() -> None:
    result = compare([region(box(0, 0, 1, 1), "tumour")], [region(box(0, 0, 1, 1), "tumour")])
    assert list(result.regions) == ["tumour"]
    assert result.detections == {}
    assert result.detections_overall is None


def test_overlapping_regions_of_one_class_count_once() -> None:
    reference = [region(box(0, 0, 10, 10)), region(box(5, 0, 15, 10))]
    result = compare(reference, [region(box(0, 0, 15, 10))])
    assert result.regions["tumour"].reference_area == pytest.approx(150.0)
    assert result.regions["tumour"].dice == pytest.approx(1.0)
    assert result.kappa is not None
    assert result.kappa.kappa == pytest.approx(1.0)


def test_kappa_two_classes_splitting_a_square_differently() -> None:
    # The square [0, 10]²: the reference splits it at x = 5, the test at x = 4.
    reference = [region(box(0, 0, 5, 10), "a"), region(box(5, 0, 10, 10), "b")]
    test = [region(box(0, 0, 4, 10), "a"), region(box(4, 0, 10, 10), "b")]
    result = compare(reference, test)
    expected = [[40, 10, 0], [0, 50, 0], [0, 0, 0]]
    assert result.kappa is not None
    assert result.kappa.labels == ("a", "b")
    assert_confusion(result.kappa, expected)
    # po = 0.9, pe = (50·40 + 50·60)/100² = 0.5, kappa = 0.4 / 0.5.
    assert result.kappa.observed == pytest.approx(0.9)
    assert result.kappa.expected == pytest.approx(0.5)
    assert result.kappa.kappa == pytest.approx(0.8)
    assert result.kappa.kappa == pytest.approx(manual_kappa(expected))
    assert result.regions["a"].dice == pytest.approx(2 * 40 / (50 + 40))
    assert result.regions["b"].iou == pytest.approx(50 / 60)


def test_kappa_counts_area_only_one_set_covers() -> None:
    # The test's "b" stops at x = 8: [8, 10] × [0, 10] is "not covered" for the test.
    reference = [region(box(0, 0, 5, 10), "a"), region(box(5, 0, 10, 10), "b")]
    test = [region(box(0, 0, 4, 10), "a"), region(box(4, 0, 8, 10), "b")]
    result = compare(reference, test)
    expected = [[40, 10, 0], [0, 30, 20], [0, 0, 0]]
    assert result.kappa is not None
    assert_confusion(result.kappa, expected)
    assert result.kappa.total == pytest.approx(100.0)
    # po = 0.7, pe = (50·40 + 50·40 + 0·20)/100² = 0.4, kappa = 0.3 / 0.6.
    assert result.kappa.kappa == pytest.approx(0.5)
    assert result.kappa.kappa == pytest.approx(manual_kappa(expected))


def test_kappa_overlap_of_two_classes_in_one_set_counts_for_each() -> None:
    # Reference "a" [0, 10] and "b" [5, 15] overlap on [5, 10]: that area counts in both rows.
    reference = [region(box(0, 0, 10, 10), "a"), region(box(5, 0, 15, 10), "b")]
    test = [region(box(0, 0, 10, 10), "a"), region(box(10, 0, 15, 10), "b")]
    result = compare(reference, test)
    expected = [[100, 0, 0], [50, 50, 0], [0, 0, 0]]
    assert result.kappa is not None
    assert_confusion(result.kappa, expected)
    assert result.kappa.total == pytest.approx(200.0)  # > |U| = 150
    assert result.regions_overall is not None
    assert result.regions_overall.union_area == pytest.approx(150.0)
    # po = 150/200, pe = (100·150 + 100·50)/200² = 0.5.
    assert result.kappa.kappa == pytest.approx(0.5)
    assert result.kappa.kappa == pytest.approx(manual_kappa(expected))


def test_one_set_without_regions() -> None:
    result = compare([region(box(0, 0, 10, 10))], [])
    assert result.regions["tumour"].dice == 0.0
    assert result.regions_overall is not None
    assert result.regions_overall.iou == 0.0
    assert result.kappa is not None
    assert_confusion(result.kappa, [[0, 100], [0, 0]])
    assert result.kappa.kappa == 0.0


def test_invalid_polygon_is_repaired() -> None:
    # A bow-tie: two triangles of 25 px² each once repaired.
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    assert not bowtie.is_valid
    result = compare([region(bowtie)], [region(box(0, 0, 10, 10))])
    score = result.regions["tumour"]
    assert score.reference_area == pytest.approx(50.0)
    assert score.dice == pytest.approx(2 * 50 / 150)
    assert result.reference.regions == 1


def test_ellipse_and_rectangle_shapes_are_regions() -> None:
    ellipse = shapely.affinity.scale(Point(0, 0).buffer(10), 2, 1)
    reference = [region(ellipse, shape="ellipse"), region(box(100, 0, 110, 10), shape="rectangle")]
    result = compare(reference, reference)
    assert result.reference.regions == 2
    assert result.regions["tumour"].reference_area == pytest.approx(ellipse.area + 100)


# Points and cells


def test_points_within_and_beyond_the_distance() -> None:
    reference = [point(0, 0), point(100, 0)]
    test = [point(3, 4), point(100, 20)]  # 5 px and 20 px away
    result = compare(reference, test, distance=10)
    score = result.detections["lymphocyte"]
    assert (score.true_positives, score.false_positives, score.false_negatives) == (1, 1, 1)
    assert score.precision == 0.5
    assert score.recall == 0.5
    assert score.f1 == 0.5
    assert result.reference.detections == 2


def test_distance_is_inclusive() -> None:
    result = compare([point(0, 0)], [point(3, 4)], distance=5)
    assert result.detections["lymphocyte"].true_positives == 1
    result = compare([point(0, 0)], [point(3, 4)], distance=4.999)
    assert result.detections["lymphocyte"].true_positives == 0


def test_matching_is_one_to_one() -> None:
    result = compare([point(0, 0)], [point(1, 0), point(2, 0)], distance=10)
    score = result.detections["lymphocyte"]
    assert (score.true_positives, score.false_positives, score.false_negatives) == (1, 1, 0)
    assert score.precision == 0.5
    assert score.recall == 1.0
    assert score.f1 == pytest.approx(2 / 3)


def test_matching_is_greedy_by_distance() -> None:
    # Candidates: R(0)–T(5) at 5, R(6)–T(5) at 1, R(6)–T(11) at 5. Greedy takes the 1 px pair
    # first and is left with no pair; an optimal assignment would match both. Documented
    # behaviour: greedy is what scales to 10⁶ cells.
    result = compare([point(0, 0), point(6, 0)], [point(5, 0), point(11, 0)], distance=6)
    assert result.detections["lymphocyte"].true_positives == 1


def test_detections_match_within_class_per_class_and_any_class_overall() -> None:
    result = compare([point(0, 0, "a")], [point(1, 0, "b")])
    a, b = result.detections["a"], result.detections["b"]
    assert (a.true_positives, a.false_positives, a.false_negatives) == (0, 0, 1)
    assert (a.precision, a.recall, a.f1) == (None, 0.0, 0.0)  # no test detections of "a"
    assert (b.true_positives, b.false_positives, b.false_negatives) == (0, 1, 0)
    assert (b.precision, b.recall, b.f1) == (0.0, None, 0.0)  # no reference "b"
    assert result.detections_overall is not None
    assert result.detections_overall.true_positives == 1
    assert result.detections_overall.f1 == 1.0


def test_multipoint_gives_one_detection_per_point() -> None:
    reference = [Annotation(MultiPoint([(0, 0), (50, 0), (100, 0)]), "multipoint", "x")]
    test = [point(0, 0, "x"), point(100, 1, "x")]
    result = compare(reference, test)
    assert result.reference.detections == 3
    score = result.detections["x"]
    assert (score.true_positives, score.false_positives, score.false_negatives) == (2, 0, 1)


def test_polygons_as_cells_match_by_centroid() -> None:
    reference = [region(box(0, 0, 10, 10), "cell")]  # centroid (5, 5)
    test = [point(8, 5, "cell"), region(box(100, 100, 104, 104), "cell")]
    result = compare(reference, test, distance=4, cells=True)
    assert result.regions == {}
    assert result.kappa is None
    assert result.reference.detections == 1
    assert result.test.detections == 2
    score = result.detections["cell"]
    assert (score.true_positives, score.false_positives, score.false_negatives) == (1, 1, 0)


def test_unlabelled_annotations_form_their_own_class() -> None:
    result = compare([point(0, 0, None)], [point(0, 0, None), point(50, 50, "a")])
    assert list(result.detections) == [None, "a"]
    assert result.detections[None].true_positives == 1


# Ignored geometries, empty sets, the JSON form


def test_lines_and_other_geometries_are_ignored() -> None:
    line = Annotation(LineString([(0, 0), (10, 10)]), "line", "tumour")
    collection = Annotation(GeometryCollection([Point(0, 0)]), "point", "tumour")
    empty = Annotation(Polygon(), "polygon", "tumour")
    flat = region(Polygon([(0, 0), (10, 0), (20, 0)]))  # no area
    reference = [line, collection, empty, flat, region(box(0, 0, 10, 10))]
    result = compare(reference, [line, point(1, 1, "tumour")])
    assert result.reference.ignored == 4
    assert result.reference.regions == 1
    assert result.test.ignored == 1
    assert result.test.detections == 1
    assert result.regions["tumour"].reference_area == pytest.approx(100.0)


def test_empty_sets() -> None:
    result = compare([], [])
    assert result.regions == {}
    assert result.detections == {}
    assert result.regions_overall is None
    assert result.detections_overall is None
    assert result.kappa is None
    assert result.reference.to_dict() == {"regions": 0, "detections": 0, "ignored": 0}
    assert json.loads(json.dumps(result.to_dict()))["kappa"] is None


def test_to_dict_is_plain_json() -> None:
    reference = [region(box(0, 0, 10, 10)), point(0, 0), point(5, 5, None)]
    test = [region(box(5, 0, 15, 10)), point(1, 0)]
    result = compare(reference, test, distance=3)
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["distance"] == 3.0
    assert data["regions"]["classes"][0]["label"] == "tumour"
    assert data["regions"]["classes"][0]["dice"] == pytest.approx(0.5)
    assert [c["label"] for c in data["detections"]["classes"]] == [None, "lymphocyte"]
    assert result.kappa is not None
    assert data["kappa"]["confusion"] == [list(row) for row in result.kappa.confusion]
    assert data["reference"] == {"regions": 1, "detections": 2, "ignored": 0}


def test_negative_distance_is_refused() -> None:
    with pytest.raises(ValueError, match="distance"):
        compare([], [], distance=-1)


def test_result_is_frozen() -> None:
    result = compare([point(0, 0)], [point(0, 0)])
    assert isinstance(result, Agreement)
    with pytest.raises(AttributeError):
        result.distance = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.detections["x"] = result.detections["lymphocyte"]  # type: ignore[index]


# The fast path against plain unions


def test_region_figures_match_plain_unions_on_random_overlapping_boxes() -> None:
    rng = np.random.default_rng(7)
    labels = ["a", "b", "c"]

    def random_set(n: int) -> list[Annotation]:
        corners = rng.uniform(0, 200, (n, 2))
        sizes = rng.uniform(2, 30, (n, 2))
        return [
            region(box(x, y, x + w, y + h), str(rng.choice(labels)))
            for (x, y), (w, h) in zip(corners, sizes, strict=True)
        ]

    reference, test = random_set(150), random_set(120)
    result = compare(reference, test)

    def unions(annotations: list[Annotation]) -> list[BaseGeometry]:
        return [
            shapely.union_all([a.geometry for a in annotations if a.label == label])
            for label in labels
        ]

    a, b = unions(reference), unions(test)
    a_all, b_all = shapely.union_all(a), shapely.union_all(b)
    for label, x, y in zip(labels, a, b, strict=True):
        intersection = x.intersection(y).area
        assert result.regions[label].dice == pytest.approx(2 * intersection / (x.area + y.area))
        assert result.regions[label].iou == pytest.approx(intersection / x.union(y).area)
    assert result.regions_overall is not None
    assert result.regions_overall.iou == pytest.approx(
        a_all.intersection(b_all).area / a_all.union(b_all).area
    )
    matrix = [[x.intersection(y).area for y in b] + [x.difference(b_all).area] for x in a]
    matrix.append([y.difference(a_all).area for y in b] + [0.0])
    assert result.kappa is not None
    assert_confusion(result.kappa, matrix)
    assert result.kappa.kappa == pytest.approx(manual_kappa(matrix))


def test_a_hundred_thousand_points_per_set_match_exactly_those_within_the_distance() -> None:
    # A 100 px grid with each point moved up to 15 px: a moved point's nearest other point is
    # at least 70 px away, so the one-to-one matches are exactly the points moved by at most
    # the distance, per class and overall, whatever order the matching takes them in.
    rng = np.random.default_rng(1)
    side = 317  # 100,489 points
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), axis=-1).reshape(-1, 2)
    xy = grid * 100.0 + 50.0
    shift = rng.uniform(0, 15, len(xy))
    turn = rng.uniform(0, 2 * np.pi, len(xy))
    moved = xy + np.c_[shift * np.cos(turn), shift * np.sin(turn)]
    labels = rng.choice(["tumour", "lymphocyte", "stroma"], len(xy)).tolist()
    reference = [
        Annotation(g, "point", label) for g, label in zip(shapely.points(xy), labels, strict=True)
    ]
    test = [
        Annotation(g, "point", label)
        for g, label in zip(shapely.points(moved), labels, strict=True)
    ]
    within = np.hypot(*(moved - xy).T) <= 10

    result = compare(reference, test, distance=10)

    overall = result.detections_overall
    assert overall is not None
    assert (overall.reference_count, overall.test_count) == (len(xy), len(xy))
    assert overall.true_positives == int(within.sum())
    assert overall.false_negatives == overall.false_positives == int((~within).sum())
    assert set(result.detections) == {"tumour", "lymphocyte", "stroma"}
    for label, score in result.detections.items():
        of_label = np.array(labels) == label
        assert score.true_positives == int((within & of_label).sum()), label
