"""One suite for every annotation store: the in-memory reference, and the SQL store on
SQLite and PostgreSQL, must give the same answers (and those of a brute-force check)."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import shapely
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon, box

from slidebank.annotations.memory_store import MemoryAnnotationStore
from slidebank.annotations.model import Annotation, Viewport
from slidebank.annotations.sql_store import SqlAnnotationStore
from slidebank.annotations.store import AnnotationStore, Change
from slidebank.catalog.annotation_tables import AnnotationSet
from slidebank.catalog.tables import Image
from slidebank.config import Settings
from slidebank.errors import InvalidInput, NotFound
from slidebank.services.ingesting import ingest_paths
from slidebank.services.repository import open_repository


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store_and_sets(
    request: pytest.FixtureRequest, tmp_path: Path, slides_dir: Path
) -> Iterator[tuple[AnnotationStore, int, int]]:
    if request.param == "memory":
        yield MemoryAnnotationStore(), 1, 2
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalogue.sqlite'}"
        databases: Iterator[str] = iter([url])
    else:
        from tests.conftest import _fresh_postgres_database

        databases = _fresh_postgres_database(request.getfixturevalue("postgres_admin"))
    for url in databases:
        repository = open_repository(Settings(home=tmp_path / "repo", database_url=url))
        try:
            report = ingest_paths(repository, [slides_dir / "aperio" / "small-crop.svs"])
            assert report.outcomes[0].status == "ingested"
            with repository.catalogue.transaction() as session:
                image = session.query(Image).one()
                sets = [
                    AnnotationSet(
                        image_id=image.id,
                        name=name,
                        kind="manual",
                        author="tester",
                        created_at=datetime.now(UTC),
                    )
                    for name in ("first", "second")
                ]
                session.add_all(sets)
                session.flush()
                ids = (sets[0].id, sets[1].id)
            yield SqlAnnotationStore(repository.catalogue), *ids
        finally:
            repository.close()


IMPORT = Change(None, "tester", "import")


def _annotations() -> list[Annotation]:
    items: list[Annotation] = []
    for row in range(20):
        for column in range(20):
            x, y = column * 20.0, row * 20.0
            label = ("tumor", "stroma", None)[(row + column) % 3]
            items.append(
                Annotation(
                    box(x, y, x + 10 + row % 4, y + 10),
                    "rectangle",
                    label,
                    {"n": row * 20 + column},
                    {"area_um2": 1.5},
                    0.9,
                )
            )
    ring = Polygon(
        [(0, 0), (400, 0), (400, 400), (0, 400)], [[(150, 150), (250, 150), (250, 250), (150, 250)]]
    )
    items += [
        Annotation(ring, "polygon", "region"),
        Annotation(Point(500, 500), "point", "cell"),
        Annotation(MultiPoint([(505, 505), (900, 900)]), "multipoint", "cell"),
        Annotation(LineString([(0, 600), (800, 600)]), "line", "margin"),
        Annotation(
            MultiPolygon([box(700, 700, 720, 720), box(760, 760, 780, 780)]),
            "multipolygon",
            "tumor",
        ),
    ]
    return items


def _key(item: Annotation) -> tuple[str | None, str, str]:
    return item.label, item.shape, shapely.normalize(item.geometry).wkt


def _brute(items: list[Annotation], viewport: Viewport) -> list[tuple[str | None, str, str]]:
    window = box(viewport.x0, viewport.y0, viewport.x1, viewport.y1)
    return [_key(a) for a in items if a.geometry.intersects(window)]


def test_viewport_queries_equal_a_brute_force_check(
    store_and_sets: tuple[AnnotationStore, int, int],
) -> None:
    store, first, second = store_and_sets
    items = _annotations()
    assert store.insert(first, items, IMPORT).added == len(items)
    store.insert(second, [Annotation(box(0, 0, 1000, 1000), "rectangle", "other")], IMPORT)
    rng = random.Random(7)
    for _ in range(40):
        x0, y0 = rng.uniform(-50, 900), rng.uniform(-50, 900)
        viewport = Viewport(x0, y0, x0 + rng.uniform(0, 200), y0 + rng.uniform(0, 200))
        found = store.query([first], viewport)
        assert [_key(a) for a in found] == _brute(items, viewport)
        assert all(a.id is not None for a in found)


def test_viewport_queries_at_slide_scale(
    store_and_sets: tuple[AnnotationStore, int, int],
) -> None:
    """Sizes from a nucleus to a tissue region, over 60,000 px: every level of the spatial
    index, boxes across its cell edges, windows from a few cells to most of the slide."""
    store, first, _ = store_and_sets
    rng = random.Random(11)
    items = []
    for number in range(1500):
        x, y = rng.uniform(-500, 60_000), rng.uniform(-500, 60_000)
        size = math.exp(rng.uniform(math.log(2), math.log(20_000)))
        items.append(
            Annotation(
                box(x, y, x + size, y + size * rng.uniform(0.2, 1)), "rectangle", str(number % 3)
            )
        )
    store.insert(first, items, IMPORT)
    found_any = 0
    for side in (100, 2048, 9000, 50_000):
        for _ in range(10):
            x0, y0 = rng.uniform(-1000, 60_000), rng.uniform(-1000, 60_000)
            viewport = Viewport(x0, y0, x0 + side, y0 + side)
            found = sorted(_key(a) for a in store.query([first], viewport))
            assert found == sorted(_brute(items, viewport))
            found_any += len(found)
    assert found_any > 100


def test_exact_intersection_after_the_bounding_box(
    store_and_sets: tuple[AnnotationStore, int, int],
) -> None:
    store, first, _ = store_and_sets
    store.insert(first, _annotations(), IMPORT)
    inside_the_hole = Viewport(195, 195, 198, 198)  # inside the ring's box, in its hole
    labels = {a.label for a in store.query([first], inside_the_hole)}
    assert "region" not in labels
    touching = Viewport(250, 250, 260, 260)  # the hole's corner touches: that intersects
    assert "region" in {a.label for a in store.query([first], touching)}


def test_filters_limit_counts_and_sets_apart(
    store_and_sets: tuple[AnnotationStore, int, int],
) -> None:
    store, first, second = store_and_sets
    items = _annotations()
    store.insert(first, items, IMPORT)
    store.insert(second, [Annotation(box(0, 0, 1000, 1000), "rectangle", "other")], IMPORT)
    everything = Viewport(-10, -10, 1010, 1010)
    tumor = store.query([first], everything, labels=["tumor"])
    assert [_key(a) for a in tumor] == [_key(a) for a in items if a.label == "tumor"]
    big = store.query([first], everything, min_area=120)
    assert [_key(a) for a in big] == [_key(a) for a in items if a.geometry.area >= 120]
    assert [_key(a) for a in store.query([first], everything, limit=5)] == [
        _key(a) for a in items[:5]
    ]
    counts = store.count_by_label([first], Viewport(0, 0, 100, 100))
    window = box(0, 0, 100, 100)
    expected: dict[str | None, int] = {}
    for item in items:
        if item.geometry.intersects(window):
            expected[item.label] = expected.get(item.label, 0) + 1
    assert counts == expected
    both = store.query([first, second], everything, labels=["other"])
    assert [a.label for a in both] == ["other"]
    first_item = store.query([first], Viewport(0, 0, 1, 1), labels=["tumor"])[0]
    assert (first_item.properties, first_item.measurements, first_item.confidence) == (
        {"n": 0},
        {"area_um2": 1.5},
        0.9,
    )


def test_stream_keeps_order_and_delete_takes_one_set(
    store_and_sets: tuple[AnnotationStore, int, int],
) -> None:
    store, first, second = store_and_sets
    items = _annotations()
    store.insert(first, items[:100], IMPORT)
    store.insert(first, items[100:], IMPORT)  # appended after the first batch
    store.insert(second, items[:3], IMPORT)
    assert [_key(a) for a in store.stream(first)] == [_key(a) for a in items]
    assert store.delete_set(first) == len(items)
    everything = Viewport(-10, -10, 1010, 1010)
    assert store.query([first], everything) == []
    assert len(store.query([second], everything)) == 3


def test_a_failed_insert_stores_nothing(store_and_sets: tuple[AnnotationStore, int, int]) -> None:
    store, first, _ = store_and_sets
    items = [*_annotations()[:10], Annotation(Polygon(), "polygon", "broken")]
    with pytest.raises(ValueError, match="annotation 10: empty geometry"):
        store.insert(first, items, IMPORT)
    assert store.query([first], Viewport(-10, -10, 1010, 1010)) == []
    # Named by the number it would have had in the set, here after five others.
    store.insert(first, items[:5], IMPORT)
    with pytest.raises(ValueError, match="annotation 15: empty geometry"):
        store.insert(first, items, IMPORT)
    with pytest.raises(ValueError, match="annotation 5: empty geometry"):
        store.edit(first, IMPORT, add=[Annotation(Polygon(), "polygon", "broken")])
    assert len(store.query([first], Viewport(-10, -10, 1010, 1010))) == 5


def test_density_for_zoomed_out_views_counts_centres_per_cell(
    store_and_sets: tuple[AnnotationStore, int, int],
) -> None:
    store, first, second = store_and_sets
    items = _annotations()
    store.insert(first, items, IMPORT)
    store.insert(second, [Annotation(box(0, 0, 10, 10), "rectangle", "other")], IMPORT)
    for viewport, cell in (
        (Viewport(0, 0, 1000, 1000), 64.0),
        (Viewport(37.5, 12.25, 555.0, 433.0), 25.0),
        (Viewport(-100, -100, 100, 100), 200.0),
    ):
        expected: dict[tuple[int, int], int] = {}
        for item in items:
            min_x, min_y, max_x, max_y = item.geometry.bounds
            x, y = (min_x + max_x) / 2, (min_y + max_y) / 2
            if viewport.x0 <= x < viewport.x1 and viewport.y0 <= y < viewport.y1:
                key = (int((x - viewport.x0) // cell), int((y - viewport.y0) // cell))
                expected[key] = expected.get(key, 0) + 1
        assert store.density([first], viewport, cell) == expected
    assert sum(store.density([first, second], Viewport(0, 0, 1000, 1000), 500).values()) == (
        len(items) + 1
    )
    with pytest.raises(ValueError, match="more than 65,536"):
        store.density([first], Viewport(0, 0, 100_000, 100_000), 1)
    with pytest.raises(ValueError, match="must be positive"):
        store.density([first], Viewport(0, 0, 10, 10), 0)


def test_density_refuses_grids_no_integer_counts(
    store_and_sets: tuple[AnnotationStore, int, int],
) -> None:
    store, first, _ = store_and_sets
    store.insert(first, _annotations()[:5], IMPORT)
    # 1e308 px in cells of 1e-300 px: infinitely many cells (OverflowError before).
    with pytest.raises(InvalidInput, match=r"cell: a density grid of inf x inf cells"):
        store.density([first], Viewport(0, 0, 1e308, 1e308), 1e-300)
    with pytest.raises(InvalidInput, match="cell: a density cell must be positive and finite"):
        store.density([first], Viewport(0, 0, 10, 10), math.inf)
    assert sum(store.density([first], Viewport(0, 0, 1e308, 1e308), 1e306).values()) == 5


def test_windows_are_finite() -> None:
    with pytest.raises(InvalidInput, match="viewport: x1 must be a finite number, not inf"):
        Viewport(0, 0, math.inf, 10)
    with pytest.raises(InvalidInput, match="viewport: y0 must be a finite number, not nan"):
        Viewport(0, math.nan, 10, 10)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"properties": {"note": math.inf}}, "property 'note' is not a finite number"),
        ({"properties": {"a": {"b": [1, math.nan]}}}, "property 'a.b[1]' is not a finite number"),
        ({"measurements": {"area": -math.inf}}, "measurement 'area' is not a finite number"),
        ({"confidence": math.nan}, "confidence nan is not a finite number"),
    ],
)
def test_values_json_cannot_hold_are_refused(
    store_and_sets: tuple[AnnotationStore, int, int], values: dict[str, Any], reason: str
) -> None:
    """Stored, they made every reader's viewport answer invalid JSON (``Infinity``)."""
    store, first, _ = store_and_sets
    items = _annotations()[:4]
    bad = Annotation(Point(5, 5), "point", "cell", **values)
    with pytest.raises(InvalidInput, match=re.escape(f"annotation 4: {reason}")):
        store.insert(first, [*items, bad], IMPORT)
    with pytest.raises(InvalidInput, match=re.escape(f"annotation 0: {reason}")):
        store.edit(first, IMPORT, add=[bad])
    assert store.query([first], Viewport(-10, -10, 1010, 1010)) == []
    assert store.history(first) == []


def _state(items: list[Annotation]) -> list[tuple[int | None, str | None, str]]:
    return [(a.number, a.label, shapely.normalize(a.geometry).wkt) for a in items]


def test_every_change_is_a_revision_with_history_diff_and_revert(
    store_and_sets: tuple[AnnotationStore, int, int],
) -> None:
    store, first, second = store_and_sets
    items = _annotations()[:3]
    first_revision = store.insert(first, items, IMPORT)
    assert (first_revision.number, first_revision.added, first_revision.removed) == (1, 3, 0)
    at_one = list(store.stream(first))
    assert [a.number for a in at_one] == [0, 1, 2]
    moved = Annotation(box(900, 900, 950, 950), "rectangle", "tumor")
    second_revision = store.edit(
        first,
        Change(None, "ann", "edit", {"note": "fixed"}),
        add=[Annotation(Point(5, 5), "point", "cell")],
        replace={0: moved},
        remove=[1],
    )
    assert (second_revision.number, second_revision.added, second_revision.removed) == (2, 2, 2)
    now = list(store.stream(first))
    assert [(a.number, a.label) for a in now] == [(0, "tumor"), (2, items[2].label), (3, "cell")]
    assert _state(list(store.stream(first, at=1))) == _state(at_one)
    assert list(store.stream(first, at=0)) == []
    everything = Viewport(-10, -10, 1010, 1010)
    assert sorted(a.number or 0 for a in store.query([first], everything)) == [0, 2, 3]
    assert sum(store.density([first], everything, 500).values()) == 3

    diff = store.diff(first, 1, 2)
    assert [a.number for a in diff.added] == [3]
    assert [a.number for a in diff.removed] == [1]
    assert [(old.number, new.number) for old, new in diff.changed] == [(0, 0)]
    assert diff.changed[0][1].geometry.equals(moved.geometry)
    assert diff.changed[0][0].geometry.equals(items[0].geometry)

    history = store.history(first)
    assert [(r.number, r.action, r.user_id, r.author) for r in history] == [
        (1, "import", None, "tester"),
        (2, "edit", None, "ann"),
    ]
    assert history[1].detail == {"note": "fixed"}
    assert history[0].at <= history[1].at

    reverted = store.revert(first, 1, Change(None, "ann", "revert"))
    assert (reverted.number, reverted.added, reverted.removed) == (3, 2, 2)
    assert _state(list(store.stream(first))) == _state(at_one)
    assert sorted(a.number or 0 for a in store.query([first], everything)) == [0, 1, 2]
    assert not store.diff(first, 1, 3).added and not store.diff(first, 1, 3).removed
    store.revert(first, 0, Change(None, "ann", "revert"))
    assert list(store.stream(first)) == []
    assert store.query([first], everything) == []
    with pytest.raises(NotFound, match="annotation 1 is not in set"):
        store.edit(first, Change(None, "ann", "delete"), remove=[1])
    with pytest.raises(NotFound, match="no revision 9"):
        store.revert(first, 9, Change(None, "ann", "revert"))
    assert store.history(second) == []


def _brute_density(
    items: list[Annotation], viewport: Viewport, cell: float
) -> dict[tuple[int, int], int]:
    expected: dict[tuple[int, int], int] = {}
    for item in items:
        min_x, min_y, max_x, max_y = item.geometry.bounds
        x, y = (min_x + max_x) / 2, (min_y + max_y) / 2
        if viewport.x0 <= x < viewport.x1 and viewport.y0 <= y < viewport.y1:
            key = (int((x - viewport.x0) // cell), int((y - viewport.y0) // cell))
            expected[key] = expected.get(key, 0) + 1
    return expected


def test_density_on_the_kept_cell_grid_follows_every_change(
    store_and_sets: tuple[AnnotationStore, int, int],
) -> None:
    """Windows and cells on the 256-px grid are answered from counts the SQL store keeps as
    annotations change: they must stay exact through imports, edits and reverts."""
    store, first, second = store_and_sets
    rng = random.Random(11)
    items = [
        Annotation(Point(rng.uniform(0, 4000), rng.uniform(0, 4000)).buffer(6), "polygon", "c")
        for _ in range(600)
    ]
    items += [Annotation(Point(255.9, 256.0), "point", "edge"), Annotation(Point(0, 0), "point")]
    items.append(Annotation(Point(-10, 5), "point", "off the grid"))  # number 602
    store.insert(first, items, IMPORT)
    store.insert(second, items[:50], IMPORT)
    windows = [
        (Viewport(0, 0, 4096, 4096), 256.0),
        (Viewport(512, 256, 2048, 3072), 512.0),
        (Viewport(0, 0, 8192, 8192), 2048.0),
        (Viewport(1024, 1024, 1280, 1280), 256.0),
    ]

    def check() -> None:
        current = list(store.stream(first))
        for viewport, cell in windows:
            assert store.density([first], viewport, cell) == _brute_density(current, viewport, cell)

    check()
    store.edit(
        first,
        Change(None, "ann", "edit"),
        add=[Annotation(box(3000, 3000, 3100, 3100), "rectangle", "c")],
        replace={3: Annotation(Point(100, 100), "point", "c")},
        remove=[0, 1, 2, 600, 602],
    )
    check()
    store.revert(first, 1, Change(None, "ann", "revert"))
    check()
    store.revert(first, 0, Change(None, "ann", "revert"))
    assert store.density([first], Viewport(0, 0, 4096, 4096), 256.0) == {}
    assert sum(store.density([second], Viewport(0, 0, 4096, 4096), 4096.0).values()) == 50
