"""Digital Slide Archive (HistomicsUI, large_image) annotation JSON.

A file holds one annotation document ``{"name", "description", "elements": [...]}``, the
girder API's wrapper ``{"annotation": {"name", "elements"}, "_id", ...}``, or a list of
either. Coordinates are level-0 pixels (x right, y down, origin at the top-left corner),
always written as ``[x, y, z]``; z is ignored on reading and written as 0.

Reading, element by element:

* ``point`` (``center``) → point.
* ``polyline`` (``points``): ``closed`` true → polygon (with ``holes``, a list of rings),
  otherwise → line. ``arrow`` (two ``points``, the head first) → line.
* ``rectangle`` and ``rectanglegrid`` (``center``, ``width``, ``height``, ``rotation``) →
  rectangle; a grid's subdivisions are not kept.
* ``ellipse`` (the same fields; width and height are the full axes) and ``circle``
  (``center``, ``radius``) → ellipse, as a polygon of 64 vertices.
* ``rotation`` is in radians and turns the shape's x axis towards its y axis in pixel
  coordinates (``x' = x cos r - y sin r``, ``y' = x sin r + y cos r``), as HistomicsUI
  computes it (``atan2`` of the top edge in pixel coordinates).
* The class is the element's ``group`` (HistomicsUI's convention); ``label.value`` is the
  object's own name (``properties["name"]``). ``lineColor`` (else ``fillColor``) becomes the
  class colour when the class has none yet, and ``properties["color"]`` when it differs
  from the class colour. Colours that are not ``#rgb``, ``#rrggbb``, ``rgb()`` or
  ``rgba()`` are ignored (they are cosmetic). ``user`` entries become properties, except
  ``user.measurements`` (names to numbers) and ``user.confidence`` (a number), which become
  the annotation's measurements and confidence (the writer's convention).
* Other element types (``heatmap``, ``griddata``, ``image``, ``pixelmap``) are not
  annotations of a region and are refused, naming the element.

Elements are numbered from 1 in messages; in a list of documents the document is named
too (``annotation 2: element 7``). Every form is read streaming: the reader holds one read
chunk (1 MiB) and the element being decoded, never the file (see :class:`_JsonStream`);
members other than ``elements`` (``name``, ``attributes``, girder's fields) are decoded
whole and dropped. ``ImportLimits`` are enforced as it goes.

Writing produces one document ``{"name": <set name>, "elements": [...]}``, streamed one
element at a time: point → ``point``; multipoint → one ``point`` per part; line → open
``polyline``; polygon → closed ``polyline`` with ``holes``; multipolygon → one closed
``polyline`` per part; rectangle → ``rectangle`` with the centre, size and rotation of
the polygon's minimum rotated rectangle; ellipse → ``ellipse`` whose major axis points to
the vertex farthest from the centroid (both exact for the rectangles and ellipses readers
make; another polygon so named is written as the rectangle or ellipse around it); the
rotation is kept within ±π/4. An empty geometry is not written. The class is written as
``group``, ``properties["name"]`` as ``label.value``, the object's colour (else its class
colour) as ``lineColor``, other properties, measurements and confidence in ``user``.
"""

from __future__ import annotations

import codecs
import functools
import io
import json
import math
import re
from collections.abc import Generator, Iterable, Iterator
from typing import Any, BinaryIO, NoReturn

import shapely
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry.base import BaseGeometry

from slidebank.annotations.formats.base import (
    ExportContext,
    ImportLimits,
    LabelStyle,
    Parsed,
    colour_hex,
)
from slidebank.annotations.model import Annotation, Shape, non_finite_in
from slidebank.errors import InvalidInput

ELLIPSE_VERTICES = 64
"""Vertices of the polygon that stands for an ellipse or circle (a multiple of 4, so that
the ends of both axes are vertices and the writer recovers the axes exactly)."""

_CHUNK = 1 << 20
"""Bytes read at a time: the reader holds about this much of the file, plus one element."""

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_HEX_COLOUR = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
_RGB_COLOUR = re.compile(
    r"rgba?\(\s*(\d+(?:\.\d*)?)\s*,\s*(\d+(?:\.\d*)?)\s*,\s*(\d+(?:\.\d*)?)\s*"
    r"(?:,\s*[0-9.]+\s*)?\)"
)
_DSA_TYPES = ("point", "polyline", "rectangle", "ellipse", "circle", "arrow", "rectanglegrid")
_SNIFF_TYPE = re.compile(r'"type"\s*:\s*"(?:' + "|".join(_DSA_TYPES) + r')"')
_OTHER_TYPES = ("heatmap", "griddata", "image", "pixelmap")
_WELL_KNOWN_FROM_ELEMENT = ("name", "color")
"""Properties the writer puts in the element's own fields rather than in ``user``."""


class _JsonStream:
    """One JSON text read from a binary stream a piece at a time.

    ``json`` has no incremental parser and ``ijson`` is not a dependency, so this walks the
    document's outer structure (objects, lists, keys) itself and hands each value it wants
    whole, such as one annotation element, to ``json.JSONDecoder.raw_decode`` over a sliding
    buffer. A DSA export of a million cells is about 1 GB; this holds one read chunk and one
    element at a time instead of the whole file and every parsed element.
    """

    def __init__(self, source: BinaryIO, filename: str, max_bytes: int) -> None:
        self._source = source
        self._filename = filename
        self._max_bytes = max_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._decoder = json.JSONDecoder()
        self._buffer = ""
        self._pos = 0
        self._dropped = 0
        """Characters before the buffer (for offsets in messages)."""
        self._bytes = 0
        self._eof = False
        self._at_start = True

    def fail(self, message: str) -> NoReturn:
        raise InvalidInput(f"{self._filename}: {message}")

    def _more(self, at_least: int = _CHUNK) -> bool:
        """Appends the next piece of the file to the buffer; False at the end of the file."""
        if self._eof:
            return False
        if self._pos:
            self._dropped += self._pos
            self._buffer = self._buffer[self._pos :]
            self._pos = 0
        data = self._source.read(max(at_least, _CHUNK))
        if not data:
            self._eof = True
            try:
                self._utf8.decode(b"", final=True)
            except UnicodeDecodeError:
                self.fail("is not UTF-8 text (it ends inside a character)")
            return False
        self._bytes += len(data)
        if self._bytes > self._max_bytes:
            self.fail(f"is larger than the limit of {self._max_bytes} bytes")
        try:
            text = self._utf8.decode(data)
        except UnicodeDecodeError as exc:
            self.fail(f"is not UTF-8 text (at byte offset {self._bytes - len(data) + exc.start})")
        if self._at_start and text:
            text = text.removeprefix("\ufeff")
            self._at_start = False
        self._buffer += text
        return True

    def peek(self) -> str:
        """The next character that is not white space, or "" at the end of the file."""
        while True:
            match = _WHITESPACE.match(self._buffer, self._pos)
            self._pos = match.end() if match else self._pos
            if self._pos < len(self._buffer):
                return self._buffer[self._pos]
            if not self._more():
                return ""

    def take(self, expected: str, where: str) -> None:
        found = self.peek()
        if found != expected:
            shown = repr(found) if found else "the end of the file"
            self.fail(f"{where}: expected {expected!r} at character {self.offset}, found {shown}")
        self._pos += 1

    @property
    def offset(self) -> int:
        return self._dropped + self._pos

    def value(self, where: str) -> Any:
        """Decodes the next value whole."""
        if not self.peek():
            self.fail(f"{where}: the file ends where a value was expected")
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buffer, self._pos)
            except json.JSONDecodeError as exc:
                # A value cut off by the end of the buffer fails at (or, for a string, from
                # the start of the string to) the end; anything else is really wrong.
                cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(exc.doc) - 16
                if cut and self._more(len(self._buffer) - self._pos):
                    continue
                self.fail(
                    f"{where}: invalid JSON at character {self._dropped + exc.pos}: {exc.msg}"
                )
            except RecursionError:
                self.fail(f"{where}: JSON nested too deeply at character {self.offset}")
            # A number that reaches the end of the buffer may go on in the next piece. Reading
            # at least as much again as is held keeps re-decoding a long value linear.
            if end == len(self._buffer) and self._more(len(self._buffer) - self._pos):
                continue
            self._pos = end
            return value

    def key(self, where: str) -> str:
        if self.peek() != '"':
            self.fail(f"{where}: expected a key at character {self.offset}")
        key = self.value(where)
        assert isinstance(key, str)
        self.take(":", where)
        return key

    def rest(self) -> str:
        """What is held of the file from the current position (for sniffing)."""
        return self._buffer[self._pos :]

    def end(self) -> None:
        if self.peek():
            self.fail(f"unexpected content after the JSON document at character {self.offset}")


def _elements(stream: _JsonStream) -> Iterator[tuple[str, Any]]:
    """Every element of the file with its place for messages, in file order."""
    first = stream.peek()
    if first == "[":
        where = "the list of annotations"
        stream.take("[", where)
        if stream.peek() == "]":
            stream.take("]", where)
        else:
            number = 0
            while True:
                number += 1
                yield from _document(stream, f"annotation {number}")
                if stream.peek() == ",":
                    stream.take(",", where)
                    continue
                stream.take("]", where)
                break
    elif first == "{":
        yield from _document(stream, None)
    else:
        stream.fail("is not a DSA annotation document (a JSON object or list)")
    stream.end()


def _document(stream: _JsonStream, name: str | None) -> Iterator[tuple[str, Any]]:
    """The elements of one document, or of the document in girder's wrapper
    ``{"annotation": {...}}``. ``name`` is the document's place in a list."""
    where = name or "the document"
    found = yield from _members(stream, name, where, wrapped=False)
    if not found:
        stream.fail(
            f'{where}: has no "elements" (girder\'s annotation listings leave them out; '
            "download each annotation by its id)"
        )


def _members(
    stream: _JsonStream, name: str | None, where: str, wrapped: bool
) -> Generator[tuple[str, Any], None, bool]:
    """Walks one JSON object; returns whether it held elements."""
    if stream.peek() != "{":
        stream.fail(f"{where}: is not a JSON object")
    stream.take("{", where)
    found = False
    if stream.peek() == "}":
        stream.take("}", where)
        return found
    prefix = f"{name}: " if name else ""
    while True:
        key = stream.key(where)
        if key == "elements":
            found = True
            yield from _element_list(stream, prefix)
        elif key == "annotation" and not wrapped and stream.peek() == "{":
            inner = f"{where}: annotation"
            found = (yield from _members(stream, name, inner, wrapped=True)) or found
        else:
            # Other members (name, description, attributes, girder's _id, ...) are small
            # next to the elements; they are decoded and dropped.
            stream.value(f"{where}: {key!r}")
        if stream.peek() == ",":
            stream.take(",", where)
            continue
        stream.take("}", where)
        return found


def _element_list(stream: _JsonStream, prefix: str) -> Iterator[tuple[str, Any]]:
    where = f"{prefix}elements"
    if stream.peek() != "[":
        stream.fail(f'{where}: "elements" is not a list')
    stream.take("[", where)
    if stream.peek() == "]":
        stream.take("]", where)
        return
    number = 0
    while True:
        number += 1
        place = f"{prefix}element {number}"
        yield place, stream.value(place)
        if stream.peek() == ",":
            stream.take(",", where)
            continue
        stream.take("]", where)
        return


def parse_colour(value: object) -> str | None:
    """``#rrggbb`` for a DSA colour string (``#rgb``, ``#rrggbb[aa]``, ``rgb()``, ``rgba()``),
    None for anything else."""
    # Longer strings are no colour (and are kept out of the cache).
    return _colour_text(value) if isinstance(value, str) and len(value) <= 64 else None


@functools.lru_cache(maxsize=1024)
def _colour_text(value: str) -> str | None:
    # Cached: a file of a million cells repeats a handful of colours.
    text = value.strip()
    if match := _HEX_COLOUR.fullmatch(text):
        digits = match.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return "#" + digits[:6].lower()
    if match := _RGB_COLOUR.fullmatch(text):
        red, green, blue = (min(255, round(float(part))) for part in match.groups())
        return colour_hex(red, green, blue)
    return None


class _Element:
    """Reads the fields of one element, naming it in every refusal."""

    def __init__(
        self, raw: dict[str, Any], where: str, filename: str, limits: ImportLimits
    ) -> None:
        self.raw = raw
        self.where = where
        self.filename = filename
        self.limits = limits

    def fail(self, message: str) -> NoReturn:
        raise InvalidInput(f"{self.filename}: {self.where}: {message}")

    def text(self, value: object, what: str) -> str:
        if not isinstance(value, str):
            self.fail(f"{what} is not a string")
        if len(value) > self.limits.max_text:
            self.fail(f"{what} is longer than {self.limits.max_text} characters")
        return value

    def number(self, key: str, default: float | None = None, minimum: float | None = None) -> float:
        value = self.raw.get(key)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"{key} is not a number")
        number = float(value)
        if not math.isfinite(number):
            self.fail(f"{key} is not finite")
        if minimum is not None and number < minimum:
            self.fail(f"{key} is negative")
        return number

    def coordinate(self, value: object, what: str) -> tuple[float, float]:
        if not isinstance(value, list) or len(value) not in (2, 3):
            self.fail(f"{what} is not a coordinate [x, y, z]")
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in value):
            self.fail(f"{what} has a value that is not a number")
        x, y = float(value[0]), float(value[1])
        if not (math.isfinite(x) and math.isfinite(y)):
            self.fail(f"{what} is not finite")
        return x, y

    def coordinates(self, value: object, what: str) -> list[tuple[float, float]]:
        if not isinstance(value, list):
            self.fail(f"{what} is not a list of coordinates")
        if len(value) > self.limits.max_vertices:
            self.fail(f"{what} has more than {self.limits.max_vertices} vertices")
        return [self.coordinate(item, f"{what} {index}") for index, item in enumerate(value, 1)]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def box_corners(
    cx: float, cy: float, width: float, height: float, rotation: float
) -> list[tuple[float, float]]:
    """Corners of a rotated rectangle: top-left, top-right, bottom-right, bottom-left before
    rotation."""
    cos, sin = math.cos(rotation), math.sin(rotation)
    corners = []
    for dx, dy in ((-width, -height), (width, -height), (width, height), (-width, height)):
        dx, dy = dx / 2, dy / 2
        corners.append((cx + dx * cos - dy * sin, cy + dx * sin + dy * cos))
    return corners


def ellipse_polygon(cx: float, cy: float, width: float, height: float, rotation: float) -> Polygon:
    """The polygon of ``ELLIPSE_VERTICES`` vertices for an ellipse of the given full axes."""
    cos, sin = math.cos(rotation), math.sin(rotation)
    ring = []
    for k in range(ELLIPSE_VERTICES):
        t = 2 * math.pi * k / ELLIPSE_VERTICES
        dx, dy = width / 2 * math.cos(t), height / 2 * math.sin(t)
        ring.append((cx + dx * cos - dy * sin, cy + dx * sin + dy * cos))
    return Polygon(ring)


def _geometry(element: _Element, kind: str) -> tuple[BaseGeometry, Shape]:
    raw = element.raw
    if kind == "point":
        return Point(element.coordinate(raw.get("center"), "center")), "point"
    if kind in ("polyline", "arrow"):
        points = element.coordinates(raw.get("points"), "points")
        closed = raw.get("closed", False) if kind == "polyline" else False
        if not isinstance(closed, bool):
            element.fail("closed is not true or false")
        if kind == "arrow" and len(points) != 2:
            element.fail(f"arrow has {_plural(len(points), 'point')} (it needs 2)")
        if not closed:
            if len(points) < 2:
                element.fail(f"polyline has {_plural(len(points), 'point')}")
            return LineString(points), "line"
        if len(points) < 3:
            element.fail(f"closed polyline has {_plural(len(points), 'point')} (it needs 3)")
        holes_raw = raw.get("holes") or []
        if not isinstance(holes_raw, list):
            element.fail("holes is not a list of rings")
        holes = []
        vertices = len(points)
        for number, hole_raw in enumerate(holes_raw, 1):
            hole = element.coordinates(hole_raw, f"hole {number}")
            if len(hole) < 3:
                element.fail(f"hole {number} has {_plural(len(hole), 'point')} (it needs 3)")
            vertices += len(hole)
            if vertices > element.limits.max_vertices:
                element.fail(f"has more than {element.limits.max_vertices} vertices")
            holes.append(hole)
        return Polygon(points, holes), "polygon"
    if kind in ("rectangle", "rectanglegrid", "ellipse"):
        cx, cy = element.coordinate(raw.get("center"), "center")
        width = element.number("width", minimum=0)
        height = element.number("height", minimum=0)
        rotation = element.number("rotation", default=0.0)
        if kind == "ellipse":
            return ellipse_polygon(cx, cy, width, height, rotation), "ellipse"
        return Polygon(box_corners(cx, cy, width, height, rotation)), "rectangle"
    if kind == "circle":
        cx, cy = element.coordinate(raw.get("center"), "center")
        radius = element.number("radius", minimum=0)
        return ellipse_polygon(cx, cy, 2 * radius, 2 * radius, 0.0), "ellipse"
    if kind in _OTHER_TYPES:
        element.fail(f"type {kind!r} is not an annotation of a region (not supported)")
    element.fail(f"unknown type {kind!r}")


def _json_length(value: object) -> int:
    return len(value) if isinstance(value, str) else len(json.dumps(value))


def _annotation(
    raw: object, where: str, filename: str, limits: ImportLimits, classes: dict[str, LabelStyle]
) -> Annotation:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{filename}: {where}: is not a JSON object")
    element = _Element(raw, where, filename, limits)
    kind = raw.get("type")
    if not isinstance(kind, str):
        element.fail('has no "type"')
    geometry, shape = _geometry(element, kind)

    group = raw.get("group")
    label = element.text(group, "group") if group is not None else None
    properties: dict[str, Any] = {}
    measurements: dict[str, float] = {}
    confidence: float | None = None
    user = raw.get("user")
    if user is not None:
        if not isinstance(user, dict):
            element.fail("user is not an object")
        for key, value in user.items():
            if len(key) > limits.max_text or _json_length(value) > limits.max_text:
                element.fail(
                    f"user property {key[:40]!r} is longer than {limits.max_text} characters"
                )
            # Python's JSON reads NaN, Infinity and 1e999; JSON has no spelling for them, so
            # once stored they would break every answer that carries them.
            if (at := non_finite_in(value)) is not None:
                element.fail(f"user property {key[:40] + at!r} is not a finite number")
            if key == "measurements" and _is_measurements(value):
                measurements = {name: float(number) for name, number in value.items()}
            elif key == "confidence" and _is_number(value):
                confidence = float(value)
            elif key == "color":
                # Only a colour the element fields do not give; kept if it is one.
                if (user_colour := parse_colour(value)) is not None:
                    properties["color"] = user_colour
            else:
                properties[key] = value
    label_field = raw.get("label")
    if label_field is not None:
        if not isinstance(label_field, dict):
            element.fail("label is not an object")
        value = label_field.get("value")
        if value is not None and (name := element.text(value, "label value")):
            properties["name"] = name
    colour = parse_colour(raw.get("lineColor")) or parse_colour(raw.get("fillColor"))
    if colour is not None:
        if label is not None:
            style = classes.get(label)
            if style is None or style.color is None:
                classes[label] = LabelStyle(color=colour, code=style.code if style else None)
        class_colour = classes[label].color if label is not None else None
        if colour != class_colour:
            properties["color"] = colour
        else:
            properties.pop("color", None)
    if label is not None and label not in classes:
        classes[label] = LabelStyle()
    return Annotation(
        geometry=geometry,
        shape=shape,
        label=label,
        properties=properties,
        measurements=measurements,
        confidence=confidence,
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_measurements(value: object) -> bool:
    return isinstance(value, dict) and all(_is_number(v) for v in value.values())


class DsaReader:
    name = "dsa"

    def sniff(self, head: bytes) -> bool:
        """Whether the first document's own keys (not those of something nested, such as a
        GeoJSON feature's properties) include ``elements`` or girder's ``annotation``."""
        stream = _JsonStream(io.BytesIO(head), "", len(head))
        try:
            if stream.peek() == "[":
                stream.take("[", "")
            if stream.peek() != "{":
                return False
            stream.take("{", "")
            while stream.peek() == '"':
                key = stream.key("")
                if key == "annotation":
                    return stream.peek() == "{"
                if key == "elements":
                    if stream.peek() != "[":
                        return False
                    stream.take("[", "")
                    # Other JSON has "elements" too (OpenStreetMap's, for one): the first
                    # element, often longer than the head, must start like a DSA shape.
                    first = stream.peek()
                    return first == "]" or (
                        first == "{" and _SNIFF_TYPE.search(stream.rest()) is not None
                    )
                stream.value("")
                if stream.peek() != ",":
                    return False
                stream.take(",", "")
            return False
        except InvalidInput:  # not JSON, or the head ends before a key says
            return False

    def read(
        self,
        source: BinaryIO,
        filename: str,
        limits: ImportLimits,
        classes: dict[str, LabelStyle],
    ) -> Iterator[Parsed]:
        stream = _JsonStream(source, filename, limits.max_bytes)
        for count, (where, raw) in enumerate(_elements(stream), 1):
            if count > limits.max_annotations:
                raise InvalidInput(
                    f"{filename}: {where}: more than {limits.max_annotations} annotations"
                )
            annotation = _annotation(raw, where, filename, limits, classes)
            name = annotation.properties.get("name")
            shown = f"{where} ({name[:60]!r})" if isinstance(name, str) and name else where
            yield Parsed(annotation, shown)


def box_parameters(geometry: BaseGeometry) -> tuple[float, float, float, float, float]:
    """Centre x, y, width, height and rotation (within ±π/4) of the geometry's minimum
    rotated rectangle."""
    rectangle = shapely.minimum_rotated_rectangle(geometry)
    if isinstance(rectangle, Polygon):
        p0, p1, p2 = (rectangle.exterior.coords[i] for i in range(3))
        width = math.dist(p0, p1)
        height = math.dist(p1, p2)
        rotation = math.atan2(p1[1] - p0[1], p1[0] - p0[0])
        centre = rectangle.centroid
        cx, cy = centre.x, centre.y
    elif isinstance(rectangle, LineString) and len(rectangle.coords) >= 2:
        (x0, y0), (x1, y1) = rectangle.coords[0], rectangle.coords[-1]
        width, height = math.dist((x0, y0), (x1, y1)), 0.0
        rotation = math.atan2(y1 - y0, x1 - x0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    else:
        point = geometry.centroid if not geometry.is_empty else Point(0, 0)
        return point.x, point.y, 0.0, 0.0, 0.0
    return _upright(cx, cy, width, height, rotation)


def ellipse_parameters(polygon: Polygon) -> tuple[float, float, float, float, float]:
    """Centre x, y, full axes along and across, and rotation (within ±π/4) of the ellipse a
    polygon stands for: the major axis points to the vertex farthest from the centroid.

    Exact for the polygons :func:`ellipse_polygon` makes (the ends of both axes are
    vertices); the minimum rotated rectangle is not, as a polygon's smallest box need not
    be aligned with its axes. Any other polygon gets the ellipse through its extreme
    vertices along those directions."""
    centre = polygon.centroid
    cx, cy = centre.x, centre.y
    ring = list(polygon.exterior.coords)[:-1]
    if not ring:
        return cx, cy, 0.0, 0.0, 0.0
    far = max(ring, key=lambda c: (c[0] - cx) ** 2 + (c[1] - cy) ** 2)
    rotation = math.atan2(far[1] - cy, far[0] - cx)
    cos, sin = math.cos(rotation), math.sin(rotation)
    along = max(abs((x - cx) * cos + (y - cy) * sin) for x, y, *_ in ring)
    across = max(abs(-(x - cx) * sin + (y - cy) * cos) for x, y, *_ in ring)
    return _upright(cx, cy, 2 * along, 2 * across, rotation)


def _upright(
    cx: float, cy: float, width: float, height: float, rotation: float
) -> tuple[float, float, float, float, float]:
    # The same box (or ellipse) turned by a half turn, or by a quarter turn with its sides
    # swapped: keep the rotation nearest to none so axis-aligned ones come out unrotated.
    rotation = math.remainder(rotation, math.pi)
    while rotation > math.pi / 4 + 1e-12:
        rotation -= math.pi / 2
        width, height = height, width
    while rotation <= -math.pi / 4 + 1e-12:
        rotation += math.pi / 2
        width, height = height, width
    if abs(rotation) < 1e-12:
        rotation = 0.0
    return cx, cy, width, height, rotation


def _which(annotation: Annotation, number: int) -> str:
    """Names an annotation being written: its place in the export, and its id if stored."""
    return f"annotation {number}" + (f" (id {annotation.id})" if annotation.id is not None else "")


def _xyz(x: float, y: float) -> list[float]:
    return [x, y, 0]


def _ring(coords: Iterable[tuple[float, ...]]) -> list[list[float]]:
    points = [_xyz(c[0], c[1]) for c in coords]
    return points[:-1] if len(points) > 1 and points[0] == points[-1] else points


class DsaWriter:
    name = "dsa"
    media_type = "application/json"
    suffix = ".json"

    def write(self, items: Iterable[Annotation], out: BinaryIO, context: ExportContext) -> None:
        out.write(b'{"name": ' + json.dumps(context.set_name).encode() + b', "elements": [')
        first = True
        for number, annotation in enumerate(items, 1):
            for element in self._elements(annotation, number, context):
                try:
                    text = json.dumps(element, ensure_ascii=False, allow_nan=False)
                except (TypeError, ValueError) as exc:
                    raise InvalidInput(
                        f"{_which(annotation, number)}: a property cannot be written as JSON "
                        f"({exc})"
                    ) from exc
                out.write(b"\n" if first else b",\n")
                out.write(text.encode())
                first = False
        out.write(b"\n]}\n")

    def _elements(
        self, annotation: Annotation, number: int, context: ExportContext
    ) -> Iterator[dict[str, Any]]:
        common = self._common(annotation, context)
        geometry = annotation.geometry
        if geometry.is_empty:
            return  # nothing to draw; one such object must not fail the whole export
        parts = list(getattr(geometry, "geoms", [geometry]))
        for part in parts:
            if part.is_empty:
                continue
            if isinstance(part, Point):
                yield {"type": "point", "center": _xyz(part.x, part.y), **common}
            elif isinstance(part, LineString):
                points = [_xyz(c[0], c[1]) for c in part.coords]
                yield {"type": "polyline", "closed": False, "points": points, **common}
            elif isinstance(part, Polygon) and annotation.shape in ("rectangle", "ellipse"):
                parameters = ellipse_parameters if annotation.shape == "ellipse" else box_parameters
                cx, cy, width, height, rotation = parameters(part)
                # Nine decimals drop the float noise of the fit (a billionth of a pixel).
                yield {
                    "type": annotation.shape,
                    "center": _xyz(round(cx, 9), round(cy, 9)),
                    "width": round(width, 9),
                    "height": round(height, 9),
                    "rotation": round(rotation, 12),
                    **common,
                }
            elif isinstance(part, Polygon):
                element: dict[str, Any] = {
                    "type": "polyline",
                    "closed": True,
                    "points": _ring(part.exterior.coords),
                }
                if part.interiors:
                    element["holes"] = [_ring(hole.coords) for hole in part.interiors]
                yield {**element, **common}
            else:
                raise InvalidInput(
                    f"{_which(annotation, number)}: a {part.geom_type} cannot be written as DSA"
                )

    @staticmethod
    def _common(annotation: Annotation, context: ExportContext) -> dict[str, Any]:
        common: dict[str, Any] = {}
        if annotation.label is not None:
            common["group"] = annotation.label
        name = annotation.properties.get("name")
        if isinstance(name, str) and name:
            common["label"] = {"value": name}
        colour = parse_colour(annotation.properties.get("color"))
        if colour is None and annotation.label is not None:
            style = context.classes.get(annotation.label)
            colour = parse_colour(style.color) if style else None
        if colour is not None:
            common["lineColor"] = colour
        user = {
            key: value
            for key, value in annotation.properties.items()
            if key not in _WELL_KNOWN_FROM_ELEMENT
        }
        if annotation.measurements:
            user["measurements"] = dict(annotation.measurements)
        if annotation.confidence is not None:
            user["confidence"] = annotation.confidence
        if user:
            common["user"] = user
        return common


reader = DsaReader()
writer = DsaWriter()
