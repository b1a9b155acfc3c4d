"""DSA (HistomicsUI) annotation JSON: every element type read, every shape round-tripped,
the girder wrappers, refusals naming the element, limits, and reading in bounded memory."""

from __future__ import annotations

import io
import json
import math
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from slidebank.annotations.formats import dsa
from slidebank.annotations.formats.base import ExportContext, ImportLimits, LabelStyle, Parsed
from slidebank.annotations.model import Annotation
from slidebank.errors import InvalidInput


def read(
    document: Any,
    limits: ImportLimits | None = None,
    classes: dict[str, LabelStyle] | None = None,
    filename: str = "cells.json",
) -> list[Parsed]:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    return list(
        dsa.reader.read(
            io.BytesIO(data),
            filename,
            limits or ImportLimits(),
            classes if classes is not None else {},
        )
    )


def write(items: list[Annotation], classes: dict[str, LabelStyle] | None = None) -> bytes:
    out = io.BytesIO()
    dsa.writer.write(items, out, ExportContext("My set", 50_000, 40_000, classes=classes or {}))
    return out.getvalue()


def close(a: BaseGeometry, b: BaseGeometry, tolerance: float = 1e-6) -> bool:
    return bool(a.geom_type == b.geom_type and a.hausdorff_distance(b) <= tolerance)


def refused(document: Any, limits: ImportLimits | None = None) -> str:
    with pytest.raises(InvalidInput) as caught:
        read(document, limits)
    return str(caught.value)


ALL_TYPES: dict[str, Any] = {
    "name": "Every type",
    "description": "one of each",
    "elements": [
        {"type": "point", "center": [10, 20, 0], "group": "Lymphocyte"},
        {
            "type": "polyline",
            "points": [[0, 0, 0], [100, 0, 0], [100, 100, 0], [0, 100, 0]],
            "closed": True,
            "holes": [[[10, 10, 0], [20, 10, 0], [20, 20, 0]]],
            "group": "Tumour",
            "label": {"value": "T1"},
        },
        {"type": "polyline", "points": [[0, 0, 0], [5, 5, 0], [9, 1, 0]], "closed": False},
        {"type": "polyline", "points": [[1, 1, 0], [2, 2, 0]]},
        {"type": "rectangle", "center": [50, 60, 0], "width": 40, "height": 20, "rotation": 0},
        {
            "type": "rectangle",
            "center": [50, 60, 0],
            "width": 40,
            "height": 20,
            "rotation": math.pi / 2,
        },
        {"type": "ellipse", "center": [30, 40, 0], "width": 40, "height": 20, "rotation": 0},
        {"type": "circle", "center": [30, 40, 0], "radius": 5},
        {"type": "arrow", "points": [[5, 6, 0], [-17, 6, 0]]},
        {
            "type": "rectanglegrid",
            "center": [0, 0, 0],
            "width": 10,
            "height": 10,
            "rotation": 0,
            "widthSubdivisions": 3,
            "heightSubdivisions": 4,
        },
    ],
}


def test_every_element_type_is_read() -> None:
    items = read(ALL_TYPES)
    shapes = [p.annotation.shape for p in items]
    assert shapes == [
        "point",
        "polygon",
        "line",
        "line",
        "rectangle",
        "rectangle",
        "ellipse",
        "ellipse",
        "line",
        "rectangle",
    ]
    geometries = [p.annotation.geometry for p in items]
    assert close(geometries[0], Point(10, 20))
    square = box(0, 0, 100, 100).difference(Polygon([(10, 10), (20, 10), (20, 20)]))
    assert geometries[1].symmetric_difference(square).area < 1e-9
    assert len(geometries[1].interiors) == 1
    assert close(geometries[2], LineString([(0, 0), (5, 5), (9, 1)]))
    assert geometries[4].bounds == pytest.approx((30, 50, 70, 70))
    # A quarter turn swaps the sides.
    assert geometries[5].bounds == pytest.approx((40, 40, 60, 80))
    assert geometries[6].bounds == pytest.approx((10, 30, 50, 50))
    assert len(geometries[6].exterior.coords) == dsa.ELLIPSE_VERTICES + 1
    assert geometries[7].bounds == pytest.approx((25, 35, 35, 45))
    assert close(geometries[8], LineString([(5, 6), (-17, 6)]))
    assert geometries[9].bounds == pytest.approx((-5, -5, 5, 5))
    assert [p.annotation.label for p in items[:3]] == ["Lymphocyte", "Tumour", None]
    assert items[1].annotation.properties == {"name": "T1"}
    assert items[1].where == "element 2 ('T1')"
    assert items[2].where == "element 3"


def test_rotation_turns_x_towards_y_in_pixel_coordinates() -> None:
    element = {"type": "rectangle", "center": [0, 0, 0], "width": 2, "height": 0, "rotation": 0.5}
    (item,) = read({"elements": [element]})
    corners = list(item.annotation.geometry.exterior.coords)[:4]
    # The right end of the (flat) rectangle turned by 0.5 rad: (cos, sin), y down.
    assert corners[1] == pytest.approx((math.cos(0.5), math.sin(0.5)))


def test_classes_and_colours() -> None:
    classes: dict[str, LabelStyle] = {"Known": LabelStyle(code="SCT:4421005")}
    document = {
        "elements": [
            {"type": "point", "center": [1, 1, 0], "group": "Tumour", "lineColor": "rgb(255,0,0)"},
            {"type": "point", "center": [2, 2, 0], "group": "Tumour", "lineColor": "#f00"},
            {"type": "point", "center": [3, 3, 0], "group": "Tumour", "lineColor": "#00FF00"},
            {
                "type": "point",
                "center": [4, 4, 0],
                "group": "Known",
                "fillColor": "rgba(0, 0, 255, 0.5)",
            },
            {"type": "point", "center": [5, 5, 0], "lineColor": "rgb(1, 2, 3)"},
            {"type": "point", "center": [6, 6, 0], "group": "Plain", "lineColor": "red"},
        ]
    }
    items = read(document, classes=classes)
    assert classes == {
        "Tumour": LabelStyle(color="#ff0000"),
        "Known": LabelStyle(color="#0000ff", code="SCT:4421005"),
        "Plain": LabelStyle(),
    }
    colours = [p.annotation.properties.get("color") for p in items]
    # Only a colour apart from the class's is the object's own; a colour that is not one is
    # ignored.
    assert colours == [None, None, "#00ff00", None, "#010203", None]


def test_parse_colour() -> None:
    assert dsa.parse_colour("#AbC") == "#aabbcc"
    assert dsa.parse_colour("#11223344") == "#112233"
    assert dsa.parse_colour("rgba(300, 0, 12.6, 1)") == "#ff000d"
    assert dsa.parse_colour("hsl(0, 0%, 0%)") is None
    assert dsa.parse_colour(7) is None


def test_user_properties_measurements_and_confidence() -> None:
    element = {
        "type": "point",
        "center": [1, 2, 0],
        "user": {"score": [1, 2], "measurements": {"area": 3.5}, "confidence": 0.25, "x": "y"},
    }
    (item,) = read({"elements": [element]})
    assert item.annotation.properties == {"score": [1, 2], "x": "y"}
    assert item.annotation.measurements == {"area": 3.5}
    assert item.annotation.confidence == 0.25
    # Not of the writer's convention: kept as properties.
    element["user"] = {"measurements": {"area": "big"}, "confidence": "high"}
    (item,) = read({"elements": [element]})
    assert item.annotation.properties == {"measurements": {"area": "big"}, "confidence": "high"}


ROUND_TRIP = [
    Annotation(Point(10.5, 20.25), "point", "Lymphocyte", properties={"name": "L1"}),
    Annotation(LineString([(0, 0), (5.5, 5), (9, 1)]), "line", "Margin"),
    Annotation(
        Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [[(10, 10), (20, 10), (20, 20)]]),
        "polygon",
        "Tumour",
        properties={"name": "T1", "color": "#123456", "note": {"a": [1, 2]}},
        measurements={"area": 9950.0},
        confidence=0.5,
    ),
    Annotation(
        Polygon(dsa.box_corners(50, 60, 40, 20, 0.3)), "rectangle", "Box", properties={"k": 1}
    ),
    Annotation(box(10, 20, 30, 25), "rectangle", "Box"),
    Annotation(Polygon(dsa.box_corners(5, 6, 4, 2, 2.0)), "rectangle", None),
    Annotation(dsa.ellipse_polygon(30, 40, 40, 20, -1.0), "ellipse", "Nucleus"),
    Annotation(dsa.ellipse_polygon(30, 40, 10, 10, 0.0), "ellipse", "Nucleus"),
    Annotation(dsa.ellipse_polygon(30, 40, 10, 30, 0.7), "ellipse", None),
]


def test_round_trip_of_every_shape() -> None:
    classes = {"Tumour": LabelStyle(color="#ff0000"), "Margin": LabelStyle(color="#00ff00")}
    data = write(ROUND_TRIP, classes)
    document = json.loads(data)
    assert document["name"] == "My set"
    assert [e["type"] for e in document["elements"]] == [
        "point",
        "polyline",
        "polyline",
        "rectangle",
        "rectangle",
        "rectangle",
        "ellipse",
        "ellipse",
        "ellipse",
    ]
    assert document["elements"][4]["rotation"] == 0
    # Read back where the classes are known (as on import into the same repository).
    read_classes = dict(classes)
    back = [p.annotation for p in read(data, classes=read_classes)]
    assert len(back) == len(ROUND_TRIP)
    for original, copy in zip(ROUND_TRIP, back, strict=True):
        assert close(original.geometry, copy.geometry), (original, copy)
        assert (copy.shape, copy.label) == (original.shape, original.label)
        assert copy.properties == original.properties
        assert copy.measurements == original.measurements
        assert copy.confidence == original.confidence
    assert read_classes == {
        **classes,
        **{c: LabelStyle() for c in ("Lymphocyte", "Box", "Nucleus")},
    }
    # The margin's line is written in its class colour.
    assert document["elements"][1]["lineColor"] == "#00ff00"
    # DSA has no class colours: read afresh, a class takes its first object's colour.
    fresh: dict[str, LabelStyle] = {}
    back = [p.annotation for p in read(data, classes=fresh)]
    assert fresh["Tumour"].color == "#123456"
    assert "color" not in back[2].properties


def test_multi_part_shapes_are_written_one_element_per_part() -> None:
    items = [
        Annotation(MultiPoint([(1, 1), (2, 3)]), "multipoint", "Mitosis"),
        Annotation(MultiPolygon([box(0, 0, 1, 1), box(5, 5, 7, 7)]), "multipolygon", "Tumour"),
        Annotation(Polygon(), "polygon", "Empty"),
    ]
    back = [p.annotation for p in read(write(items))]
    assert [(a.shape, a.label) for a in back] == [
        ("point", "Mitosis"),
        ("point", "Mitosis"),
        ("polygon", "Tumour"),
        ("polygon", "Tumour"),
    ]
    assert close(back[1].geometry, Point(2, 3))
    assert close(back[3].geometry, box(5, 5, 7, 7))


def test_writer_refuses_what_json_cannot_hold() -> None:
    item = Annotation(Point(1, 1), "point", properties={"bad": float("nan")})
    with pytest.raises(InvalidInput, match="annotation 1: a property cannot be written"):
        write([item])


def test_wrapped_forms() -> None:
    inner = {"name": "a", "elements": ALL_TYPES["elements"][:2]}
    plain = read(inner)
    assert len(plain) == 2
    # Girder's wrapper, with its other fields around the annotation (before and after).
    wrapped = {"_id": "0" * 24, "annotation": inner, "itemId": "1" * 24, "public": False}
    assert [p.where for p in read(wrapped)] == [p.where for p in plain]
    # A list of documents, plain or wrapped; elements before the name.
    reordered = {"elements": inner["elements"], "name": "b", "attributes": {"x": [1, {}]}}
    items = read([wrapped, reordered, {"annotation": {"elements": []}}])
    assert [p.where for p in items] == [
        "annotation 1: element 1",
        "annotation 1: element 2 ('T1')",
        "annotation 2: element 1",
        "annotation 2: element 2 ('T1')",
    ]
    for a, b in zip(items[:2], items[2:], strict=True):
        assert close(a.annotation.geometry, b.annotation.geometry)
    assert read({"elements": []}) == []
    assert read([]) == []


def test_sniff() -> None:
    assert dsa.reader.sniff(json.dumps(ALL_TYPES).encode())
    assert dsa.reader.sniff(b'\xef\xbb\xbf  {"name": "x", "elements": []}')
    assert dsa.reader.sniff(b'[{"_id": "abc", "annotation": {"name": "x"')
    assert dsa.reader.sniff(b'{"elements": [{"group": "x", "type": "polyline", "points": [')
    assert not dsa.reader.sniff(b'{"type": "FeatureCollection", "features": []}')
    # large_image's GeoJSON export puts the annotation in its first feature's properties.
    geojson = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {"annotation": {"name": "x"}}}],
    }
    assert not dsa.reader.sniff(json.dumps(geojson).encode())
    # A first element longer than the head.
    big = {"name": "x", "elements": [{"type": "polyline", "points": [[1, 2, 0]] * 20_000}]}
    assert dsa.reader.sniff(json.dumps(big).encode()[:65_536])
    assert not dsa.reader.sniff(b'{"name": "x", "attributes": {"a": "' + b"x" * 70_000)
    # OpenStreetMap's JSON has "elements" too.
    assert not dsa.reader.sniff(b'{"version": 0.6, "elements": [{"type": "node", "id": 1}]}')
    assert not dsa.reader.sniff(b"<ASAP_Annotations>")
    assert not dsa.reader.sniff(b"\0" * 128 + b"DICM")


@pytest.mark.parametrize(
    ("element", "message"),
    [
        ({"type": "polyline", "points": [[1, 2, 0]]}, "polyline has 1 point"),
        ({"type": "polyline", "points": []}, "polyline has 0 points"),
        (
            {"type": "polyline", "points": [[1, 2, 0], [3, 4, 0]], "closed": True},
            "closed polyline has 2 points (it needs 3)",
        ),
        ({"type": "polyline", "points": [[1, 2, 0], [3, 4, 0]], "closed": "yes"}, "closed is"),
        (
            {
                "type": "polyline",
                "points": [[0, 0, 0], [1, 0, 0], [1, 1, 0]],
                "closed": True,
                "holes": [[[0, 0, 0], [1, 1, 0]]],
            },
            "hole 1 has 2 points",
        ),
        ({"type": "point"}, "center is not a coordinate"),
        ({"type": "point", "center": [1, "2", 0]}, "center has a value that is not a number"),
        ({"type": "point", "center": [1, True, 0]}, "center has a value that is not a number"),
        ({"type": "point", "center": [1, 2, 0], "group": 5}, "group is not a string"),
        ({"type": "point", "center": [1, 2, 0], "label": "x"}, "label is not an object"),
        ({"type": "point", "center": [1, 2, 0], "user": []}, "user is not an object"),
        (
            {"type": "polyline", "points": [[0, 0, 0], [1, "x", 0]]},
            "points 2 has a value that is not a number",
        ),
        ({"type": "rectangle", "center": [1, 2, 0], "width": -1, "height": 2}, "width is negative"),
        ({"type": "ellipse", "center": [1, 2, 0], "width": 1}, "height is not a number"),
        ({"type": "circle", "center": [1, 2, 0]}, "radius is not a number"),
        ({"type": "arrow", "points": [[0, 0, 0], [1, 1, 0], [2, 2, 0]]}, "arrow has 3 points"),
        ({"type": "heatmap", "points": []}, "type 'heatmap' is not an annotation of a region"),
        ({"type": "star"}, "unknown type 'star'"),
        ({"center": [1, 2, 0]}, 'has no "type"'),
        ([1, 2], "is not a JSON object"),
    ],
)
def test_bad_elements_are_refused_naming_them(element: Any, message: str) -> None:
    good = {"type": "point", "center": [0, 0, 0]}
    text = refused({"name": "x", "elements": [good, good, element]})
    assert text.startswith("cells.json: element 3: "), text
    assert message in text


def test_non_finite_coordinates_are_refused() -> None:
    text = refused(b'{"elements": [{"type": "point", "center": [NaN, 1, 0]}]}')
    assert text == "cells.json: element 1: center is not finite"
    text = refused(b'{"elements": [{"type": "point", "center": [1e400, 1, 0]}]}')
    assert text == "cells.json: element 1: center is not finite"


@pytest.mark.parametrize(
    ("user", "name"),
    [
        (b'{"note": Infinity}', "note"),
        (b'{"score": [1, NaN]}', "score[1]"),
        (b'{"measurements": {"area": 1e400}}', "measurements.area"),
        (b'{"confidence": -Infinity}', "confidence"),
    ],
)
def test_non_finite_user_properties_are_refused(user: bytes, name: str) -> None:
    # Python's JSON decoder reads these; stored, they made every viewport answer over the
    # annotation invalid JSON and the set's DSA export fail.
    data = b'{"elements": [{"type": "point", "center": [1, 2, 0], "user": ' + user + b"}]}"
    assert refused(data) == f"cells.json: element 1: user property {name!r} is not a finite number"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b'{"elements": [{"type": "point", "center": [1, 2, 0]}, {"type": ]}',
            "element 2: invalid JSON",
        ),
        (b'{"elements": [{"type": "point", "center": [1, 2, 0]}', "expected ']'"),
        (b'{"elements": [{"type": "point", "center": [1, 2', "element 1: invalid JSON"),
        (b'{"elements": [] } trailing', "unexpected content after the JSON document"),
        (b'{"elements": {}}', '"elements" is not a list'),
        (b'{"name": "no elements"}', 'the document: has no "elements"'),
        (b'[{"elements": []}, {"annotation": {"name": "x"}}]', 'annotation 2: has no "elements"'),
        (b'[{"elements": []}, 7]', "annotation 2: is not a JSON object"),
        (b'"just a string"', "is not a DSA annotation document"),
        (b"", "is not a DSA annotation document"),
        (b'{"name": "caf\xe9", "elements": []}', "is not UTF-8 text (at byte offset 13)"),
        (b'{"elements": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nested too deeply"),
    ],
)
def test_bad_documents_are_refused(data: bytes, message: str) -> None:
    text = refused(data)
    assert text.startswith("cells.json: "), text
    assert message in text, text


def test_limits() -> None:
    points = {"elements": [{"type": "point", "center": [i, i, 0]} for i in range(5)]}
    assert len(read(points, ImportLimits(max_annotations=5))) == 5
    text = refused(points, ImportLimits(max_annotations=4))
    assert text == "cells.json: element 5: more than 4 annotations"

    polygon = {
        "type": "polyline",
        "closed": True,
        "points": [[0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 10, 0]],
        "holes": [[[1, 1, 0], [2, 1, 0], [2, 2, 0]]],
    }
    assert len(read({"elements": [polygon]}, ImportLimits(max_vertices=7))) == 1
    text = refused({"elements": [polygon]}, ImportLimits(max_vertices=6))
    assert text == "cells.json: element 1: has more than 6 vertices"
    text = refused({"elements": [polygon]}, ImportLimits(max_vertices=3))
    assert text == "cells.json: element 1: points has more than 3 vertices"

    named: dict[str, Any] = {"type": "point", "center": [0, 0, 0], "group": "x" * 11}
    text = refused({"elements": [named]}, ImportLimits(max_text=10))
    assert text == "cells.json: element 1: group is longer than 10 characters"
    named = {"type": "point", "center": [0, 0, 0], "label": {"value": "y" * 11}}
    assert "label value is longer than 10" in refused(
        {"elements": [named]}, ImportLimits(max_text=10)
    )
    named = {"type": "point", "center": [0, 0, 0], "user": {"notes": ["z" * 20]}}
    assert "user property 'notes' is longer" in refused(
        {"elements": [named]}, ImportLimits(max_text=10)
    )

    data = json.dumps(points).encode()
    assert len(read(data, ImportLimits(max_bytes=len(data)))) == 5
    text = refused(data, ImportLimits(max_bytes=len(data) - 1))
    assert text == f"cells.json: is larger than the limit of {len(data) - 1} bytes"


def test_pieces_split_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny reads cut numbers, strings, keywords and UTF-8 characters apart."""
    document = {
        "name": "Zellen ä 漢字",
        "attributes": {"long": "x" * 100, "flag": True, "none": None},
        "elements": [
            *ALL_TYPES["elements"],
            {"type": "point", "center": [123456.789, 1e-3, 0], "group": "Ä" * 30},
        ],
    }
    data = "\ufeff".encode() + json.dumps(document, ensure_ascii=False, indent=1).encode()
    whole = read(data)
    for size in (1, 2, 3, 7):
        monkeypatch.setattr(dsa, "_CHUNK", size)
        pieces = read(data)
        assert [p.where for p in pieces] == [p.where for p in whole]
        for a, b in zip(pieces, whole, strict=True):
            assert a.annotation.geometry.equals_exact(b.annotation.geometry, 0)
            assert a.annotation.label == b.annotation.label
    assert whole[-1].annotation.geometry.coords[0] == (123456.789, 1e-3)


def test_large_file_reads_in_bounded_memory(tmp_path: Path) -> None:
    count = 200_000
    path = tmp_path / "points.json"
    with path.open("w") as out:
        out.write('{"name": "cells", "elements": [\n')
        for i in range(count):
            element = {
                "type": "point",
                "center": [i % 5000 + 0.5, i // 5000 + 0.25, 0],
                "group": "Lymphocyte" if i % 3 else "Tumour cell",
                "lineColor": "rgb(255, 0, 0)",
                "label": {"value": f"cell {i}"},
            }
            out.write(("," if i else "") + json.dumps(element) + "\n")
        out.write("]}\n")
    size = path.stat().st_size

    tracemalloc.start()
    started = time.perf_counter()
    try:
        seen = 0
        with path.open("rb") as source:
            for parsed in dsa.reader.read(source, path.name, ImportLimits(), {}):
                seen += 1
                last = parsed
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    assert seen == count
    assert last.where == f"element {count} ('cell {count - 1}')"
    print(
        f"\nDSA: {count} points, {size / 1e6:.1f} MB file, read in {elapsed:.1f} s "
        f"(under tracemalloc), peak traced memory {peak / 1e6:.1f} MB"
    )
    # One read chunk (1 MiB) as text plus one element, far below the file and its objects.
    assert peak < 8_000_000
    assert peak < size / 2
