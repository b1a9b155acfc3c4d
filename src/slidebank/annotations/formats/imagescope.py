"""Aperio ImageScope XML: the annotation files of Leica's ImageScope viewer (and of the
Aperio eSlide Manager / GDC data that came from it)::

    <Annotations MicronsPerPixel="0.252">
      <Annotation Id="1" Name="Tumor" LineColor="65280" Type="4" ...>   one layer
        <Attributes><Attribute Name="Description" Id="0" Value=""/></Attributes>
        <Regions>
          <RegionAttributeHeaders>...</RegionAttributeHeaders>
          <Region Id="1" Type="0" Text="" NegativeROA="0" ...>
            <Attributes/>
            <Vertices><Vertex X="56657.4" Y="78147.3" Z="0"/>...</Vertices>
          </Region>
        </Regions>
        <Plots/>
      </Annotation>

Coordinates are level-0 pixels, as ours. ImageScope publishes no schema; the region types
below are those its files show and that other readers of them agree on (a ``Type="2"``
region has the two corners of the ellipse's bounding box, an arrow its head and its tail).
What a region becomes on import:

============================  =========================================================
``Type="0"`` (freehand pen)   polygon of its vertices (a repeated closing vertex is
                              dropped); a single vertex is a point
``Type="1"`` (rectangle)      rectangle: its four corners as given (two opposite corners
                              are accepted too)
``Type="2"`` (ellipse)        ellipse: the axis-aligned ellipse inscribed in the box of
                              its two corner vertices, as a polygon of 64 vertices
``Type="3"`` (arrow)          line from the head to the tail
``Type="4"`` (ruler)          line (reported as a ruler/polyline by other readers; not
                              confirmed from Leica's documentation)
other types                   refused, naming the region
``NegativeROA="1"``           an exclusion: subtracted from the positive areas of the same
                              layer (below)
layer ``Name``                the label; when empty, the name of the layer's first
                              ``Attribute`` (how some data sets carry their class), except
                              ImageScope's default ``Description`` attribute
layer ``LineColor``           the class colour: a decimal Windows COLORREF, ``0x00BBGGRR``,
                              red in the low byte (``65280`` green, ``65535`` yellow)
region ``Text``               ``properties["name"]``
============================  =========================================================

The ``GeoShape`` attribute newer files carry is not used: ``Type`` decides (files show
``GeoShape="Points"`` on freehand areas, so it does not mean point annotations).

Negative regions. A negative area that lies within a positive area (polygon, rectangle or
ellipse) of its layer becomes a hole of it, vertex for vertex; one that crosses the edge of
a positive area is subtracted from it with shapely (a rectangle or ellipse with a hole is
then a polygon, an area cut in two a multipolygon, an area covered whole is dropped). A
negative region over no positive area of its layer has nothing to exclude and is dropped;
a negative point or line is read as an ordinary one (only areas can be excluded).

Because a negative region may come anywhere in its layer, a layer's regions are held until
the layer ends: in a spooled temporary file (memory up to 8 MiB, then disk), so a layer of a
million cells is not held in memory; the negative regions, which are few, are kept in memory
in an STR-tree. Annotations come out in file order, at the end of each layer.

The file is untrusted: it is parsed by defusedxml with document type declarations refused
(so no entity expansion and no external references), streamed with ``iterparse`` and every
element dropped as soon as it has been read. :class:`ImportLimits` are enforced while
reading: bytes read, regions (negative ones too), vertices of one region, characters of one
layer name, attribute name or region text. Geometry validity and slide bounds are not judged
here; structurally impossible regions (a freehand area of two vertices, an ellipse of one,
NaN or infinite coordinates) are refused, naming the layer and the region.

On export: one layer per label (in order of first appearance) with the class colour as its
``LineColor`` (green when the class has none); the annotation's name as the region's
``Text``. Layers are complete elements in ImageScope XML, so regions are spooled per label
and each layer is written whole at the end (memory stays bounded). Every area becomes a
positive region and each of its holes a negative region after it. An annotation with holes
gets a layer of its own (same name and colour), written as soon as it is met, so that its
holes cannot cut other annotations of its class that overlap it; the order of the
annotations is therefore kept within a class, not across classes. What ImageScope cannot
say is written as close as it can and noted in an XML comment:

* a multipolygon becomes one region per part (re-imported as separate polygons);
* a rectangle is a ``Type="1"`` region when it is axis-aligned, an ellipse a ``Type="2"``
  region of its bounding box when it is (within 5 % of area) the ellipse inscribed in that
  box; otherwise either is a freehand region;
* a point is a one-vertex freehand region (ImageScope has no point type this reader can
  confirm); a multipoint one such region per point;
* a line becomes arrows (``Type="3"``), one per segment (ImageScope has no polyline type
  that can be confirmed);
* an empty geometry is not written.

Measurements, confidence and properties other than ``name`` have no place in ImageScope XML
and are not written; an annotation's own ``color`` neither (colour belongs to the layer).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import IO, BinaryIO, NoReturn

import numpy as np
import shapely
from shapely.errors import GEOSException
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree

from slidebank.annotations.formats import xml_input
from slidebank.annotations.formats.base import (
    ExportContext,
    ImportLimits,
    LabelStyle,
    Parsed,
    colour_hex,
)
from slidebank.annotations.model import Annotation, Shape
from slidebank.errors import InvalidInput

ROOT = "Annotations"
ELLIPSE_VERTICES = 64
DEFAULT_LINE_COLOR = 65280
"""Green, ImageScope's colour for a new layer."""
DEFAULT_ATTRIBUTE = "Description"
"""The attribute ImageScope gives every layer; a free-text field, not a class."""
_AREAS = frozenset({"polygon", "rectangle", "ellipse"})
_MAX_DEPTH = 32
"""ImageScope nests six or seven deep; a deeper file is not ImageScope's."""
_WRITE_CHUNK = 256 * 1024
_SPOOL_MEMORY = 8 * 1024 * 1024
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_RECORD = struct.Struct("<II")


# HALO writes an <Annotations> root too, but with <V> vertices and named region types.
_HALO = re.compile(rb"<V\s|<Region\b[^>]*\sType=\"[A-Za-z]")


def _line_colour(text: str | None, fail: Callable[[str], NoReturn]) -> str | None:
    """``#rrggbb`` from ImageScope's decimal COLORREF (red in the low byte)."""
    if text is None or not text.strip():
        return None
    # Python refuses to convert integers of thousands of digits; no colour needs more than 11.
    if not xml_input.INTEGER.fullmatch(text.strip()) or len(text.strip()) > 11:
        fail(f"LineColor is not a whole number: {xml_input.quoted(text)}")
    value = int(text)
    if not -(2**31) <= value < 2**32:
        fail(f"LineColor is out of range: {xml_input.quoted(text)}")
    return colour_hex(value & 0xFF, (value >> 8) & 0xFF, (value >> 16) & 0xFF)


def _colorref(colour: str | None) -> int:
    if colour is None or not _COLOUR.fullmatch(colour):
        return DEFAULT_LINE_COLOR
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return red | green << 8 | blue << 16


def ellipse(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    """The axis-aligned ellipse inscribed in the box of corners ``(x0, y0)``, ``(x1, y1)``,
    as a polygon of :data:`ELLIPSE_VERTICES` vertices (its extremes lie on the box)."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = abs(x1 - x0) / 2, abs(y1 - y0) / 2
    angles = np.arange(ELLIPSE_VERTICES) * (2 * math.pi / ELLIPSE_VERTICES)
    return Polygon(np.column_stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)]))


class _LayerBuffer:
    """The regions of one layer until it ends: negative areas in memory (they are few and
    are needed whole), everything else spooled."""

    def __init__(self) -> None:
        # Closed by the reader when the layer ends (or reading stops), not by a with block:
        # the file lives across the reader's yields.
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # noqa: SIM115
        self.negatives: list[tuple[BaseGeometry, str]] = []

    def add(self, where: str, shape: Shape, name: str | None, geometry: BaseGeometry) -> None:
        header = json.dumps([where, shape, name]).encode("utf-8")
        body = shapely.to_wkb(geometry)
        self._file.write(_RECORD.pack(len(header), len(body)))
        self._file.write(header)
        self._file.write(body)

    def regions(self) -> Iterator[tuple[str, Shape, str | None, BaseGeometry]]:
        self._file.seek(0)
        while head := self._file.read(_RECORD.size):
            header_size, body_size = _RECORD.unpack(head)
            where, shape, name = json.loads(self._file.read(header_size))
            yield where, shape, name, shapely.from_wkb(self._file.read(body_size))

    def close(self) -> None:
        self._file.close()


@dataclass
class _Layer:
    number: int
    name: str
    color: str | None
    first_attribute: str | None = None
    regions: int = 0
    buffer: _LayerBuffer = field(default_factory=_LayerBuffer)

    @property
    def where(self) -> str:
        return f"layer {self.number}" + (f" ({xml_input.quoted(self.name)})" if self.name else "")

    @property
    def label(self) -> str | None:
        return self.name or self.first_attribute


@dataclass
class _Region:
    where: str
    type: str
    text: str
    negative: bool
    vertices: list[tuple[float, float]] = field(default_factory=list)


class ImageScopeReader:
    name = "imagescope"

    def sniff(self, head: bytes) -> bool:
        return xml_input.root_name(head) == ROOT and not _HALO.search(xml_input.utf8_head(head))

    def read(
        self,
        source: BinaryIO,
        filename: str,
        limits: ImportLimits,
        classes: dict[str, LabelStyle],
    ) -> Iterator[Parsed]:
        layer: _Layer | None = None
        region: _Region | None = None
        layers = 0
        regions = 0
        labelled: set[str] = set()
        try:
            for event, element, depth, parent in xml_input.elements(
                source,
                filename,
                limits.max_bytes,
                root=ROOT,
                kind="ImageScope",
                max_depth=_MAX_DEPTH,
            ):
                tag = element.tag
                if event == "start":
                    if tag == "Annotation" and depth == 2:
                        layers += 1
                        layer = self._layer(layers, element.attrib, filename, limits)
                    elif layer is None:
                        pass
                    # While a layer is open, an element four deep is a grandchild of it.
                    elif tag == "Attribute" and depth == 4 and parent == "Attributes":
                        self._attribute(layer, element.attrib, filename, limits)
                    elif tag == "Region" and depth == 4 and parent == "Regions":
                        regions += 1
                        layer.regions += 1
                        region = self._region(layer, element.attrib, filename, limits)
                        if regions > limits.max_annotations:
                            raise InvalidInput(
                                f"{filename}: {region.where}: more than "
                                f"{limits.max_annotations} regions in one file"
                            )
                elif region is not None and tag == "Vertex" and parent == "Vertices":
                    self._vertex(region, element.attrib, filename, limits)
                elif region is not None and tag == "Region" and depth == 4:
                    assert layer is not None
                    self._keep(layer, region, filename)
                    region = None
                elif layer is not None and tag == "Annotation" and depth == 2:
                    yield from self._finish(layer, filename, classes, labelled)
                    layer.buffer.close()
                    layer = None
        finally:
            if layer is not None:
                layer.buffer.close()

    @staticmethod
    def _layer(
        number: int, attributes: dict[str, str], filename: str, limits: ImportLimits
    ) -> _Layer:
        name = attributes.get("Name", "")
        name = name if name.strip() else ""
        where = f"layer {number}" + (f" ({xml_input.quoted(name)})" if name else "")

        def fail(problem: str) -> NoReturn:
            raise InvalidInput(f"{filename}: {where}: {problem}")

        if len(name) > limits.max_text:
            fail(f"name longer than {limits.max_text} characters")
        return _Layer(number, name, _line_colour(attributes.get("LineColor"), fail))

    @staticmethod
    def _attribute(
        layer: _Layer, attributes: dict[str, str], filename: str, limits: ImportLimits
    ) -> None:
        name = attributes.get("Name", "")
        if layer.first_attribute is not None or not name.strip() or name == DEFAULT_ATTRIBUTE:
            return
        if len(name) > limits.max_text:
            raise InvalidInput(
                f"{filename}: {layer.where}: attribute name longer than {limits.max_text} "
                "characters"
            )
        layer.first_attribute = name

    @staticmethod
    def _region(
        layer: _Layer, attributes: dict[str, str], filename: str, limits: ImportLimits
    ) -> _Region:
        text = attributes.get("Text", "")
        identifier = attributes.get("Id", "")
        where = f"{layer.where}, region {layer.regions}"
        if identifier:
            where += f" (Id {xml_input.quoted(identifier, 20)[1:-1]})"
        if text:
            where += f" ({xml_input.quoted(text)})"

        def fail(problem: str) -> NoReturn:
            raise InvalidInput(f"{filename}: {where}: {problem}")

        if len(text) > limits.max_text:
            fail(f"Text longer than {limits.max_text} characters")
        kind = attributes.get("Type", "0").strip() or "0"
        if kind not in ("0", "1", "2", "3", "4"):
            fail(
                f"region Type {xml_input.quoted(kind)} is not one Slidebank reads (0 freehand, "
                "1 rectangle, 2 ellipse, 3 arrow, 4 ruler)"
            )
        negative = attributes.get("NegativeROA", "0").strip()
        if negative not in ("", "0", "1"):
            fail(f"NegativeROA is not 0 or 1: {xml_input.quoted(negative)}")
        return _Region(where, kind, text, negative == "1")

    @staticmethod
    def _vertex(
        region: _Region, attributes: dict[str, str], filename: str, limits: ImportLimits
    ) -> None:
        position = len(region.vertices) + 1
        if position > limits.max_vertices:
            raise InvalidInput(
                f"{filename}: {region.where}: more than {limits.max_vertices} vertices"
            )
        x = xml_input.plain_number(attributes.get("X"))
        y = xml_input.plain_number(attributes.get("Y"))
        if x is None or y is None:

            def fail(problem: str) -> NoReturn:
                raise InvalidInput(f"{filename}: {region.where}: vertex {position}: {problem}")

            x = xml_input.checked_number(attributes.get("X"), "X", fail)
            y = xml_input.checked_number(attributes.get("Y"), "Y", fail)
        region.vertices.append((x, y))

    @staticmethod
    def _keep(layer: _Layer, region: _Region, filename: str) -> None:
        def fail(problem: str) -> NoReturn:
            raise InvalidInput(f"{filename}: {region.where}: {problem}")

        geometry, shape = _geometry(region.type, region.vertices, fail)
        if region.negative and shape in _AREAS:
            layer.buffer.negatives.append((geometry, region.where))
        else:
            layer.buffer.add(region.where, shape, region.text or None, geometry)

    @staticmethod
    def _finish(
        layer: _Layer, filename: str, classes: dict[str, LabelStyle], labelled: set[str]
    ) -> Iterator[Parsed]:
        label = layer.label
        if label is not None and label not in labelled:
            # The first layer of a name says its colour; a repeat does not overwrite it.
            labelled.add(label)
            known = classes.get(label)
            if layer.color is not None:
                classes[label] = LabelStyle(color=layer.color, code=known.code if known else None)
            elif known is None:
                classes[label] = LabelStyle()
        negatives = layer.buffer.negatives
        tree = STRtree([geometry for geometry, _ in negatives]) if negatives else None
        for where, shape, name, geometry in layer.buffer.regions():
            if tree is not None and shape in _AREAS:
                excluded = _exclude(geometry, shape, tree, negatives, filename, where)
                if excluded is None:
                    continue
                geometry, shape = excluded
            annotation = Annotation(
                geometry=geometry,
                shape=shape,
                label=label,
                properties={"name": name} if name else {},
            )
            yield Parsed(annotation=annotation, where=where)


def _geometry(
    kind: str, vertices: list[tuple[float, float]], fail: Callable[[str], NoReturn]
) -> tuple[BaseGeometry, Shape]:
    count = len(vertices)
    if kind == "0":
        ring = xml_input.open_ring(vertices)
        if len(ring) == 1:
            return Point(ring[0]), "point"
        return xml_input.ring_polygon(ring, fail, "a freehand region"), "polygon"
    if kind == "1":
        return xml_input.corner_rectangle(vertices, fail, "a rectangle", "vertices"), "rectangle"
    if kind == "2":
        if count < 2:
            fail(f"an ellipse needs the 2 corners of its box, this one has {count} vertices")
        xs = [x for x, _ in vertices]
        ys = [y for _, y in vertices]
        return ellipse(min(xs), min(ys), max(xs), max(ys)), "ellipse"
    # Arrows (3) and rulers (4).
    if count < 2:
        fail(f"a line needs at least 2 vertices, this one has {count}")
    return LineString(vertices), "line"


def _exclude(
    geometry: BaseGeometry,
    shape: Shape,
    tree: STRtree,
    negatives: list[tuple[BaseGeometry, str]],
    filename: str,
    where: str,
) -> tuple[BaseGeometry, Shape] | None:
    """``geometry`` less the negative regions over it; None when nothing is left."""
    shell = Polygon(geometry.exterior)
    holes = list(geometry.interiors)
    crossing: list[BaseGeometry] = []
    for index in sorted(int(i) for i in tree.query(geometry)):
        negative, negative_where = negatives[index]
        try:
            if negative.within(shell):
                holes.append(negative.exterior)
            elif negative.intersects(geometry):
                crossing.append(negative)
        except GEOSException as error:
            raise InvalidInput(
                f"{filename}: {where}: cannot be related to the negative {negative_where}: {error}"
            ) from error
    if len(holes) == len(geometry.interiors) and not crossing:
        return geometry, shape
    result: BaseGeometry = Polygon(geometry.exterior, holes)
    for negative in crossing:
        try:
            result = result.difference(negative)
        except GEOSException as error:
            raise InvalidInput(
                f"{filename}: {where}: the negative region over it cannot be subtracted: {error}"
            ) from error
    polygons = [part for part in getattr(result, "geoms", [result]) if part.geom_type == "Polygon"]
    polygons = [part for part in polygons if not part.is_empty]
    if not polygons:
        return None
    if len(polygons) == 1:
        return polygons[0], "polygon"
    return MultiPolygon(polygons), "multipolygon"


# --- writing -----------------------------------------------------------------------------


def _coords(geometry: BaseGeometry) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in shapely.get_coordinates(geometry)]


def _is_axis_rectangle(polygon: Polygon) -> bool:
    ring = _coords(polygon.exterior)[:-1]
    if len(ring) != 4 or len(set(ring)) != 4:
        return False
    return all(a[0] == b[0] or a[1] == b[1] for a, b in pairwise([*ring, ring[0]]))


def _is_axis_ellipse(polygon: Polygon) -> bool:
    """Whether ``polygon`` is close to the ellipse inscribed in its bounding box, so that a
    ``Type="2"`` region (which is only that box) stands for it: a rotated ellipse is not."""
    x0, y0, x1, y1 = polygon.bounds
    inscribed = math.pi / 4 * (x1 - x0) * (y1 - y0)
    return bool(inscribed > 0 and abs(float(polygon.area) - inscribed) <= 0.05 * inscribed)


@dataclass(frozen=True)
class _RegionOut:
    type: int
    vertices: list[tuple[float, float]]
    negative: bool = False


def _regions(annotation: Annotation) -> tuple[list[_RegionOut], str | None]:
    """The regions one Slidebank annotation becomes, and a note of what changed."""
    geometry = annotation.geometry
    kind = geometry.geom_type
    if geometry.is_empty:
        return [], "an empty geometry, not written"
    if kind in ("Point", "MultiPoint"):
        points = [_RegionOut(0, [point]) for point in _coords(geometry)]
        if kind == "Point":
            return points, None
        return points, f"a multipoint written as {len(points)} one-vertex regions"
    if kind in ("LineString", "LinearRing", "MultiLineString"):
        lines = geometry.geoms if kind == "MultiLineString" else [geometry]
        arrows = [_RegionOut(3, [a, b]) for line in lines for a, b in pairwise(_coords(line))]
        if len(arrows) == 1:
            return arrows, None
        return arrows, f"a line written as {len(arrows)} arrows, one per segment"
    if kind in ("Polygon", "MultiPolygon"):
        polygons = list(geometry.geoms) if kind == "MultiPolygon" else [geometry]
        regions: list[_RegionOut] = []
        changes: list[str] = []
        for polygon in polygons:
            holes = len(polygon.interiors)
            if annotation.shape == "rectangle" and not holes and _is_axis_rectangle(polygon):
                regions.append(_RegionOut(1, _coords(polygon.exterior)[:-1]))
            elif annotation.shape == "ellipse" and not holes and _is_axis_ellipse(polygon):
                x0, y0, x1, y1 = polygon.bounds
                regions.append(_RegionOut(2, [(x0, y0), (x1, y1)]))
            else:
                regions.append(_RegionOut(0, _coords(polygon.exterior)[:-1]))
                regions.extend(
                    _RegionOut(0, _coords(ring)[:-1], True) for ring in polygon.interiors
                )
        if len(polygons) > 1:
            changes.append(f"a multipolygon written as {len(polygons)} regions")
        if annotation.shape in ("rectangle", "ellipse") and regions[0].type == 0:
            changes.append(
                f"a{'n' if annotation.shape == 'ellipse' else ''} "
                f"{annotation.shape} written as a freehand region"
            )
        return regions, "; ".join(changes) if changes else None
    return [], f"a {kind} cannot be written in ImageScope XML, not written"


class _Spool:
    """The regions of one layer, written out whole when every annotation has been seen."""

    def __init__(self, label: str | None) -> None:
        self.label = label
        # Closed by the writer once the layer is out: it lives across many annotations.
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115
        self.regions = 0


class ImageScopeWriter:
    name = "imagescope"
    media_type = "application/xml"
    suffix = ".xml"

    def write(self, items: Iterable[Annotation], out: BinaryIO, context: ExportContext) -> None:
        mpp = f' MicronsPerPixel="{context.mpp!r}"' if context.mpp else ""
        out.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<Annotations{mpp}>\n'.encode())
        spools: dict[str | None, _Spool] = {}
        layers = 0
        try:
            for annotation in items:
                regions, note = _regions(annotation)
                if not regions and note is None:
                    continue
                if any(region.negative for region in regions):
                    # Its own layer, so that its holes cut nothing else of its class.
                    layers += 1
                    own = _Spool(annotation.label)
                    try:
                        self._add(own, annotation, regions, note, context)
                        self._layer(out, own, layers, context)
                    finally:
                        own.file.close()
                    continue
                spool = spools.get(annotation.label)
                if spool is None:
                    spool = spools[annotation.label] = _Spool(annotation.label)
                self._add(spool, annotation, regions, note, context)
            for spool in spools.values():
                layers += 1
                self._layer(out, spool, layers, context)
        finally:
            for spool in spools.values():
                spool.file.close()
        out.write(b"</Annotations>\n")

    @staticmethod
    def _add(
        spool: _Spool,
        annotation: Annotation,
        regions: list[_RegionOut],
        note: str | None,
        context: ExportContext,
    ) -> None:
        name = annotation.properties.get("name")
        text = xml_input.attribute(name if isinstance(name, str) else "")
        mpp = context.mpp or 0.0
        lines: list[str] = []
        if note is not None:
            # "--" may not appear inside an XML comment.
            lines.append(f"\t\t\t<!-- slidebank: {note.replace('--', '- -')} -->\n")
        for region in regions:
            spool.regions += 1
            length, area = _measures(region)
            lines.append(
                f'\t\t\t<Region Id="{spool.regions}" Type="{region.type}" Zoom="1" Selected="0"'
                f' ImageLocation="" ImageFocus="-1" Length="{length:.1f}" Area="{area:.1f}"'
                f' LengthMicrons="{length * mpp:.1f}" AreaMicrons="{area * mpp * mpp:.1f}"'
                f' Text={text} NegativeROA="{int(region.negative)}" InputRegionId="0"'
                f' Analyze="1" DisplayId="{spool.regions}">\n'
                "\t\t\t\t<Attributes/>\n\t\t\t\t<Vertices>\n"
            )
            lines.extend(
                f'\t\t\t\t\t<Vertex X="{x!r}" Y="{y!r}" Z="0"/>\n' for x, y in region.vertices
            )
            lines.append("\t\t\t\t</Vertices>\n\t\t\t</Region>\n")
        spool.file.write("".join(lines).encode("utf-8"))

    @staticmethod
    def _layer(out: BinaryIO, spool: _Spool, number: int, context: ExportContext) -> None:
        style = context.classes.get(spool.label) if spool.label is not None else None
        color = _colorref(style.color if style else None)
        out.write(
            (
                f'\t<Annotation Id="{number}" Name={xml_input.attribute(spool.label or "")}'
                ' ReadOnly="0" NameReadOnly="0" LineColorReadOnly="0" Incremental="0" Type="4"'
                f' LineColor="{color}" Visible="1" Selected="0" MarkupImagePath=""'
                ' MacroName="">\n'
                "\t\t<Attributes>\n"
                f'\t\t\t<Attribute Name="{DEFAULT_ATTRIBUTE}" Id="0" Value=""/>\n'
                "\t\t</Attributes>\n"
                "\t\t<Regions>\n"
                "\t\t\t<RegionAttributeHeaders>\n"
                '\t\t\t\t<AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>\n'
                '\t\t\t\t<AttributeHeader Id="9997" Name="Length" ColumnWidth="-1"/>\n'
                '\t\t\t\t<AttributeHeader Id="9996" Name="Area" ColumnWidth="-1"/>\n'
                '\t\t\t\t<AttributeHeader Id="9998" Name="Text" ColumnWidth="-1"/>\n'
                "\t\t\t</RegionAttributeHeaders>\n"
            ).encode()
        )
        spool.file.seek(0)
        shutil.copyfileobj(spool.file, out, _WRITE_CHUNK)
        out.write(b"\t\t</Regions>\n\t\t<Plots/>\n\t</Annotation>\n")


def _measures(region: _RegionOut) -> tuple[float, float]:
    """Length and area in pixels, as ImageScope shows them beside each region."""
    vertices = region.vertices
    if region.type == 2:
        (x0, y0), (x1, y1) = vertices
        shape: BaseGeometry = ellipse(x0, y0, x1, y1)
    elif region.type == 3:
        shape = LineString(vertices)
    elif len(vertices) >= 3:
        shape = Polygon(vertices)
    else:
        return 0.0, 0.0
    length = shape.length
    area = shape.area
    return float(length), float(area)


reader = ImageScopeReader()
writer = ImageScopeWriter()
