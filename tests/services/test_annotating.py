"""Annotation use cases on a real stored slide, on SQLite and PostgreSQL: imports that store
all or nothing, geometry repaired or refused, clipping, exports in every format, edits and
their history, ownership and promotion, agreement, the label schema, and the audit."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import shapely
from sqlalchemy import func, select

from slidebank.access.policy import COMMAND_LINE, Principal
from slidebank.annotations.formats import geojson
from slidebank.annotations.formats.registry import WRITERS
from slidebank.annotations.model import Viewport
from slidebank.catalog.annotation_tables import AnnotationRow, AnnotationSet, LabelClass
from slidebank.errors import Conflict, Forbidden, InvalidInput, NotFound
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
