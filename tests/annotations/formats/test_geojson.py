"""QuPath and plain GeoJSON: the real QuPath exports read as they are, round trips through
both writers, streaming in bounded memory, and untrusted input refused naming the feature."""

from __future__ import annotations

import io
import itertools
import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import shapely
from shapely.geometry import shape

from slidebank.annotations.formats import geojson
from slidebank.annotations.formats.base import ExportContext, ImportLimits, LabelStyle, Parsed
from slidebank.annotations.model import Annotation
from slidebank.errors import InvalidInput

KINDS = {
    "point": "point",
    "multipoint": "multipoint",
    "line": "line",
    "polyline": "line",
    "polygon": "polygon",
    "rectangle": "rectangle",
    "ellipse": "polygon",
    "brush": "polygon",
    "wand": "polygon",
}


def _read(
    data: bytes, name: str = "file.geojson", **limits: int
) -> tuple[list[Parsed], dict[str, LabelStyle]]:
    classes: dict[str, LabelStyle] = {}
    items = list(geojson.reader.read(io.BytesIO(data), name, ImportLimits(**limits), classes))
    return items, classes


def _features(path: Path) -> list[dict[str, Any]]:
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, list) else [loaded]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_real_qupath_exports_read_exactly(testdata: Path, kind: str) -> None:
    path = testdata / "annotations" / "qupath" / f"qupath-{kind}.json"
    items, _ = _read(path.read_bytes(), path.name)
    (source,) = _features(path)
    (item,) = items
    assert item.annotation.shape == KINDS[kind]
    assert item.annotation.geometry.equals_exact(shape(source["geometry"]), 1e-9)
    assert item.annotation.properties["name"] == kind
    assert item.where == f"feature 0 ('{kind}')"
    assert geojson.reader.sniff(path.read_bytes()[:65536])


def test_classified_cells_keep_class_and_colour(testdata: Path) -> None:
    path = testdata / "annotations" / "qupath" / "qupath-polygon-cell-classified.json"
    items, classes = _read(path.read_bytes(), path.name)
    sources = _features(path)
    assert [p.annotation.label for p in items] == [
        f["properties"]["classification"]["name"] for f in sources
    ]
    assert [p.annotation.properties["name"] for p in items] == [
        "Erythrocytes 2",
        "Erythrocytes 1",
        "Neutrophils 1",
        "Neutrophils 2",
    ]
    # classification colorRGB -8397766 is ARGB 0xFF7FDC3A; the object colour is [127, 220, 58]
    assert classes == {"Cell": LabelStyle("#7fdc3a"), "Nucleus": LabelStyle("#b87343")}
    assert items[0].annotation.properties["color"] == "#7fdc3a"


@pytest.mark.parametrize("qupath", [True, False], ids=["qupath", "plain"])
def test_round_trip_through_the_writers(testdata: Path, qupath: bool) -> None:
    originals: list[Annotation] = []
    classes: dict[str, LabelStyle] = {}
    for path in sorted((testdata / "annotations" / "qupath").glob("*.json")):
        items, found = _read(path.read_bytes(), path.name)
        classes.update(found)
        originals += [p.annotation for p in items]
    cell = Annotation(
        shapely.Polygon([(0, 0), (10, 0), (12, 8), (1, 10)]),
        "polygon",
        "Tumor",
        {"object_type": "cell", "nucleus": {"type": "Point", "coordinates": [5.0, 5.0]}},
        {"Nucleus: Area": 12.5},
        0.75,
    )
    originals.append(cell)
    writer = geojson.qupath_writer if qupath else geojson.writer
    out = io.BytesIO()
    context = ExportContext("set", 30000, 30000, classes=classes)
    writer.write(
        [
            Annotation(
                a.geometry, a.shape, a.label, a.properties, a.measurements, a.confidence, number=i
            )
            for i, a in enumerate(originals)
        ],
        out,
        context,
    )
    again, again_classes = _read(out.getvalue())
    assert len(again) == len(originals)
    for before, after in zip(originals, [p.annotation for p in again], strict=True):
        assert after.geometry.equals_exact(before.geometry, 1e-9)
        assert (after.shape, after.label, after.measurements, after.confidence) == (
            before.shape,
            before.label,
            before.measurements,
            before.confidence,
        )
        assert after.properties.get("name") == before.properties.get("name")
    assert again[-1].annotation.properties["nucleus"] == cell.properties["nucleus"]
    assert again[-1].annotation.properties["object_type"] == "cell"
    if qupath:
        assert again_classes["Cell"].color == "#7fdc3a"
        parsed = json.loads(out.getvalue())
        assert parsed["features"][-1]["nucleusGeometry"]["type"] == "Point"


def test_collections_lists_single_features_and_bare_geometries() -> None:
    point = {"type": "Point", "coordinates": [1, 2]}
    feature = {"type": "Feature", "geometry": point, "properties": {"label": "x"}}
    for document in (
        {"features": [feature], "type": "FeatureCollection"},
        {"type": "FeatureCollection", "crs": {"x": 1}, "features": [feature], "name": "n"},
        [feature],
        feature,
        point,
    ):
        items, _ = _read(json.dumps(document).encode())
        assert [p.annotation.geometry.wkt for p in items] == ["POINT (1 2)"]
    holes = {
        "type": "Polygon",
        "coordinates": [
            [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
            [[2, 2], [4, 2], [4, 4], [2, 4], [2, 2]],
        ],
    }
    items, _ = _read(json.dumps(holes).encode())
    assert items[0].annotation.geometry.area == 96


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"{", "not valid JSON"),
        (b'"text"', "does not start with an object or a list"),
        (b'{"type": "Topology"}', "found type 'Topology'"),
        (b'[{"type": "Feature", "properties": {"name": "a"}}]', "feature 0 ('a'): has no geometry"),
        (
            b'[{"type": "Point", "coordinates": [0, 0]},'
            b' {"type": "GeometryCollection", "geometries": []}]',
            "feature 1: geometry type 'GeometryCollection'",
        ),
        (
            b'[{"type": "Feature", "properties": {"name": "bad"}, "geometry": '
            b'{"type": "Polygon", "coordinates": [[[0, 0], [1, "x"], [1, 1], [0, 0]]]}}]',
            "feature 0 ('bad'): malformed Polygon coordinates",
        ),
        (
            b'[{"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}]',
            "feature 0: malformed Polygon coordinates",
        ),
        (b'[{"type": "Point", "coordinates": [NaN, 1]}]', "feature 0: not valid JSON"),
        (b'[{"type": "Point", "coordinates": [1e999, 1]}]', "feature 0: not valid JSON"),
        (b'[{"type": "Point", "coordinates": [0, 0]} {"type": "Point"}]', "expected ','"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'[{"type": "Point", "coordinates": [0, 0]}, 3]', "feature 1: not a GeoJSON object"),
    ],
)
def test_bad_input_is_refused_naming_the_feature(document: bytes, message: str) -> None:
    with pytest.raises(
        InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as caught:
        _read(document, "bad.geojson")
    assert str(caught.value).startswith("bad.geojson: ")


def test_limits_are_enforced_while_reading() -> None:
    points = [{"type": "Point", "coordinates": [i, i]} for i in range(10)]
    with pytest.raises(InvalidInput, match="more than 5 annotations"):
        _read(json.dumps(points).encode(), max_annotations=5)
    ring = [[i, i % 2] for i in range(50)] + [[0, 0]]
    polygon = {"type": "Polygon", "coordinates": [ring]}
    with pytest.raises(InvalidInput, match="feature 0: 51 vertices, more than 20"):
        _read(json.dumps([polygon]).encode(), max_vertices=20)
    with pytest.raises(InvalidInput, match="larger than the import limit of 2,000 bytes"):
        _read(json.dumps(points * 20).encode(), max_bytes=2000)
    long_name = {"type": "Feature", "geometry": points[0], "properties": {"name": "n" * 100}}
    with pytest.raises(InvalidInput, match="the name is longer than 50 characters"):
        _read(json.dumps([long_name]).encode(), max_text=50)


def _collection(cells: int) -> bytes:
    parts = [b'{"type":"FeatureCollection","features":[']
    for i in range(cells):
        x, y = (i % 300) * 30.0, (i // 300) * 30.0
        ring = [[x, y], [x + 10, y], [x + 10, y + 10], [x, y + 10], [x, y]]
        feature = {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "detection", "classification": {"name": "T"}},
        }
        parts.append((b"," if i else b"") + json.dumps(feature).encode())
    parts.append(b"]}")
    return b"".join(parts)


def _peak_reading(data: bytes) -> tuple[int, float, int]:
    tracemalloc.start()
    count, area = 0, 0.0
    for parsed in geojson.reader.read(io.BytesIO(data), "big.geojson", ImportLimits(), {}):
        count += 1
        area += parsed.annotation.geometry.area
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return count, area, peak


def test_a_large_collection_streams_in_bounded_memory() -> None:
    small, large = _collection(10_000), _collection(40_000)
    count, area, small_peak = _peak_reading(small)
    assert (count, area) == (10_000, 10_000 * 100.0)
    count, area, large_peak = _peak_reading(large)
    assert (count, area) == (40_000, 40_000 * 100.0)
    # What is held at once is a window of the file and one batch: four times the features
    # do not take four times the memory.
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)
    assert large_peak < 32 * 1024 * 1024, large_peak


def _tricky_collection(cells: int) -> bytes:
    """Cells whose names hold brackets, braces, quotes and runs of backslashes: what the
    structure scan must not take for the file's own structure."""
    names = ['a "quoted" }] name', "back\\slash\\", 'end\\"', "{[", "plain"]
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [float(i), float(i % 7)]},
            "properties": {"name": f"{names[i % len(names)]} {i}", "classification": "T"},
        }
        for i in range(cells)
    ]
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def _reference_ends(window: bytes) -> tuple[list[int], list[int]]:
    """The element ends found one character at a time, as the JSON grammar reads them."""
    ends: list[int] = []
    below: list[int] = []
    depth, inside, escaped = 0, False, False
    for offset, byte in enumerate(window):
        character = chr(byte)
        if inside:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                inside = False
        elif character == '"':
            inside = True
        elif character in "{[":
            depth += 1
        elif character in "}]":
            depth -= 1
            if depth == 0:
                ends.append(offset)
            elif depth < 0:
                below.append(offset)
    return ends, below


def test_the_structure_scan_agrees_with_the_grammar_on_strings_and_escapes() -> None:
    rng = random.Random(7)
    alphabet = ["a", "\\", '"', "{", "}", "[", "]", ",", ":", "\\\\", '\\"', "é"]

    def value(depth: int = 0) -> Any:
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        kind = rng.random()
        if depth > 3 or kind < 0.3:
            return text
        if kind < 0.65:
            return {f"{text}{n}": value(depth + 1) for n in range(rng.randint(0, 3))}
        return [value(depth + 1) for _ in range(rng.randint(0, 3))]

    for _ in range(500):
        elements = [json.dumps([value()]) for _ in range(rng.randint(1, 5))]
        window = (",".join(elements) + "] ,").encode()
        ends, below = geojson._element_ends(window)
        assert (list(ends), list(below)) == _reference_ends(window), window


def test_reading_in_pieces_gives_what_reading_whole_gives() -> None:
    data = _tricky_collection(40_000)  # several windows of the reader
    assert len(data) > 3 * geojson.CHUNK
    whole, whole_classes = _read(data)
    pieces = list(geojson.reader.pieces(io.BytesIO(data), "file.geojson", ImportLimits()))
    assert len(pieces) >= 3
    assert [p.first_index for p in pieces] == [0, *itertools.accumulate(p.count for p in pieces)][
        :-1
    ]
    classes: dict[str, LabelStyle] = {}
    parts = [
        parsed
        for piece in pieces
        for parsed in geojson.reader.read_piece(piece, "file.geojson", ImportLimits(), classes)
    ]
    assert classes == whole_classes == {"T": LabelStyle()}
    assert [p.where for p in parts] == [p.where for p in whole]
    assert [p.annotation.properties["name"] for p in parts][:5] == [
        'a "quoted" }] name 0',
        "back\\slash\\ 1",
        'end\\" 2',
        "{[ 3",
        "plain 4",
    ]
    assert [p.annotation.geometry.wkb for p in parts] == [p.annotation.geometry.wkb for p in whole]
    with pytest.raises(InvalidInput, match="more than 39,999 annotations"):
        list(geojson.reader.pieces(io.BytesIO(data), "f", ImportLimits(max_annotations=39_999)))
