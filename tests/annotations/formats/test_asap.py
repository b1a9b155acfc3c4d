"""ASAP XML: the real files of ../shared/testdata read exactly, round trips, what the writer
cannot say, refused XML, limits, bad coordinates, and a large file in bounded memory."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path

import pytest
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon, box

from slidebank.annotations.formats import asap
from slidebank.annotations.formats.base import ExportContext, ImportLimits, LabelStyle
from slidebank.annotations.model import Annotation
from slidebank.errors import InvalidInput
from tests.annotations.formats import xml_cases

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def asap_dir(testdata: Path) -> Path:
    return testdata / "annotations" / "asap"


read = xml_cases.reading(asap.reader)


def write(items: list[Annotation], classes: dict[str, LabelStyle] | None = None) -> bytes:
    out = io.BytesIO()
    asap.writer.write(items, out, ExportContext("set", 100_000, 100_000, classes=classes or {}))
    return out.getvalue()


def document(*annotations: str, groups: str = "") -> bytes:
    return (
        '<?xml version="1.0"?>\n<ASAP_Annotations><Annotations>'
        + "".join(annotations)
        + f"</Annotations><AnnotationGroups>{groups}</AnnotationGroups></ASAP_Annotations>"
    ).encode()


def annotation(
    kind: str,
    coordinates: Sequence[tuple[object, object]],
    name: str = "Annotation 0",
    group: str = "None",
) -> str:
    rows = "".join(
        f'<Coordinate Order="{i}" X="{x}" Y="{y}" />' for i, (x, y) in enumerate(coordinates)
    )
    return (
        f'<Annotation Name="{name}" Type="{kind}" PartOfGroup="{group}" Color="#F4FA58">'
        f"<Coordinates>{rows}</Coordinates></Annotation>"
    )


# --- the real files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["asap-dot.xml", "asap-pointset.xml", "asap-polygon.xml"])
def test_sniff_recognises_the_real_files(asap_dir: Path, name: str) -> None:
    assert asap.reader.sniff((asap_dir / name).read_bytes()[: 64 * 1024])


def test_sniff_refuses_other_documents() -> None:
    assert not asap.reader.sniff(b'<?xml version="1.0"?>\n<Annotations><Annotation/>')
    assert not asap.reader.sniff(b'{"type": "FeatureCollection"}')
    assert not asap.reader.sniff(b"")
    assert asap.reader.sniff(b"\xef\xbb\xbf<!-- made by hand -->\n<ASAP_Annotations>")
    assert asap.reader.sniff('<?xml version="1.0"?><ASAP_Annotations/>'.encode("utf-16"))


def test_reads_the_real_dot(asap_dir: Path) -> None:
    classes: dict[str, LabelStyle] = {}
    [item] = read((asap_dir / "asap-dot.xml").read_bytes(), "asap-dot.xml", classes=classes)
    assert item.where == "annotation 1 ('Annotation 0')"
    assert item.annotation.shape == "point"
    assert item.annotation.label is None
    assert item.annotation.properties == {"name": "Annotation 0", "color": "#f4fa58"}
    assert item.annotation.geometry.equals_exact(Point(23071.5605, 16831.0098), 0)
    assert classes == {}


def test_reads_the_real_pointset(asap_dir: Path) -> None:
    [item] = read((asap_dir / "asap-pointset.xml").read_bytes())
    assert item.annotation.shape == "multipoint"
    assert item.annotation.label is None
    assert item.annotation.properties == {"name": "Annotation 0", "color": "#f4fa58"}
    expected = MultiPoint(
        [
            (22793.7832, 16650.8945),
            (22746.7793, 16708.4414),
            (22819.2598, 16718.9844),
            (22828.0449, 16681.2051),
            (22798.1738, 16682.5234),
        ]
    )
    assert item.annotation.geometry.equals_exact(expected, 0)


def test_reads_the_real_polygon(asap_dir: Path) -> None:
    [item] = read((asap_dir / "asap-polygon.xml").read_bytes())
    assert item.annotation.shape == "polygon"
    assert item.annotation.label is None
    assert item.annotation.properties == {"name": "Annotation 0", "color": "#f4fa58"}
    vertices = [
        (22851.3281, 16551.1797),
        (22693.1875, 16669.7832),
        (22911.5078, 16710.6367),
        (22934.3516, 16636.3984),
        (23067.4531, 16621.4629),
        (22954.1191, 16565.2363),
    ]
    assert list(item.annotation.geometry.exterior.coords) == [*vertices, vertices[0]]


@pytest.mark.parametrize("name", ["asap-dot.xml", "asap-pointset.xml", "asap-polygon.xml"])
def test_real_files_round_trip(asap_dir: Path, name: str) -> None:
    first = read((asap_dir / name).read_bytes())
    again = read(write([item.annotation for item in first]))
    assert len(again) == len(first)
    for before, after in zip(first, again, strict=True):
        assert after.annotation.geometry.equals_exact(before.annotation.geometry, TOLERANCE)
        assert after.annotation.shape == before.annotation.shape
        assert after.annotation.label == before.annotation.label
        assert after.annotation.properties == before.annotation.properties


# --- round trips of what ASAP can say ---------------------------------------------------


def test_round_trip_keeps_geometry_labels_colours_and_names() -> None:
    items = [
        Annotation(
            Polygon([(0, 0), (10.25, 0), (10.25, 7.125), (0, 7)]),
            "polygon",
            "Tumor",
            {"name": "tumour 1", "color": "#123abc"},
        ),
        Annotation(box(100, 200, 300, 400), "rectangle", "Stroma", {"name": "box"}),
        Annotation(Point(1 / 3, 2 / 3), "point", "Lymphocyte", {"name": "cell"}),
        Annotation(MultiPoint([(5, 5), (6, 7.5)]), "multipoint", None, {"name": "pts"}),
        Annotation(LineString([(0, 0), (1e5, 3.5)]), "line", "Tumor", {"name": "ruler"}),
    ]
    classes = {
        "Tumor": LabelStyle(color="#ff0000"),
        "Stroma": LabelStyle(color="#00aa00", code="SCT:1"),
        "Lymphocyte": LabelStyle(),
    }
    read_classes: dict[str, LabelStyle] = {}
    again = read(write(items, classes), classes=read_classes)
    assert [item.annotation.shape for item in again] == [
        "polygon",
        "rectangle",
        "point",
        "multipoint",
        "line",
    ]
    for before, after in zip(items, again, strict=True):
        assert after.annotation.geometry.equals_exact(before.geometry, TOLERANCE)
        assert after.annotation.label == before.label
        assert after.annotation.properties == before.properties
    assert read_classes == {
        "Tumor": LabelStyle(color="#ff0000"),
        "Stroma": LabelStyle(color="#00aa00"),
        "Lymphocyte": LabelStyle(),
    }


def test_group_colour_keeps_a_known_code_and_the_first_group_wins() -> None:
    data = document(
        annotation("Dot", [(1, 2)], group="Tumor"),
        groups='<Group Name="Tumor" PartOfGroup="None" Color="#64FE2E"><Attributes/></Group>'
        '<Group Name="Tumor" PartOfGroup="None" Color="#000000"><Attributes/></Group>'
        '<Group Name="Empty" PartOfGroup="None"><Attributes/></Group>',
    )
    classes = {"Tumor": LabelStyle(color="#ffffff", code="SCT:108369006")}
    [item] = read(data, classes=classes)
    assert item.annotation.label == "Tumor"
    assert classes == {
        "Tumor": LabelStyle(color="#64fe2e", code="SCT:108369006"),
        "Empty": LabelStyle(),
    }


def test_names_and_classes_are_escaped() -> None:
    name = "a \"quoted\" <name> & 'more'\nsecond line\ttab"
    items = [Annotation(Point(1, 2), "point", 'Class <"&">', {"name": name})]
    data = write(items, {'Class <"&">': LabelStyle(color="#0000ff")})
    classes: dict[str, LabelStyle] = {}
    [item] = read(data, classes=classes)
    assert item.annotation.properties["name"] == name
    assert item.annotation.label == 'Class <"&">'
    assert classes == {'Class <"&">': LabelStyle(color="#0000ff")}


def test_characters_xml_cannot_hold_are_replaced() -> None:
    items = [Annotation(Point(1, 2), "point", None, {"name": "bell\x07 and \ud800"})]
    [item] = read(write(items))
    assert item.annotation.properties["name"] == "bell\ufffd and \ufffd"


def test_unnamed_annotations_get_asap_names() -> None:
    items = [Annotation(Point(1, 2), "point"), Annotation(Point(3, 4), "point")]
    again = read(write(items))
    assert [item.annotation.properties["name"] for item in again] == [
        "Annotation 0",
        "Annotation 1",
    ]


def test_the_writer_streams_its_input() -> None:
    def generated() -> Iterator[Annotation]:
        for i in range(1000):
            yield Annotation(Point(i, i), "point", "cells")

    assert len(read(write(list(generated())))) == 1000
    out = io.BytesIO()
    asap.writer.write(generated(), out, ExportContext("set", 10, 10))
    assert out.getvalue().startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<ASAP_Annotations>')


# --- what ASAP cannot say ---------------------------------------------------------------


def test_multipolygon_with_holes_becomes_exterior_polygons_with_a_comment() -> None:
    first = Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (4, 2), (4, 4)]])
    second = Polygon([(20, 0), (30, 0), (30, 10)])
    data = write([Annotation(MultiPolygon([first, second]), "multipolygon", "T", {"name": "m"})])
    assert re.search(
        rb"<!-- slidebank: a multipolygon written as 2 Polygon annotations; "
        rb"1 hole\(s\) dropped \(ASAP polygons have none\) -->",
        data,
    )
    again = read(data)
    assert [item.annotation.shape for item in again] == ["polygon", "polygon"]
    assert again[0].annotation.geometry.equals_exact(Polygon(first.exterior), TOLERANCE)
    assert again[1].annotation.geometry.equals_exact(second, TOLERANCE)
    assert {item.annotation.properties["name"] for item in again} == {"m"}


def test_polyline_becomes_measurement_segments() -> None:
    line = LineString([(0, 0), (10, 0), (10, 5)])
    data = write([Annotation(line, "line", "T", {"name": "path"})])
    assert b"a line written as 2 Measurement segments" in data
    again = read(data)
    assert [item.annotation.geometry.coords[:] for item in again] == [
        [(0, 0), (10, 0)],
        [(10, 0), (10, 5)],
    ]


def test_ellipse_becomes_its_polygon_and_a_rotated_rectangle_a_polygon() -> None:
    ellipse = Point(50, 50).buffer(10, quad_segs=16)
    diamond = Polygon([(0, 5), (5, 0), (10, 5), (5, 10)])
    data = write([Annotation(ellipse, "ellipse"), Annotation(diamond, "rectangle")])
    assert b"an ellipse written as its polygon (ASAP has no ellipse)" in data
    again = read(data)
    assert [item.annotation.shape for item in again] == ["polygon", "polygon"]
    assert again[0].annotation.geometry.equals_exact(ellipse, TOLERANCE)
    assert again[1].annotation.geometry.equals_exact(diamond, TOLERANCE)


def test_empty_geometry_is_noted_not_written() -> None:
    data = write([Annotation(Polygon(), "polygon"), Annotation(Point(1, 1), "point")])
    assert b"<!-- slidebank: an empty geometry, not written -->" in data
    assert len(read(data)) == 1


# --- reading rules ----------------------------------------------------------------------


def test_coordinates_are_put_in_order_and_closing_vertex_dropped() -> None:
    rows = (
        '<Coordinate Order="2" X="10" Y="10"/><Coordinate Order="0" X="0" Y="0"/>'
        '<Coordinate Order="1" X="10" Y="0"/><Coordinate Order="3" X="0" Y="0"/>'
    )
    data = document(
        f'<Annotation Name="a" Type="Spline" PartOfGroup="None">'
        f"<Coordinates>{rows}</Coordinates></Annotation>"
    )
    [item] = read(data)
    assert item.annotation.shape == "polygon"
    assert item.annotation.properties == {"name": "a"}
    assert list(item.annotation.geometry.exterior.coords) == [(0, 0), (10, 0), (10, 10), (0, 0)]


def test_decimal_comma_and_two_corner_rectangles_are_read() -> None:
    data = document(annotation("Rectangle", [("10,5", "20"), ("0", "2,25")]))
    [item] = read(data)
    assert item.annotation.shape == "rectangle"
    assert item.annotation.geometry.equals(box(0, 2.25, 10.5, 20))


def test_not_asap_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"^x\.xml: the root element is <Annotations>"):
        read(b"<Annotations/>", "x.xml")


@pytest.mark.parametrize(
    ("coordinates", "message"),
    [
        ([(1, 2), (3, "abc"), (4, 5)], "coordinate 2: Y is not a number: 'abc'"),
        ([(1, 2), ("nan", 3), (4, 5)], "coordinate 2: X is not a finite number: 'nan'"),
        ([(1, 2), (3, 4), ("-inf", 5)], "coordinate 3: X is not a finite number: '-inf'"),
        ([(1, 2), (3, "1e999"), (4, 5)], "coordinate 2: Y is not a finite number: '1e999'"),
        ([(1, 2), (" ", 3), (4, 5)], "coordinate 2: X is not a number: ' '"),
        ([(1, 2), (3, 4)], "a Polygon needs at least 3 vertices, this one has 2"),
    ],
)
def test_malformed_coordinates_are_refused_naming_the_annotation(
    coordinates: Sequence[tuple[object, object]], message: str
) -> None:
    data = document(
        annotation("Dot", [(0, 0)], name="first"),
        annotation("Polygon", coordinates, name="Annotation 0"),
    )
    assert xml_cases.refusal(read, data, "asap-polygon.xml") == (
        f"asap-polygon.xml: annotation 2 ('Annotation 0'): {message}"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (annotation("Dot", [(1, 2), (3, 4)]), "a Dot has one coordinate, this one has 2"),
        (annotation("Ellipse", [(1, 2), (3, 4)]), "Type 'Ellipse' is not an ASAP annotation"),
        (annotation("Measurement", [(1, 2)]), "a Measurement needs 2 coordinates"),
        (annotation("PointSet", []), "a PointSet without coordinates"),
        (
            '<Annotation Name="Annotation 0" Type="Dot"><Coordinates>'
            '<Coordinate Order="0" X="1" Y="2"/><Coordinate Order="0" X="1" Y="2"/>'
            "</Coordinates></Annotation>",
            "coordinate 2: Order 0 is given twice",
        ),
        (
            '<Annotation Name="Annotation 0" Type="Dot"><Coordinates>'
            '<Coordinate Order="first" X="1" Y="2"/></Coordinates></Annotation>',
            "coordinate 1: Order is not a whole number: 'first'",
        ),
        (
            '<Annotation Name="Annotation 0" Type="Dot"><Coordinates>'
            f'<Coordinate Order="{"9" * 5000}" X="1" Y="2"/></Coordinates></Annotation>',
            "coordinate 1: Order is not a whole number: '99999",
        ),
        (
            '<Annotation Name="Annotation 0" Type="Dot"><Coordinates>'
            '<Coordinate Order="0" Y="2"/></Coordinates></Annotation>',
            "coordinate 1: X is missing",
        ),
        (
            '<Annotation Name="Annotation 0" Type="Dot" Color="red"><Coordinates>'
            '<Coordinate Order="0" X="1" Y="2"/></Coordinates></Annotation>',
            "Color is not #rrggbb: 'red'",
        ),
    ],
)
def test_impossible_annotations_are_refused(body: str, message: str) -> None:
    assert xml_cases.refusal(read, document(body), "bad.xml").startswith(
        f"bad.xml: annotation 1 ('Annotation 0'): {message}"
    )


# --- hostile XML ------------------------------------------------------------------------

HOSTILE = xml_cases.hostile_documents(
    asap.ROOT, lambda name: document(annotation("Dot", [(1, 2)], name=name))
)


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_entity_declarations_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"^evil\.xml: XML document type declarations"):
        read(data, "evil.xml")


def test_malformed_xml_is_refused_naming_the_file() -> None:
    data = document(annotation("Dot", [(1, 2)]))[:-20]
    with pytest.raises(InvalidInput, match=r"^cut\.xml: not well-formed XML: .*line 2"):
        read(data, "cut.xml")


# --- limits -----------------------------------------------------------------------------


def test_too_many_annotations_are_refused_naming_the_first_one_over() -> None:
    data = document(*(annotation("Dot", [(i, i)], name=f"Annotation {i}") for i in range(3)))
    assert len(read(data, limits=ImportLimits(max_annotations=3))) == 3
    assert xml_cases.refusal(read, data, "many.xml", ImportLimits(max_annotations=2)) == (
        "many.xml: annotation 3 ('Annotation 2'): more than 2 annotations in one file"
    )


def test_too_many_vertices_are_refused_naming_the_annotation() -> None:
    square = [(0, 0), (1, 0), (1, 1), (0, 1)]
    data = document(annotation("Polygon", square, name="small"), annotation("Polygon", square * 2))
    assert xml_cases.refusal(read, data, "big.xml", ImportLimits(max_vertices=4)) == (
        "big.xml: annotation 2 ('Annotation 0'): more than 4 coordinates"
    )


def test_too_long_texts_are_refused() -> None:
    data = document(annotation("Dot", [(1, 2)], name="x" * 11))
    with pytest.raises(InvalidInput, match=r"annotation 1 \('xxxxxxxxxxx'\): name longer than 10"):
        read(data, limits=ImportLimits(max_text=10))
    data = document(annotation("Dot", [(1, 2)], name="a", group="y" * 11))
    with pytest.raises(InvalidInput, match=r"class longer than 10 characters"):
        read(data, limits=ImportLimits(max_text=10))


def test_too_many_bytes_are_refused() -> None:
    data = document(*(annotation("Dot", [(i, i)]) for i in range(100)))
    assert len(read(data, limits=ImportLimits(max_bytes=len(data)))) == 100
    with pytest.raises(
        InvalidInput, match=rf"^huge\.xml: larger than the limit of {len(data) - 1}"
    ):
        read(data, "huge.xml", ImportLimits(max_bytes=len(data) - 1))


def test_deep_nesting_is_refused() -> None:
    data = b"<ASAP_Annotations>" + b"<a>" * 40 + b"</a>" * 40 + b"</ASAP_Annotations>"
    with pytest.raises(InvalidInput, match="nested deeper than 32"):
        read(data)


# --- bounded memory ---------------------------------------------------------------------

LARGE = 40_000


@pytest.mark.slow
def test_a_large_file_is_read_and_written_in_bounded_memory(tmp_path: Path) -> None:
    head = '<?xml version="1.0"?>\n<ASAP_Annotations>\n\t<Annotations>\n'
    dots = (
        f'\t\t<Annotation Name="Annotation {i}" Type="Dot" PartOfGroup="cells"'
        ' Color="#F4FA58">\n\t\t\t<Coordinates>\n'
        f'\t\t\t\t<Coordinate Order="0" X="{i * 0.5}" Y="{i * 0.25}" />\n'
        "\t\t\t</Coordinates>\n\t\t</Annotation>\n"
        for i in range(LARGE)
    )
    tail = (
        "\t</Annotations>\n\t<AnnotationGroups>\n"
        '\t\t<Group Name="cells" PartOfGroup="None" Color="#64FE2E"><Attributes/></Group>\n'
        "\t</AnnotationGroups>\n</ASAP_Annotations>\n"
    )
    traced = xml_cases.read_and_write_traced(
        tmp_path / "dots.xml",
        chain([head], dots, [tail]),
        asap.reader,
        asap.writer,
        (Annotation(Point(i, i), "point", "cells") for i in range(LARGE)),
        f"ASAP {LARGE} dots",
    )
    assert traced.count == LARGE
    assert traced.last is not None
    assert traced.last.annotation.geometry.equals(Point((LARGE - 1) * 0.5, (LARGE - 1) * 0.25))
    assert traced.read_peak < xml_cases.MEMORY_BOUND
    assert traced.write_peak < xml_cases.MEMORY_BOUND
