"""ASAP XML: the annotation files of ASAP (Automated Slide Analysis Platform, the Radboud
viewer the CAMELYON challenges made common)::

    <ASAP_Annotations>
      <Annotations>
        <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58">
          <Coordinates>
            <Coordinate Order="0" X="22851.3281" Y="16551.1797"/>
            ...
      <AnnotationGroups>
        <Group Name="Tumor" PartOfGroup="None" Color="#64FE2E"><Attributes/></Group>

Coordinates are level-0 pixels, as ours. What an annotation becomes on import:

========================  ==============================================================
``Dot``                   point (exactly one coordinate)
``PointSet``              multipoint
``Polygon``               polygon (ASAP leaves rings open; shapely closes them)
``Spline``                polygon whose vertices are the spline's control points as given
                          (ASAP draws a Catmull-Rom curve through them; the curve itself
                          is not sampled)
``Rectangle``             rectangle: its four corners as given (two opposite corners are
                          accepted too)
``Measurement``           line (ASAP's ruler, two coordinates)
``PartOfGroup``           the label; ``"None"`` means no label
group ``Color``           the class colour (:class:`LabelStyle`)
annotation ``Color``      ``properties["color"]``
``Name``                  ``properties["name"]``
========================  ==============================================================

Coordinates are put in ``Order``. A number may use a decimal comma (ASAP builds on some
locales wrote them); NaN, infinities and anything else that is not a plain decimal number
are refused, as are polygons of fewer than three vertices, a Dot with other than one
coordinate and unknown types. Geometry validity and slide bounds are not judged here.

The file is untrusted: it is parsed by defusedxml with document type declarations refused
(so no entity expansion and no external references), streamed with ``iterparse`` and every
element dropped as soon as it has been read, so memory holds one annotation whatever the
size of the file. :class:`ImportLimits` are enforced while reading: bytes read, annotations,
coordinates of one annotation, characters of one name or class.

On export ASAP cannot say everything Slidebank holds, and an export must not fail a whole
set over one object, so the writer says what it changed in an XML comment beside it:

* a multipolygon becomes one ``Polygon`` annotation per part, each with the same name;
* holes are dropped (ASAP polygons have none): the exterior ring is written;
* an ellipse is written as the ``Polygon`` of its vertices (ASAP has no ellipse);
* a line becomes ``Measurement`` annotations, one per segment (ASAP has no polyline: a
  ``Spline`` would turn it into an area, a ``PointSet`` would lose the segments; a
  Measurement is ASAP's straight two-point line, so the segments keep the exact path);
* an empty geometry is not written.

Annotations without a name get ASAP's own kind of name (``Annotation 7``, by position).
Measurements, confidence and properties other than ``name`` and ``color`` have no place in
ASAP XML and are not written.
Groups are written after the annotations (ASAP's own order), one per label with its class
colour from :class:`ExportContext`. A label spelled ``None`` cannot be told from "no group"
in this format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from itertools import pairwise
from typing import BinaryIO, NoReturn

import shapely
from shapely.geometry import LineString, MultiPoint, Point, Polygon
from shapely.geometry.base import BaseGeometry

from slidebank.annotations.formats import xml_input
from slidebank.annotations.formats.base import ExportContext, ImportLimits, LabelStyle, Parsed
from slidebank.annotations.model import Annotation, Shape
from slidebank.errors import InvalidInput

ROOT = "ASAP_Annotations"
NO_GROUP = "None"
_MAX_DEPTH = 32
"""ASAP nests five deep; a deeper file is not ASAP and is refused before it costs memory."""
_WRITE_CHUNK = 256 * 1024
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


class _Pending:
    """One ``<Annotation>`` being read."""

    def __init__(self, number: int, attributes: dict[str, str]) -> None:
        self.number = number
        self.name = attributes.get("Name", "")
        self.type = attributes.get("Type")
        self.group = attributes.get("PartOfGroup") or NO_GROUP
        self.color = attributes.get("Color", "")
        self.coordinates: list[tuple[int, float, float]] = []
        self.orders: set[int] = set()

    @property
    def where(self) -> str:
        return f"annotation {self.number}" + (
            f" ({xml_input.quoted(self.name)})" if self.name else ""
        )


class AsapReader:
    name = "asap"

    def sniff(self, head: bytes) -> bool:
        return xml_input.root_name(head) == ROOT

    def read(
        self,
        source: BinaryIO,
        filename: str,
        limits: ImportLimits,
        classes: dict[str, LabelStyle],
    ) -> Iterator[Parsed]:
        current: _Pending | None = None
        annotations = 0
        groups = 0
        grouped: set[str] = set()
        for event, element, depth, parent in xml_input.elements(
            source, filename, limits.max_bytes, root=ROOT, kind="ASAP", max_depth=_MAX_DEPTH
        ):
            tag = element.tag
            if event == "start":
                if tag == "Annotation" and parent == "Annotations" and depth == 3:
                    annotations += 1
                    current = _Pending(annotations, element.attrib)
                    if annotations > limits.max_annotations:
                        raise InvalidInput(
                            f"{filename}: {current.where}: more than "
                            f"{limits.max_annotations} annotations in one file"
                        )
                    self._check_text(current, filename, limits)
                elif tag == "Group" and parent == "AnnotationGroups" and depth == 3:
                    groups += 1
                    self._group(element.attrib, groups, filename, limits, classes, grouped)
            elif current is not None:
                if tag == "Coordinate" and parent == "Coordinates":
                    self._coordinate(current, element.attrib, filename, limits)
                elif tag == "Annotation" and depth == 3:
                    yield self._parsed(current, filename, classes)
                    current = None

    @staticmethod
    def _check_text(current: _Pending, filename: str, limits: ImportLimits) -> None:
        for what, text in (("name", current.name), ("class", current.group)):
            if len(text) > limits.max_text:
                raise InvalidInput(
                    f"{filename}: {current.where}: {what} longer than {limits.max_text} characters"
                )

    @staticmethod
    def _group(
        attributes: dict[str, str],
        number: int,
        filename: str,
        limits: ImportLimits,
        classes: dict[str, LabelStyle],
        grouped: set[str],
    ) -> None:
        name = attributes.get("Name", "")
        where = f"group {number}" + (f" ({xml_input.quoted(name)})" if name else "")
        if not name or name == NO_GROUP:
            return  # no annotation can name it as its group
        if len(name) > limits.max_text:
            raise InvalidInput(
                f"{filename}: {where}: name longer than {limits.max_text} characters"
            )
        color = _colour(attributes.get("Color", ""), filename, where)
        # The first group of a name says its colour; a repeat does not overwrite it.
        if name in grouped:
            return
        grouped.add(name)
        known = classes.get(name)
        if color is not None:
            classes[name] = LabelStyle(color=color, code=known.code if known else None)
        elif known is None:
            classes[name] = LabelStyle()

    @staticmethod
    def _coordinate(
        current: _Pending, attributes: dict[str, str], filename: str, limits: ImportLimits
    ) -> None:
        position = len(current.coordinates) + 1

        def fail(problem: str) -> NoReturn:
            raise InvalidInput(f"{filename}: {current.where}: coordinate {position}: {problem}")

        if position > limits.max_vertices:
            raise InvalidInput(
                f"{filename}: {current.where}: more than {limits.max_vertices} coordinates"
            )
        order_text = attributes.get("Order")
        if order_text is None:
            order = position - 1
        # Python refuses to convert integers of thousands of digits; no order needs them.
        elif xml_input.INTEGER.fullmatch(order_text.strip()) and len(order_text.strip()) <= 18:
            order = int(order_text)
        else:
            fail(f"Order is not a whole number: {xml_input.quoted(order_text)}")
        if order in current.orders:
            fail(f"Order {order} is given twice")
        current.orders.add(order)
        x = xml_input.plain_number(attributes.get("X"), decimal_comma=True)
        y = xml_input.plain_number(attributes.get("Y"), decimal_comma=True)
        if x is None or y is None:
            x = xml_input.checked_number(attributes.get("X"), "X", fail, decimal_comma=True)
            y = xml_input.checked_number(attributes.get("Y"), "Y", fail, decimal_comma=True)
        current.coordinates.append((order, x, y))

    @staticmethod
    def _parsed(current: _Pending, filename: str, classes: dict[str, LabelStyle]) -> Parsed:
        def fail(problem: str) -> NoReturn:
            raise InvalidInput(f"{filename}: {current.where}: {problem}")

        current.coordinates.sort()
        points = [(x, y) for _, x, y in current.coordinates]
        geometry, shape = _geometry(current.type, points, fail)
        label = None if current.group == NO_GROUP else current.group
        if label is not None:
            classes.setdefault(label, LabelStyle())
        properties: dict[str, str] = {}
        if current.name:
            properties["name"] = current.name
        color = _colour(current.color, filename, current.where)
        if color is not None:
            properties["color"] = color
        annotation = Annotation(geometry=geometry, shape=shape, label=label, properties=properties)
        return Parsed(annotation=annotation, where=current.where)


def _colour(text: str, filename: str, where: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    if not _COLOUR.fullmatch(text):
        raise InvalidInput(f"{filename}: {where}: Color is not #rrggbb: {xml_input.quoted(text)}")
    return text.lower()


def _geometry(
    kind: str | None, points: list[tuple[float, float]], fail: Callable[[str], NoReturn]
) -> tuple[BaseGeometry, Shape]:
    count = len(points)
    if kind == "Dot":
        if count != 1:
            fail(f"a Dot has one coordinate, this one has {count}")
        return Point(points[0]), "point"
    if kind == "PointSet":
        if count == 0:
            fail("a PointSet without coordinates")
        return MultiPoint(points), "multipoint"
    if kind in ("Polygon", "Spline"):
        return xml_input.ring_polygon(xml_input.open_ring(points), fail, f"a {kind}"), "polygon"
    if kind == "Rectangle":
        return xml_input.corner_rectangle(points, fail, "a Rectangle", "coordinates"), "rectangle"
    if kind == "Measurement":
        if count < 2:
            fail(f"a Measurement needs 2 coordinates, this one has {count}")
        return LineString(points), "line"
    if kind is None:
        fail("no Type")
    fail(
        f"Type {xml_input.quoted(kind)} is not an ASAP annotation type Slidebank reads "
        "(Dot, PointSet, Polygon, Spline, Rectangle, Measurement)"
    )


# --- writing -----------------------------------------------------------------------------


def _coords(geometry: BaseGeometry) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in shapely.get_coordinates(geometry)]


def _is_axis_rectangle(polygon: Polygon) -> bool:
    ring = _coords(polygon.exterior)[:-1]
    if len(ring) != 4 or len(set(ring)) != 4 or len(polygon.interiors):
        return False
    xs = {x for x, _ in ring}
    ys = {y for _, y in ring}
    return (
        len(xs) == 2
        and len(ys) == 2
        and all(
            a[0] == b[0] or a[1] == b[1] for a, b in zip(ring, ring[1:] + ring[:1], strict=True)
        )
    )


def _parts(
    annotation: Annotation,
) -> tuple[list[tuple[str, list[tuple[float, float]]]], str | None]:
    """The ASAP annotations one Slidebank annotation becomes, and a note of what changed."""
    geometry = annotation.geometry
    kind = geometry.geom_type
    if geometry.is_empty:
        return [], "an empty geometry, not written"
    if kind == "Point":
        return [("Dot", _coords(geometry))], None
    if kind == "MultiPoint":
        return [("PointSet", _coords(geometry))], None
    if kind in ("LineString", "LinearRing", "MultiLineString"):
        lines = geometry.geoms if kind == "MultiLineString" else [geometry]
        segments: list[tuple[str, list[tuple[float, float]]]] = []
        for line in lines:
            vertices = _coords(line)
            segments.extend(("Measurement", [a, b]) for a, b in pairwise(vertices))
        if len(segments) == 1:
            return segments, None
        return segments, (
            f"a line written as {len(segments)} Measurement segments (ASAP has no polyline)"
        )
    if kind in ("Polygon", "MultiPolygon"):
        polygons = list(geometry.geoms) if kind == "MultiPolygon" else [geometry]
        parts: list[tuple[str, list[tuple[float, float]]]] = []
        for polygon in polygons:
            if annotation.shape == "rectangle" and _is_axis_rectangle(polygon):
                parts.append(("Rectangle", _coords(polygon.exterior)[:-1]))
            else:
                parts.append(("Polygon", _coords(polygon.exterior)[:-1]))
        changes = []
        if len(polygons) > 1:
            changes.append(f"a multipolygon written as {len(polygons)} Polygon annotations")
        holes = sum(len(polygon.interiors) for polygon in polygons)
        if holes:
            changes.append(f"{holes} hole(s) dropped (ASAP polygons have none)")
        if annotation.shape == "ellipse":
            changes.append("an ellipse written as its polygon (ASAP has no ellipse)")
        return parts, ("; ".join(changes) if changes else None)
    return [], f"a {kind} cannot be written in ASAP XML, not written"


def _colour_of(value: object) -> str | None:
    return value.lower() if isinstance(value, str) and _COLOUR.fullmatch(value) else None


class AsapWriter:
    name = "asap"
    media_type = "application/xml"
    suffix = ".xml"

    def write(self, items: Iterable[Annotation], out: BinaryIO, context: ExportContext) -> None:
        buffer: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>\n<ASAP_Annotations>\n']
        buffer.append("\t<Annotations>\n")
        size = 0
        labels: dict[str, None] = {}
        for number, annotation in enumerate(items):
            chunk = self._annotation(annotation, number)
            if annotation.label is not None:
                labels.setdefault(annotation.label, None)
            buffer.append(chunk)
            size += len(chunk)
            if size >= _WRITE_CHUNK:
                out.write("".join(buffer).encode("utf-8"))
                buffer.clear()
                size = 0
        buffer.append("\t</Annotations>\n\t<AnnotationGroups>\n")
        for label in labels:
            style = context.classes.get(label)
            color = _colour_of(style.color) if style else None
            buffer.append(
                f"\t\t<Group Name={xml_input.attribute(label)}"
                f" PartOfGroup={xml_input.attribute(NO_GROUP)}"
                + (f" Color={xml_input.attribute(color.upper())}" if color else "")
                + ">\n\t\t\t<Attributes />\n\t\t</Group>\n"
            )
        buffer.append("\t</AnnotationGroups>\n</ASAP_Annotations>\n")
        out.write("".join(buffer).encode("utf-8"))

    @staticmethod
    def _annotation(annotation: Annotation, number: int) -> str:
        parts, note = _parts(annotation)
        name = annotation.properties.get("name")
        name = name if isinstance(name, str) and name else f"Annotation {number}"
        group = annotation.label if annotation.label is not None else NO_GROUP
        color = _colour_of(annotation.properties.get("color"))
        lines: list[str] = []
        if note is not None:
            # "--" may not appear inside an XML comment.
            lines.append(f"\t\t<!-- slidebank: {note.replace('--', '- -')} -->\n")
        for kind, coordinates in parts:
            lines.append(
                f"\t\t<Annotation Name={xml_input.attribute(name)} Type={xml_input.attribute(kind)}"
                f" PartOfGroup={xml_input.attribute(group)}"
                + (f" Color={xml_input.attribute(color.upper())}" if color else "")
                + ">\n\t\t\t<Coordinates>\n"
            )
            lines.extend(
                f'\t\t\t\t<Coordinate Order="{order}" X="{x!r}" Y="{y!r}" />\n'
                for order, (x, y) in enumerate(coordinates)
            )
            lines.append("\t\t\t</Coordinates>\n\t\t</Annotation>\n")
        return "".join(lines)


reader = AsapReader()
writer = AsapWriter()
