"""Annotation use cases on a real stored slide, on SQLite and PostgreSQL: imports that store
all or nothing, geometry repaired or refused, clipping, exports in every format, edits and
their history, ownership and promotion, agreement, the label schema, and the audit."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import shapely
from sqlalchemy import func, select, text

from slidebank.access.policy import ANONYMOUS, COMMAND_LINE, Principal
from slidebank.annotations.formats import geojson
from slidebank.annotations.formats.registry import WRITERS
from slidebank.annotations.model import Viewport
from slidebank.catalog.annotation_tables import AnnotationRow, AnnotationSet, LabelClass
from slidebank.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    SignInRequired,
    StorageError,
)
from slidebank.services import accounts, annotating, ingesting
from slidebank.services.repository import Repository

DATASET = "histology"


@pytest.fixture
def world(repository: Repository, cmu_small: Path) -> Iterator[dict[str, Any]]:
    (outcome,) = ingesting.ingest_paths(repository, [cmu_small], DATASET).outcomes
    assert outcome.status == "ingested", outcome.reason
    slide = outcome.id
    people: dict[str, Principal] = {}
    for name, role in (("ann", "annotator"), ("bob", "annotator"), ("stew", "steward")):
        accounts.add_user(repository, COMMAND_LINE, name, "a long password 1", False)
        accounts.add_role(repository, COMMAND_LINE, DATASET, name, role)
        people[name] = accounts.principal_for_user(repository, name)
    accounts.add_user(repository, COMMAND_LINE, "plain", "a long password 1", False)
    people["plain"] = accounts.principal_for_user(repository, "plain")
    yield {"slide": slide, **people}


def _geojson(features: list[dict[str, Any]]) -> io.BytesIO:
    return io.BytesIO(json.dumps({"type": "FeatureCollection", "features": features}).encode())


def _polygon(x: float, y: float, size: float = 40, label: str = "Tumor") -> dict[str, Any]:
    ring = [[x, y], [x + size, y], [x + size * 1.2, y + size], [x, y + size], [x, y]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"classification": {"name": label, "color": [200, 0, 0]}},
    }


def _point(x: float, y: float, label: str = "Lymphocyte") -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [x, y]},
        "properties": {"classification": {"name": label}},
    }


def _import(
    repository: Repository, world: dict[str, Any], features: list[dict[str, Any]], **kw: Any
) -> Any:
    who = kw.pop("who", "ann")
    return annotating.import_annotations(
        repository,
        world[who],
        world["slide"],
        _geojson(features),
        "cells.geojson",
        set_name=kw.pop("set_name", f"{who}-cells"),
        **kw,
    )


def _stored(repository: Repository) -> tuple[int, int, int]:
    with repository.catalogue.reading() as session:
        return (
            session.scalar(select(func.count()).select_from(AnnotationSet)) or 0,
            session.scalar(select(func.count()).select_from(AnnotationRow)) or 0,
            session.scalar(select(func.count()).select_from(LabelClass)) or 0,
        )


def _audit_actions(repository: Repository) -> list[str]:
    rows = accounts.audit_events(repository, COMMAND_LINE, DATASET, 1000, 0)
    return [row["action"] for row in rows if row["action"].startswith("annotations.")]


def test_an_import_stores_the_set_its_classes_and_an_audit_event(
    repository: Repository, world: dict[str, Any]
) -> None:
    features = [_polygon(100 + 50 * i, 200) for i in range(20)] + [_point(1000, 1000)]
    report = _import(repository, world, features)
    assert (report.imported, report.format, report.revision) == (21, "geojson", 1)
    assert sorted(report.classes) == ["Lymphocyte", "Tumor"]
    assert report.set["owner_user_id"] == world["ann"].user_id
    assert report.set["annotations"] == 21
    schema = {
        c["name"]: c["color"] for c in annotating.label_schema(repository, COMMAND_LINE, DATASET)
    }
    assert schema == {"Lymphocyte": None, "Tumor": "#c80000"}
    assert _audit_actions(repository) == ["annotations.import"]
    (revision,) = annotating.history(repository, world["ann"], report.set["id"])
    assert revision["action"] == "import"
    assert revision["detail"]["file"] == "cells.geojson"
    assert revision["author"] == "ann"
    found = json.loads(  # the dataset is open: anyone reads
        annotating.viewport_geojson(
            repository, world["plain"], world["slide"], Viewport(0, 0, 500, 500)
        )
    )
    assert len(found["features"]) == 9  # those starting at x = 100, 150, …, 500
    assert {f["properties"]["label"] for f in found["features"]} == {"Tumor"}


def _decode_in_workers(repository: Repository, workers: int) -> None:
    """Imports of any size decoded by ``workers`` processes (0: in the importing one)."""
    repository.settings.annotation_import_workers = workers
    repository.settings.annotation_parallel_import_bytes = 0


def test_an_import_decoded_in_worker_processes_stores_what_one_process_stores(
    repository: Repository, world: dict[str, Any]
) -> None:
    features = [
        _polygon(5 + (i % 140) * 15, 5 + (i // 140) * 15, 10, ("Tumor", "Stroma")[i % 2])
        for i in range(9_000)
    ]
    features[17]["geometry"]["coordinates"] = [[[0, 0], [9, 9], [9, 0], [0, 9], [0, 0]]]
    reports = {}
    for workers in (2, 0):
        _decode_in_workers(repository, workers)
        reports[workers] = _import(repository, world, features, set_name=f"by {workers}")
    parallel, single = reports[2], reports[0]
    assert (parallel.imported, parallel.repaired, parallel.revision) == (9_000, 1, 1)
    assert (single.imported, single.repaired, single.revision) == (9_000, 1, 1)
    assert parallel.classes == ["Tumor", "Stroma"] and single.classes == []

    def stored(report: Any) -> list[tuple[Any, ...]]:
        return [
            (a.number, a.shape, a.label, a.geometry.wkb, a.properties, a.measurements)
            for a in annotating.stream_set(repository, world["ann"], report.set["id"])
        ]

    assert stored(parallel) == stored(single)
    window = Viewport(0, 0, 400, 400)
    counts = [
        annotating.count_by_label(
            repository, world["ann"], world["slide"], window, set_ids=[report.set["id"]]
        )
        for report in (parallel, single)
    ]
    assert counts[0] == counts[1] and sum(counts[0].values()) > 0


def test_one_import_at_a_time_takes_the_worker_processes(repository: Repository) -> None:
    _decode_in_workers(repository, 2)
    source = io.BytesIO(_geojson([_point(1, 1)]).getvalue())
    with (
        annotating._decoding_workers(repository, geojson.reader, source) as first,
        annotating._decoding_workers(repository, geojson.reader, source) as second,
    ):
        assert (first, second) == (2, 0)  # the second decodes in its own process
    with annotating._decoding_workers(repository, geojson.reader, source) as again:
        assert again == 2
    repository.settings.annotation_parallel_import_bytes = len(source.getvalue()) + 1
    with annotating._decoding_workers(repository, geojson.reader, source) as small:
        assert small == 0


@pytest.mark.parametrize("workers", [0, 2], ids=["one process", "worker processes"])
def test_a_failed_import_stores_nothing(
    repository: Repository, world: dict[str, Any], workers: int
) -> None:
    _decode_in_workers(repository, workers)
    before = _stored(repository)
    broken = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0]]]}}
    broken["properties"] = {"name": "the bad one"}
    features = [_polygon(10 + (i % 200) * 10, 10 + (i // 200) * 60) for i in range(5_000)]
    features.append(broken)
    with pytest.raises(InvalidInput, match=r"cells.geojson: feature 5000 \('the bad one'\)"):
        _import(repository, world, features)
    assert _stored(repository) == before
    assert _audit_actions(repository) == []


def test_outside_the_slide_is_refused_or_clipped(
    repository: Repository, world: dict[str, Any], testdata: Path
) -> None:
    real = testdata / "annotations" / "qupath" / "qupath-polygon-cell-classified.json"
    with real.open("rb") as source, pytest.raises(InvalidInput, match="lies outside the slide"):
        annotating.import_annotations(
            repository, world["ann"], world["slide"], source, real.name, set_name="real"
        )
    features = [_polygon(2200, 100, size=100), _polygon(5000, 5000), _polygon(10, 10)]
    report = _import(repository, world, features, outside="clip")
    assert (report.imported, report.clipped, report.dropped) == (2, 1, 1)
    stored = list(annotating.stream_set(repository, world["ann"], report.set["id"]))
    assert max(item.geometry.bounds[2] for item in stored) == 2220  # the slide's width


def test_invalid_geometry_is_repaired_or_refused(
    repository: Repository, world: dict[str, Any]
) -> None:
    bow_tie = {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[100, 100], [200, 200], [200, 100], [100, 200], [100, 100]]],
        },
        "properties": {"name": "bow tie"},
    }
    report = _import(repository, world, [bow_tie])
    assert report.repaired == 1
    (item,) = annotating.stream_set(repository, world["ann"], report.set["id"])
    assert item.geometry.is_valid and item.shape == "multipolygon"
    assert item.geometry.area == pytest.approx(5000)
    flat = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [20, 20], [0, 0]]]},
        "properties": {"name": "flat"},
    }
    with pytest.raises(InvalidInput, match=r"feature 0 \('flat'\): invalid geometry .* cannot be"):
        _import(repository, world, [flat], set_name="flat")


@pytest.mark.parametrize("file_format", sorted(WRITERS))
def test_exports_in_every_format_import_back(
    repository: Repository, world: dict[str, Any], file_format: str
) -> None:
    features = [_polygon(100 + 60 * i, 300) for i in range(10)] + [_point(50, 50)]
    first = _import(repository, world, features)
    out = io.BytesIO()
    made = annotating.export_annotations(
        repository, world["plain"], first.set["id"], file_format, out
    )
    assert made.filename.startswith(world["slide"]) and made.size == len(out.getvalue())
    out.seek(0)
    again = annotating.import_annotations(
        repository, world["ann"], world["slide"], out, made.filename, set_name="again"
    )
    assert again.imported == 11 and again.format == file_format.replace("qupath", "geojson")
    before = [a.geometry for a in annotating.stream_set(repository, world["ann"], first.set["id"])]
    after = [a.geometry for a in annotating.stream_set(repository, world["ann"], again.set["id"])]
    assert sorted(g.wkt for g in map(shapely.normalize, before)) == sorted(
        g.wkt for g in map(shapely.normalize, after)
    )
    assert _audit_actions(repository).count("annotations.export") == 1


def test_edits_history_diff_and_revert(repository: Repository, world: dict[str, Any]) -> None:
    made = annotating.create_set(repository, world["ann"], world["slide"], "drawn")
    set_id = made["id"]
    annotating.edit(repository, world["ann"], set_id, add=[_polygon(10, 10), _point(5, 5)])
    annotating.edit(repository, world["ann"], set_id, replace={0: _polygon(500, 500)}, remove=[1])
    history = annotating.history(repository, world["ann"], set_id)
    assert [(r["number"], r["action"], r["added"], r["removed"]) for r in history] == [
        (1, "add", 2, 0),
        (2, "edit", 1, 2),
    ]
    diff = annotating.diff(repository, world["ann"], set_id, 1, 2)
    assert [f["id"] for f in diff["removed"]] == [1]
    assert diff["changed"][0]["after"]["geometry"]["coordinates"][0][0] == (500.0, 500.0)
    annotating.revert(repository, world["ann"], set_id, 1)
    now = list(annotating.stream_set(repository, world["ann"], set_id))
    assert [(a.number, a.shape) for a in now] == [(0, "polygon"), (1, "point")]
    assert now[0].geometry.bounds[:2] == (10, 10)
    with pytest.raises(InvalidInput, match=r"added feature 0: .*outside the slide"):
        annotating.edit(repository, world["ann"], set_id, add=[_point(99_999, 5)])


def test_annotators_write_only_their_own_sets_and_stewards_promote(
    repository: Repository, world: dict[str, Any]
) -> None:
    report = _import(repository, world, [_polygon(10, 10)])
    set_id = report.set["id"]
    with pytest.raises(Forbidden, match="only the owner"):
        annotating.edit(repository, world["bob"], set_id, remove=[0])
    with pytest.raises(Forbidden, match="only the owner"):
        _import(repository, world, [_point(1, 1)], who="bob", set_name="ann-cells")
    with pytest.raises(Forbidden, match="only the owner"):
        annotating.edit(repository, world["stew"], set_id, remove=[0])
    with pytest.raises(Forbidden, match="annotator or steward"):
        annotating.create_set(repository, world["plain"], world["slide"], "mine")
    with pytest.raises(Forbidden):
        annotating.promote(repository, world["ann"], set_id)
    promoted = annotating.promote(repository, world["stew"], set_id)
    assert promoted["kind"] == "reference"
    with pytest.raises(Conflict, match="reference set"):
        annotating.edit(repository, world["ann"], set_id, remove=[0])
    assert _audit_actions(repository)[0] == "annotations.promote"  # newest first
    accounts.set_policy(repository, COMMAND_LINE, DATASET, "controlled")
    with pytest.raises(NotFound):  # no grant: the slide is not there for them
        annotating.list_sets(repository, world["plain"], world["slide"])
    with pytest.raises(NotFound):
        annotating.create_set(repository, world["plain"], world["slide"], "mine")


def test_agreement_between_two_annotators(repository: Repository, world: dict[str, Any]) -> None:
    ann = _import(repository, world, [_polygon(100, 100, 100), _point(10, 10), _point(50, 50)])
    bob = _import(
        repository,
        world,
        [_polygon(150, 100, 100), _point(12, 10), _point(400, 400)],
        who="bob",
    )
    result = annotating.compare(repository, world["plain"], ann.set["id"], bob.set["id"])
    assert (result["reference_set"]["name"], result["test_set"]["name"]) == (
        "ann-cells",
        "bob-cells",
    )
    (tumor,) = result["regions"]["classes"]
    # Two trapezoids of 11,000 px² (100 px tall, 100 and 120 px wide), 50 px apart: they
    # share a trapezoid 100 px tall, 50 and 70 px wide: 6,000 px².
    assert tumor["label"] == "Tumor"
    assert tumor["intersection_area"] == pytest.approx(6_000)
    assert tumor["dice"] == pytest.approx(2 * 6_000 / 22_000)
    assert tumor["iou"] == pytest.approx(6_000 / 16_000)
    (lymphocytes,) = result["detections"]["classes"]
    assert (lymphocytes["true_positives"], lymphocytes["false_positives"]) == (1, 1)
    assert lymphocytes["f1"] == pytest.approx(0.5)


def test_the_label_schema_is_the_stewards(repository: Repository, world: dict[str, Any]) -> None:
    schema = [
        {"name": "Tumor", "color": "#FF0000", "code": "SCT:108369006"},
        {"name": "Tumor: invasive", "parent": "Tumor", "color": "#aa0000"},
    ]
    saved = annotating.set_label_schema(repository, world["stew"], DATASET, schema)
    assert [(c["name"], c["parent"], c["color"]) for c in saved] == [
        ("Tumor", None, "#ff0000"),
        ("Tumor: invasive", "Tumor", "#aa0000"),
    ]
    with pytest.raises(Forbidden):
        annotating.set_label_schema(repository, world["ann"], DATASET, schema)
    with pytest.raises(InvalidInput, match="parent 'Stroma', which is not in the schema"):
        annotating.set_label_schema(
            repository, world["stew"], DATASET, [{"name": "A", "parent": "Stroma"}]
        )
    with pytest.raises(InvalidInput, match=r"class 0 \('A'\): color must be #rrggbb"):
        annotating.set_label_schema(
            repository, world["stew"], DATASET, [{"name": "A", "color": "red"}]
        )
    assert annotating.label_schema(repository, world["plain"], DATASET) == saved


def _hidden(call: Callable[[], Any]) -> str:
    """The words of a refusal that hides the thing (or says it does not exist)."""
    with pytest.raises(NotFound) as caught:
        call()
    return str(caught.value)


def test_a_controlled_slide_or_set_is_refused_in_the_words_of_a_missing_one(
    repository: Repository, world: dict[str, Any]
) -> None:
    """Anonymous users and users without a grant learn nothing from a refusal: each use case
    answers exactly as for a slide or set that does not exist."""
    slide = world["slide"]
    own = _import(repository, world, [_point(10, 10), _point(20, 20)]).set["id"]
    other = _import(repository, world, [_point(12, 10)], who="bob").set["id"]
    accounts.set_policy(repository, COMMAND_LINE, DATASET, "controlled")
    window = Viewport(0, 0, 100, 100)
    missing_slide, missing_set = "sb-none", 999_999

    def by_slide(slide_id: str, who: Principal) -> list[Callable[[], Any]]:
        return [
            lambda: annotating.list_sets(repository, who, slide_id),
            lambda: annotating.viewport_geojson(repository, who, slide_id, window),
            lambda: annotating.count_by_label(repository, who, slide_id, window),
            lambda: annotating.density(repository, who, slide_id, window, 50),
            lambda: annotating.create_set(repository, who, slide_id, "mine"),
            lambda: annotating.check_import(repository, who, slide_id, "mine"),
            lambda: annotating.import_annotations(
                repository, who, slide_id, _geojson([_point(1, 1)]), "a.geojson", set_name="x"
            ),
            lambda: annotating.find_set(repository, who, slide_id, "ann-cells"),
        ]

    def by_set(set_id: int, who: Principal) -> list[Callable[[], Any]]:
        return [
            lambda: annotating.get_set(repository, who, set_id),
            lambda: annotating.history(repository, who, set_id),
            lambda: annotating.diff(repository, who, set_id, 0, 1),
            lambda: annotating.export_annotations(repository, who, set_id, "geojson", io.BytesIO()),
            lambda: annotating.stream_set(repository, who, set_id),
            lambda: annotating.compare(repository, who, set_id, other),
            lambda: annotating.edit(repository, who, set_id, remove=[0]),
            lambda: annotating.revert(repository, who, set_id, 0),
            lambda: annotating.promote(repository, who, set_id),
        ]

    for who in (ANONYMOUS, world["plain"]):
        for real, missing in zip(by_slide(slide, who), by_slide(missing_slide, who), strict=True):
            assert _hidden(real) == f"no slide with id {slide!r}"
            assert _hidden(missing) == f"no slide with id {missing_slide!r}"
        for real, missing in zip(by_set(own, who), by_set(missing_set, who), strict=True):
            assert _hidden(real) == f"no annotation set {own}"
            assert _hidden(missing) == f"no annotation set {missing_set}"
    assert _audit_actions(repository).count("annotations.export") == 0
    # Those who may read still read: the refusals above are the policy's, not a bug.
    assert annotating.get_set(repository, world["ann"], own)["annotations"] == 2


def test_agreement_asks_the_policy_of_both_sets_before_comparing_their_slides(
    repository: Repository, world: dict[str, Any], slides_dir: Path
) -> None:
    (secret_slide,) = ingesting.ingest_paths(
        repository, [slides_dir / "aperio" / "small-crop.svs"], "secret"
    ).outcomes
    accounts.set_policy(repository, COMMAND_LINE, "secret", "controlled")
    assert secret_slide.id is not None, secret_slide.reason
    hidden = annotating.create_set(repository, COMMAND_LINE, secret_slide.id, "hidden")["id"]
    mine = _import(repository, world, [_point(10, 10)]).set["id"]
    # Before: "the two sets annotate different slides", which said the hidden set exists.
    assert _hidden(lambda: annotating.compare(repository, world["ann"], mine, hidden)) == (
        f"no annotation set {hidden}"
    )
    with pytest.raises(InvalidInput, match="different slides"):  # sets one may read
        annotating.compare(repository, COMMAND_LINE, mine, hidden)


def test_agreement_refuses_sets_larger_than_it_holds_in_memory(
    repository: Repository, world: dict[str, Any]
) -> None:
    small = _import(repository, world, [_point(10, 10), _point(30, 30)]).set["id"]
    large = _import(repository, world, [_point(10 + i, 50) for i in range(3)], who="bob")
    large_id = large.set["id"]
    with pytest.raises(
        InvalidInput,
        match=rf"agreement: set {large_id} \('bob-cells'\) holds 3 annotations, more than the 2",
    ):
        annotating.compare(repository, world["plain"], small, large_id, limit=2)
    assert annotating.compare(repository, world["plain"], small, large_id, limit=3)["test_set"]
    assert annotating.MAX_AGREEMENT_ANNOTATIONS == 100_000


def test_reads_are_noted_for_the_audit_trail_once_allowed(
    repository: Repository, world: dict[str, Any]
) -> None:
    slide = world["slide"]
    first = _import(repository, world, [_point(10, 10)]).set["id"]
    second = _import(repository, world, [_point(11, 10)], who="bob").set["id"]
    window = Viewport(0, 0, 100, 100)
    plain = world["plain"]
    calls: list[tuple[Callable[[annotating.Reads], Any], list[str]]] = [
        (lambda r: annotating.list_sets(repository, plain, slide, reads=r), [slide]),
        (lambda r: annotating.viewport_geojson(repository, plain, slide, window, reads=r), [slide]),
        (lambda r: annotating.count_by_label(repository, plain, slide, window, reads=r), [slide]),
        (lambda r: annotating.density(repository, plain, slide, window, 50, reads=r), [slide]),
        (lambda r: annotating.get_set(repository, plain, first, reads=r), [f"{slide}/ann-cells"]),
        (lambda r: annotating.history(repository, plain, first, reads=r), [f"{slide}/ann-cells"]),
        (
            lambda r: annotating.diff(repository, plain, first, 0, 1, reads=r),
            [f"{slide}/ann-cells"],
        ),
        (
            lambda r: annotating.compare(repository, plain, first, second, reads=r),
            [f"{slide}/ann-cells", f"{slide}/bob-cells"],
        ),
    ]
    for call, targets in calls:
        reads = annotating.Reads()
        call(reads)
        assert reads.found == [(DATASET, target) for target in targets]
    accounts.set_policy(repository, COMMAND_LINE, DATASET, "controlled")
    refused = annotating.Reads()
    with pytest.raises(NotFound):
        annotating.get_set(repository, plain, first, reads=refused)
    assert refused.found == []  # nothing was read


def test_a_failed_export_is_not_audited(repository: Repository, world: dict[str, Any]) -> None:
    set_id = _import(repository, world, [_polygon(10, 10)]).set["id"]

    class Full(io.BytesIO):
        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        annotating.export_annotations(repository, world["plain"], set_id, "geojson", Full())
    assert _audit_actions(repository) == ["annotations.import"]
    annotating.export_annotations(repository, world["plain"], set_id, "geojson", io.BytesIO())
    assert _audit_actions(repository) == ["annotations.export", "annotations.import"]


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        (
            {"geometry": {"type": "LineString", "coordinates": [[0, 0]]}},
            "added feature 0: malformed geometry (IllegalArgumentException",
        ),
        (
            {"geometry": {"type": "Point", "coordinates": [math.inf, 1]}},
            "added feature 0: coordinates are not finite numbers",
        ),
        (
            {"geometry": {"type": "Point", "coordinates": [1, 1]}, "properties": {"n": math.inf}},
            "added feature 0: property 'n' is not a finite number",
        ),
        (
            {
                "geometry": {"type": "Point", "coordinates": [1, 1]},
                "properties": {"confidence": math.nan},
            },
            "added feature 0: confidence nan is not a finite number",
        ),
        (
            {
                "geometry": {"type": "Point", "coordinates": [1, 1]},
                "properties": {"a": [{"b": -math.inf}]},
            },
            "added feature 0: property 'a[0].b' is not a finite number",
        ),
    ],
)
def test_edits_that_cannot_be_stored_are_refused_naming_the_feature(
    repository: Repository, world: dict[str, Any], feature: dict[str, Any], message: str
) -> None:
    set_id = annotating.create_set(repository, world["ann"], world["slide"], "drawn")["id"]
    before = _stored(repository)
    with pytest.raises(InvalidInput) as caught:
        annotating.edit(repository, world["ann"], set_id, add=[feature])
    assert str(caught.value).startswith(message)
    assert _stored(repository) == before
    assert annotating.history(repository, world["ann"], set_id) == []


def test_imports_refuse_values_json_cannot_hold(
    repository: Repository, world: dict[str, Any]
) -> None:
    document = (
        b'{"elements": [{"type": "point", "center": [1, 2, 0]},'
        b' {"type": "point", "center": [3, 4, 0], "user": {"note": Infinity}}]}'
    )
    before = _stored(repository)
    with pytest.raises(InvalidInput, match=r"cells\.json: element 2: user property 'note' is not"):
        annotating.import_annotations(
            repository,
            world["ann"],
            world["slide"],
            io.BytesIO(document),
            "cells.json",
            set_name="dsa",
        )
    assert _stored(repository) == before


def test_a_stored_value_json_cannot_hold_is_refused_not_sent(
    repository: Repository, world: dict[str, Any]
) -> None:
    """A row written before edits and imports refused them (SQLite keeps the text as it
    came; PostgreSQL's JSON column never took one)."""
    if repository.catalogue.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's JSON column refuses Infinity itself")
    set_id = _import(repository, world, [_point(10, 10)]).set["id"]
    with repository.catalogue.transaction() as session:
        session.execute(
            text("UPDATE annotations SET properties = :p WHERE set_id = :s"),
            {"p": '{"note":Infinity}', "s": set_id},
        )
    with pytest.raises(StorageError, match="annotation 0: a stored property is not a finite"):
        annotating.viewport_geojson(
            repository, world["plain"], world["slide"], Viewport(0, 0, 100, 100)
        )


def test_numbers_beyond_64_bits_name_nothing(repository: Repository, world: dict[str, Any]) -> None:
    set_id = _import(repository, world, [_point(10, 10)]).set["id"]
    huge = 10**20
    assert _hidden(lambda: annotating.get_set(repository, world["ann"], huge)) == (
        f"no annotation set {huge}"
    )
    assert _hidden(lambda: annotating.edit(repository, world["ann"], set_id, remove=[huge])) == (
        f"annotation {huge} is not in set {set_id}"
    )
    with pytest.raises(InvalidInput, match=f"end: revision {huge} is not a revision number"):
        annotating.diff(repository, world["ann"], set_id, 0, huge)
    with pytest.raises(InvalidInput, match=f"revision: revision {huge} is not a revision"):
        annotating.export_annotations(
            repository, world["ann"], set_id, "geojson", io.BytesIO(), at=huge
        )


def test_an_import_is_checked_before_its_file_is_received(
    repository: Repository, world: dict[str, Any]
) -> None:
    slide = world["slide"]
    annotating.check_import(repository, world["ann"], slide, "new")  # allowed: no error
    with pytest.raises(Forbidden, match="annotator or steward"):
        annotating.check_import(repository, world["plain"], slide, "new")
    with pytest.raises(SignInRequired):
        annotating.check_import(repository, ANONYMOUS, slide, "new")
    bobs = _import(repository, world, [_point(1, 1)], who="bob").set["id"]
    with pytest.raises(Forbidden, match="only the owner"):
        annotating.check_import(repository, world["ann"], slide, "bob-cells")
    annotating.promote(repository, world["stew"], bobs)
    with pytest.raises(Conflict, match="reference set"):
        annotating.check_import(repository, world["bob"], slide, "bob-cells")
    assert _stored(repository)[0] == 1  # asking created nothing
