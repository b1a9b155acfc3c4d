"""Aperio ImageScope XML: small files written here in ImageScope's own layout (rectangle,
ellipse, negative regions, several layers), round trips, what the writer cannot say,
refused XML, limits, bad coordinates, and a large layer in bounded memory."""

from __future__ import annotations

import io
import re
from collections.abc import Generator, Sequence
from itertools import chain
from pathlib import Path

import pytest
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon, box

from slidebank.annotations.formats import imagescope
from slidebank.annotations.formats.base import ExportContext, ImportLimits, LabelStyle, Parsed
from slidebank.annotations.model import Annotation
from slidebank.errors import InvalidInput
from tests.annotations.formats import xml_cases

TOLERANCE = 1e-9

LAYER = (
    '<Annotation Id="{id}" Name="{name}" ReadOnly="0" NameReadOnly="0" LineColorReadOnly="0"'
    ' Incremental="0" Type="4" LineColor="{color}" Visible="1" Selected="1"'
    ' MarkupImagePath="" MacroName="">'
    "<Attributes>{attributes}</Attributes>"
    "<Regions><RegionAttributeHeaders>"
    '<AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>'
    '<AttributeHeader Id="9997" Name="Length" ColumnWidth="-1"/>'
    "</RegionAttributeHeaders>{regions}</Regions><Plots/></Annotation>"
)
DESCRIPTION = '<Attribute Name="Description" Id="0" Value=""/>'


def region(
    kind: int,
    vertices: Sequence[tuple[object, object]],
    text: str = "",
    negative: int = 0,
    identifier: int = 1,
) -> str:
    rows = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in vertices)
    return (
        f'<Region Id="{identifier}" Type="{kind}" Zoom="0.5" Selected="0" ImageLocation=""'
        f' ImageFocus="-1" Length="0" Area="0" LengthMicrons="0" AreaMicrons="0" Text="{text}"'
        f' NegativeROA="{negative}" InputRegionId="0" Analyze="1" DisplayId="{identifier}">'
        f"<Attributes/><Vertices>{rows}</Vertices></Region>"
    )


def layer(
    name: str,
    *regions: str,
    color: int = 65280,
    identifier: int = 1,
    attributes: str = DESCRIPTION,
) -> str:
    return LAYER.format(
        id=identifier, name=name, color=color, attributes=attributes, regions="".join(regions)
    )


def document(*layers: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Annotations MicronsPerPixel="0.252000">\n'
        + "\n".join(layers)
        + "\n</Annotations>\n"
    ).encode()


read = xml_cases.reading(imagescope.reader)


def write(items: list[Annotation], classes: dict[str, LabelStyle] | None = None) -> bytes:
    out = io.BytesIO()
    context = ExportContext("set", 100_000, 100_000, mpp=0.25, classes=classes or {})
    imagescope.writer.write(items, out, context)
    return out.getvalue()


def by_name(items: list[Parsed]) -> dict[str, Parsed]:
    named: dict[str, Parsed] = {}
    for item in items:
        name = item.annotation.properties["name"]
        assert isinstance(name, str) and name not in named
        named[name] = item
    return named


SQUARE = [(0, 0), (100, 0), (100, 100), (0, 100), (0, 0)]


# --- reading ----------------------------------------------------------------------------


def test_sniff() -> None:
    assert imagescope.reader.sniff(document(layer("Tumor", region(0, SQUARE)))[:65536])
    assert imagescope.reader.sniff(b'<Annotations MicronsPerPixel="0.5"></Annotations>')
    assert not imagescope.reader.sniff(b'<?xml version="1.0"?><ASAP_Annotations>')
    halo = (
        b'<Annotations><Annotation Name="x" LineColor="65280" Visible="True"><Regions>'
        b'<Region Type="Polygon" HasEndcaps="0" NegativeROA="0"><Vertices><V X="1" Y="2"/>'
    )
    assert not imagescope.reader.sniff(halo)
    assert not imagescope.reader.sniff(b'{"type": "FeatureCollection"}')


def test_freehand_rectangle_ellipse_arrow_ruler_and_point() -> None:
    data = document(
        layer(
            "Tumor",
            region(0, SQUARE, "free", identifier=1),
            region(1, [(200, 200), (300, 200), (300, 250), (200, 250)], "box", identifier=2),
            region(2, [(6595, 24009), (6642, 24051)], "Mitosis", identifier=3),
            region(3, [(10.5, 20.25), (30, 40)], "arrow", identifier=4),
            region(4, [(1, 1), (2, 2), (3, 1)], "ruler", identifier=5),
            region(0, [(7, 8)], "dot", identifier=6),
            region(1, [(50, 60), (40, 30)], "corners", identifier=7),
        )
    )
    items = by_name(read(data))
    assert {name: item.annotation.shape for name, item in items.items()} == {
        "free": "polygon",
        "box": "rectangle",
        "Mitosis": "ellipse",
        "arrow": "line",
        "ruler": "line",
        "dot": "point",
        "corners": "rectangle",
    }
    free = items["free"].annotation.geometry
    assert list(free.exterior.coords) == SQUARE
    rectangle = items["box"].annotation.geometry
    assert list(rectangle.exterior.coords) == [
        (200, 200),
        (300, 200),
        (300, 250),
        (200, 250),
        (200, 200),
    ]
    ellipse = items["Mitosis"].annotation.geometry
    assert len(ellipse.exterior.coords) == imagescope.ELLIPSE_VERTICES + 1
    assert ellipse.bounds == pytest.approx((6595, 24009, 6642, 24051))
    assert ellipse.area == pytest.approx(3.14159 * 23.5 * 21, rel=0.01)
    assert items["arrow"].annotation.geometry.equals_exact(LineString([(10.5, 20.25), (30, 40)]), 0)
    assert items["ruler"].annotation.geometry.equals_exact(LineString([(1, 1), (2, 2), (3, 1)]), 0)
    assert items["dot"].annotation.geometry.equals_exact(Point(7, 8), 0)
    assert items["corners"].annotation.geometry.equals(box(40, 30, 50, 60))
    assert {item.annotation.label for item in items.values()} == {"Tumor"}
    assert items["arrow"].where == "layer 1 ('Tumor'), region 4 (Id 4) ('arrow')"


def test_negative_regions_become_holes_or_are_subtracted() -> None:
    data = document(
        layer(
            "Tissue",
            # The exclusion may come before the area it cuts.
            region(0, [(10, 10), (20, 10), (20, 20), (10, 20)], negative=1, identifier=1),
            region(0, SQUARE, "inside", identifier=2),
            region(1, [(200, 0), (300, 0), (300, 100), (200, 100)], "crossed", identifier=3),
            region(1, [(250, -10), (350, -10), (350, 50), (250, 50)], negative=1, identifier=4),
            region(2, [(400, 0), (500, 100)], "covered", identifier=5),
            region(1, [(390, -10), (510, -10), (510, 110), (390, 110)], negative=1, identifier=6),
            region(0, [(900, 900), (950, 900), (950, 950)], negative=1, identifier=7),
            region(3, [(0, 0), (5, 5)], "arrow", identifier=8),
        ),
        # A negative region cuts only its own layer.
        layer("Other", region(0, SQUARE, "untouched"), identifier=2),
    )
    items = by_name(read(data))
    assert set(items) == {"inside", "crossed", "arrow", "untouched"}
    inside = items["inside"].annotation
    assert inside.shape == "polygon"
    assert inside.geometry.equals_exact(
        Polygon(SQUARE, [[(10, 10), (20, 10), (20, 20), (10, 20), (10, 10)]]), 0
    )
    crossed = items["crossed"].annotation
    assert crossed.shape == "polygon"
    assert crossed.geometry.normalize().equals(
        Polygon([(200, 0), (250, 0), (250, 50), (300, 50), (300, 100), (200, 100)]).normalize()
    )
    assert items["untouched"].annotation.geometry.equals_exact(Polygon(SQUARE), 0)
    assert items["untouched"].annotation.label == "Other"


def test_a_negative_region_can_cut_an_area_in_two() -> None:
    data = document(
        layer(
            "Tissue",
            region(1, [(0, 0), (100, 0), (100, 10), (0, 10)], "band", identifier=1),
            region(1, [(40, -5), (60, -5), (60, 15), (40, 15)], negative=1, identifier=2),
        )
    )
    [item] = read(data)
    assert item.annotation.shape == "multipolygon"
    assert item.annotation.geometry.equals(MultiPolygon([box(0, 0, 40, 10), box(60, 0, 100, 10)]))


def test_several_layers_labels_and_colours() -> None:
    data = document(
        layer("Tumor", region(0, SQUARE, "a"), color=255, identifier=1),
        layer("Stroma", region(0, SQUARE, "b"), color=65280, identifier=2),
        layer("Necrosis", region(0, SQUARE, "c"), color=16711680, identifier=3),
        layer("Fat", region(0, SQUARE, "d"), color=65535, identifier=4),
        layer(
            "",
            region(0, SQUARE, "e"),
            identifier=5,
            attributes=DESCRIPTION + '<Attribute Name="Epithelial" Id="1" Value=""/>',
        ),
        layer("", region(0, SQUARE, "f"), color=0, identifier=6),
        layer("Tumor", region(0, SQUARE, "g"), color=0, identifier=7),
    )
    classes = {"Stroma": LabelStyle(color="#123456", code="SCT:1")}
    items = by_name(read(data, classes=classes))
    assert {name: item.annotation.label for name, item in items.items()} == {
        "a": "Tumor",
        "b": "Stroma",
        "c": "Necrosis",
        "d": "Fat",
        "e": "Epithelial",
        "f": None,
        "g": "Tumor",
    }
    # LineColor is a COLORREF, red in the low byte; the first layer of a name says its colour.
    assert classes == {
        "Tumor": LabelStyle(color="#ff0000"),
        "Stroma": LabelStyle(color="#00ff00", code="SCT:1"),
        "Necrosis": LabelStyle(color="#0000ff"),
        "Fat": LabelStyle(color="#ffff00"),
        "Epithelial": LabelStyle(color="#00ff00"),
    }


def test_not_imagescope_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"^x\.xml: the root element is <ASAP_Annotations>"):
        read(b"<ASAP_Annotations/>", "x.xml")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (region(0, [(1, 2), (3, "abc"), (5, 6)]), "vertex 2: Y is not a number: 'abc'"),
        (region(0, [(1, 2), ("NaN", 4), (5, 6)]), "vertex 2: X is not a finite number: 'NaN'"),
        (region(0, [(1, 2), (3, 4), (5, "1e400")]), "vertex 3: Y is not a finite number"),
        (region(0, [(1, 2), ("1,5", 4), (5, 6)]), "vertex 2: X is not a number: '1,5'"),
        (region(0, [(1, 2), (3, 4)]), "a freehand region needs at least 3 vertices, this one"),
        (region(0, [(1, 2), (3, 4), (1, 2)]), "a freehand region needs at least 3 vertices"),
        (region(2, [(1, 2)]), "an ellipse needs the 2 corners of its box, this one has 1"),
        (region(3, [(1, 2)]), "a line needs at least 2 vertices, this one has 1"),
        (region(1, [(1, 2)]), "a rectangle needs its corners, this one has 1 vertices"),
        (region(7, [(1, 2)]), "region Type '7' is not one Slidebank reads"),
        (region(0, SQUARE, negative=2), "NegativeROA is not 0 or 1: '2'"),
        (
            region(0, SQUARE).replace('<Vertex X="100" Y="0" Z="0"/>', '<Vertex X="100"/>'),
            "vertex 2: Y is missing",
        ),
    ],
)
def test_impossible_regions_are_refused_naming_layer_and_region(body: str, message: str) -> None:
    data = document(
        layer("Tumor", region(0, SQUARE, identifier=1), body.replace('Id="1"', 'Id="9"'))
    )
    assert xml_cases.refusal(read, data, "bad.xml").startswith(
        f"bad.xml: layer 1 ('Tumor'), region 2 (Id 9): {message}"
    )


@pytest.mark.parametrize("colour", ["red", "9" * 5000, "1.5"])
def test_bad_line_colour_is_refused_naming_the_layer(colour: str) -> None:
    data = document(
        layer("Tumor", region(0, SQUARE)).replace('LineColor="65280"', f'LineColor="{colour}"')
    )
    with pytest.raises(
        InvalidInput, match=r"^c\.xml: layer 1 \('Tumor'\): LineColor is not a whole"
    ):
        read(data, "c.xml")


# --- round trips ------------------------------------------------------------------------


def test_round_trip_of_a_multi_layer_file() -> None:
    data = document(
        layer(
            "Tumor",
            region(0, SQUARE, "free", identifier=1),
            region(0, [(10, 10), (20, 10), (20, 20), (10, 20)], negative=1, identifier=2),
            region(1, [(200, 200), (300, 200), (300, 250), (200, 250)], "box", identifier=3),
            region(2, [(6595, 24009), (6642, 24051)], "ellipse", identifier=4),
            color=255,
        ),
        layer(
            "Stroma",
            region(3, [(10.5, 20.25), (30, 40)], "arrow", identifier=1),
            region(0, [(7.125, 8)], "dot", identifier=2),
            region(0, [(1 / 3, 0), (5, 0), (5, 2 / 3)], "thirds", identifier=3),
            color=16711680,
            identifier=2,
        ),
        layer("", region(0, SQUARE, "unlabelled"), identifier=3),
    )
    classes: dict[str, LabelStyle] = {}
    first = read(data, classes=classes)
    assert len(first) == 7
    written = write([item.annotation for item in first], classes)
    again_classes: dict[str, LabelStyle] = {}
    again = by_name(read(written, classes=again_classes))
    for name, before in by_name(first).items():
        after = again[name].annotation
        assert after.geometry.equals_exact(before.annotation.geometry, TOLERANCE), name
        assert after.shape == before.annotation.shape
        assert after.label == before.annotation.label
        assert after.properties == before.annotation.properties
    assert (
        again_classes
        == classes
        == {
            "Tumor": LabelStyle(color="#ff0000"),
            "Stroma": LabelStyle(color="#0000ff"),
        }
    )


def test_round_trip_of_annotations_with_every_shape() -> None:
    holed = Polygon(SQUARE, [[(10, 10), (20, 10), (20, 20)], [(50, 50), (60, 50), (60, 60)]])
    items = [
        Annotation(holed, "polygon", "Tumor", {"name": "holed"}),
        # Overlaps the holes of "holed" and shares its class: its holes must not cut it.
        Annotation(box(5, 5, 70, 70), "polygon", "Tumor", {"name": "overlapping"}),
        Annotation(box(0, 0, 10.5, 7.25), "rectangle", "Stroma", {"name": "rect"}),
        Annotation(imagescope.ellipse(0, 0, 30, 20), "ellipse", "Stroma", {"name": "ell"}),
        Annotation(Point(3.5, 4.25), "point", "Cell", {"name": "cell"}),
        Annotation(LineString([(0, 0), (100, 50.5)]), "line", None, {"name": "ruler"}),
        Annotation(Polygon([(0, 0), (1, 0), (0, 1)]), "polygon", None, {"name": 'a "<&>" b'}),
    ]
    classes = {"Tumor": LabelStyle(color="#ff8000"), "Stroma": LabelStyle(color="#00ff00")}
    read_classes: dict[str, LabelStyle] = {}
    again = by_name(read(write(items, classes), classes=read_classes))
    for before in items:
        after = again[before.properties["name"]].annotation
        assert after.geometry.equals_exact(before.geometry, TOLERANCE), before.properties
        assert after.shape == before.shape
        assert after.label == before.label
    assert read_classes["Tumor"] == LabelStyle(color="#ff8000")
    assert read_classes["Stroma"] == LabelStyle(color="#00ff00")
    # A class without a colour gets ImageScope's green.
    assert read_classes["Cell"] == LabelStyle(color="#00ff00")


def test_writer_layout_and_notes() -> None:
    items = [
        Annotation(box(0, 0, 10, 5), "rectangle", "T", {"name": "r"}),
        Annotation(imagescope.ellipse(0, 0, 30, 20), "ellipse", "T", {"name": "e"}),
        Annotation(LineString([(0, 0), (10, 0), (10, 5)]), "line", "T", {"name": "l"}),
        Annotation(MultiPoint([(1, 1), (2, 2)]), "multipoint", "T", {"name": "mp"}),
        Annotation(
            MultiPolygon([box(0, 0, 1, 1), box(5, 5, 6, 6)]), "multipolygon", "T", {"name": "mpl"}
        ),
        Annotation(Polygon([(0, 5), (5, 0), (10, 5), (5, 10)]), "rectangle", "T", {"name": "d"}),
        Annotation(Polygon(), "polygon", "T", {"name": "empty"}),
    ]
    data = write(items).decode()
    assert data.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<Annotations MicronsPerPixel')
    assert data.count("<Annotation ") == 1
    types = re.findall(r'<Region Id="\d+" Type="(\d)"', data)
    assert types == ["1", "2", "3", "3", "0", "0", "0", "0", "0"]
    assert "<!-- slidebank: a line written as 2 arrows, one per segment -->" in data
    assert "<!-- slidebank: a multipoint written as 2 one-vertex regions -->" in data
    assert "<!-- slidebank: a multipolygon written as 2 regions -->" in data
    assert "<!-- slidebank: a rectangle written as a freehand region -->" in data
    assert "<!-- slidebank: an empty geometry, not written -->" in data
    assert 'Length="30.0" Area="50.0" LengthMicrons="7.5" AreaMicrons="3.1"' in data
    again = read(data.encode())
    assert [item.annotation.shape for item in again] == [
        "rectangle",
        "ellipse",
        "line",
        "line",
        "point",
        "point",
        "polygon",
        "polygon",
        "polygon",
    ]


def test_the_writer_streams_its_input() -> None:
    out = io.BytesIO()
    imagescope.writer.write(
        (Annotation(Point(i, i), "point", f"class {i % 3}") for i in range(3000)),
        out,
        ExportContext("set", 10, 10),
    )
    again = read(out.getvalue())
    assert len(again) == 3000
    assert [item.annotation.label for item in again[:2]] == ["class 0", "class 0"]


# --- hostile XML ------------------------------------------------------------------------

HOSTILE = xml_cases.hostile_documents(
    imagescope.ROOT, lambda name: document(layer(name, region(0, SQUARE)))
)


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_document_type_declarations_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"^evil\.xml: XML document type declarations"):
        read(data, "evil.xml")


def test_malformed_xml_is_refused_naming_the_file() -> None:
    data = document(layer("Tumor", region(0, SQUARE))).replace(b"</Vertices>", b"</Vertex>")
    with pytest.raises(InvalidInput, match=r"^cut\.xml: not well-formed XML: mismatched tag"):
        read(data, "cut.xml")


# --- limits -----------------------------------------------------------------------------


def test_too_many_regions_are_refused_naming_the_first_one_over() -> None:
    data = document(
        layer("A", region(0, SQUARE, "one", identifier=1), region(0, SQUARE, identifier=2)),
        layer("B", region(0, SQUARE, "three", identifier=1), identifier=2),
    )
    assert len(read(data, limits=ImportLimits(max_annotations=3))) == 3
    assert xml_cases.refusal(read, data, "many.xml", ImportLimits(max_annotations=2)) == (
        "many.xml: layer 2 ('B'), region 1 (Id 1) ('three'): more than 2 regions in one file"
    )


def test_too_many_vertices_are_refused_naming_the_region() -> None:
    data = document(layer("Tumor", region(0, SQUARE[:4], "small"), region(0, SQUARE, "big")))
    assert xml_cases.refusal(read, data, "big.xml", ImportLimits(max_vertices=4)) == (
        "big.xml: layer 1 ('Tumor'), region 2 (Id 1) ('big'): more than 4 vertices"
    )


def test_too_long_texts_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"layer 1 \('xxxxxxxxxxx'\): name longer than 10"):
        read(document(layer("x" * 11, region(0, SQUARE))), limits=ImportLimits(max_text=10))
    with pytest.raises(InvalidInput, match=r"region 1 \(Id 1\) \('yyyyyyyyyyy'\): Text longer"):
        read(document(layer("a", region(0, SQUARE, "y" * 11))), limits=ImportLimits(max_text=10))
    attributes = '<Attribute Name="zzzzzzzzzzz" Id="0" Value=""/>'
    with pytest.raises(InvalidInput, match=r"^test\.xml: layer 1: attribute name longer than 10"):
        read(
            document(layer("", region(0, SQUARE), attributes=attributes)),
            limits=ImportLimits(max_text=10),
        )


def test_too_many_bytes_are_refused() -> None:
    data = document(layer("Tumor", *(region(0, SQUARE, identifier=i) for i in range(50))))
    assert len(read(data, limits=ImportLimits(max_bytes=len(data)))) == 50
    with pytest.raises(InvalidInput, match=r"^huge\.xml: larger than the limit of 1000 bytes"):
        read(data, "huge.xml", ImportLimits(max_bytes=1000))


def test_stopping_early_closes_the_layer_spool() -> None:
    data = document(layer("Tumor", *(region(0, SQUARE, identifier=i) for i in range(10))))
    items = imagescope.reader.read(io.BytesIO(data), "t.xml", ImportLimits(), {})
    assert isinstance(items, Generator)
    first = next(items)
    assert first.annotation.shape == "polygon"
    items.close()  # the generator's finally closes the spooled file


# --- bounded memory ---------------------------------------------------------------------

LARGE = 40_000


@pytest.mark.slow
def test_a_large_layer_is_read_and_written_in_bounded_memory(tmp_path: Path) -> None:
    start, end = layer("Cells", "{regions}").split("{regions}")
    # One-vertex regions (cells marked by a point): the layer's spool of them is larger
    # than the 8 MiB kept in memory, so it goes to disk.
    cells = (
        region(0, [(i * 0.5, i * 0.25)], f"cell {i}", identifier=i + 1) + "\n" for i in range(LARGE)
    )
    traced = xml_cases.read_and_write_traced(
        tmp_path / "cells.xml",
        chain(
            ['<?xml version="1.0" encoding="UTF-8"?>\n<Annotations MicronsPerPixel="0.25">\n'],
            [start],
            cells,
            [end, "</Annotations>\n"],
        ),
        imagescope.reader,
        imagescope.writer,
        (Annotation(Point(i, i), "point", f"class {i % 5}") for i in range(LARGE)),
        f"ImageScope {LARGE} point regions in one layer",
    )
    assert traced.count == LARGE
    assert traced.last is not None
    assert traced.last.annotation.properties == {"name": f"cell {LARGE - 1}"}
    assert traced.last.annotation.geometry.equals(Point((LARGE - 1) * 0.5, (LARGE - 1) * 0.25))
    assert traced.read_peak < xml_cases.MEMORY_BOUND
    assert traced.write_peak < xml_cases.MEMORY_BOUND
