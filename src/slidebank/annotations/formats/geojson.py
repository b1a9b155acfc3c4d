"""GeoJSON, plain and as QuPath writes it (annotations, detections, cells with their nucleus,
classification name and colour, measurements).

Reading streams: a FeatureCollection of a million cells is about 600 MB, so features are
cut out of a sliding window by a vectorised scan of the JSON structure and decoded by
orjson a window at a time (neither the json module, which has no incremental API, nor
ijson's C backend reached 20,000 features/s here), and geometries are built a batch at a
time with ``shapely.from_ragged_array`` (about 3× faster than one ``shapely.geometry.shape``
per feature). The file's structure is checked as it is read;
geometry validity and slide bounds are judged by ``annotations.checking``.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any, BinaryIO

import numpy as np
import orjson
import shapely
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from slidebank.annotations.formats.base import (
    ExportContext,
    ImportLimits,
    LabelStyle,
    Parsed,
    Piece,
    colour_hex,
)
from slidebank.annotations.model import Annotation, Shape
from slidebank.errors import InvalidInput

CHUNK = 1 << 20
WHITESPACE = re.compile(rb"[ \t\n\r]*")
SCALAR = re.compile(rb'"(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*|true|false|null')
SHAPES: dict[str, Shape] = {
    "Point": "point",
    "MultiPoint": "multipoint",
    "LineString": "line",
    "MultiLineString": "line",
    "Polygon": "polygon",
    "MultiPolygon": "multipolygon",
}
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
QUOTE, BACKSLASH, OPEN_BRACE, CLOSE_BRACE, OPEN_BRACKET, CLOSE_BRACKET = b'"\\{}[]'


# The bytes that make JSON's structure, as codes; every other byte becomes 0.
STRUCTURAL = bytes(
    {QUOTE: 1, OPEN_BRACE: 2, OPEN_BRACKET: 2, CLOSE_BRACE: 3, CLOSE_BRACKET: 3, BACKSLASH: 4}.get(
        byte, 0
    )
    for byte in range(256)
)


def _element_ends(window: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Where in ``window`` (a run of JSON values starting outside any string) each value at
    the top level ends (the offset of its closing bracket), and where brackets close that
    were opened before the window (its enclosing array's ``]``).

    Vectorised with numpy, over the structural bytes only (about one in six of a cell
    file's): a Python loop over a 600 MB file would take minutes, and numpy over every
    byte took a third of an import's time in the process that writes it."""
    codes_everywhere = np.frombuffer(window.translate(STRUCTURAL), dtype=np.uint8)
    where = np.flatnonzero(codes_everywhere)
    codes = codes_everywhere[where]
    quotes = codes == 1
    if BACKSLASH in window:
        # A quote is escaped when a run of an odd number of backslashes ends just before it.
        backslash = codes == 4
        adjacent = np.zeros(len(codes), dtype=bool)
        adjacent[1:] = np.diff(where) == 1
        continues = backslash & np.roll(backslash, 1) & adjacent
        index = np.arange(len(codes))
        run_start = np.maximum.accumulate(np.where(continues, 0, index))
        odd_run = backslash & ((index - run_start) % 2 == 0)
        escaped = np.zeros(len(codes), dtype=bool)
        escaped[1:] = odd_run[:-1] & adjacent[1:]
        quotes &= ~escaped
    # Parity is all that matters: a uint8 running sum keeps it in an eighth of the memory.
    outside = (np.cumsum(quotes, dtype=np.uint8) & 1) == 0
    closes = (codes == 3) & outside
    steps = ((codes == 2) & outside).astype(np.int32) - closes
    depth = np.cumsum(steps, dtype=np.int32)
    return where[closes & (depth == 0)], where[closes & (depth < 0)]


class _Source:
    """A binary stream in a sliding window, counted against the byte limit. Values are cut
    out of the window by their structure (``_element_ends``) and decoded by orjson: the json
    module's decoder was the slowest step of an import (about 10 MB/s on cell files)."""

    def __init__(self, source: BinaryIO, filename: str, limits: ImportLimits) -> None:
        self._source = source
        self._filename = filename
        self._limit = limits.max_bytes
        self.read = 0
        self.data = b""
        self.pos = 0
        self.done = False
        self.started = False

    def more(self, at_least: int = CHUNK) -> bool:
        if self.done:
            return False
        chunk = self._source.read(max(at_least, CHUNK))
        self.read += len(chunk)
        if self.read > self._limit:
            raise InvalidInput(
                f"{self._filename}: larger than the import limit of {self._limit:,} bytes"
            )
        if not self.started:
            self.started = True
            if chunk.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise InvalidInput(f"{self._filename}: not UTF-8 text (it looks like UTF-16)")
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
        self.data = self.data[self.pos :] + chunk
        self.pos = 0
        self.done = not chunk
        return True

    def skip(self) -> str:
        """Skips whitespace; the next character, or "" at the end."""
        while True:
            self.pos = WHITESPACE.match(self.data, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.data):
                return chr(self.data[self.pos])
            if not self.more():
                return ""

    def expect(self, character: str, where: str) -> None:
        found = self.skip()
        if found != character:
            raise InvalidInput(
                f"{self._filename}: {where}: expected {character!r}, found {found or 'the end'!r}"
            )
        self.pos += 1

    def _decode(self, text: bytes, where: str) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"{self._filename}: {where}: not valid JSON ({exc})") from exc

    def value(self, where: str) -> Any:
        """One JSON value at the current position."""
        want = CHUNK
        while True:
            first = self.skip()
            if first in ("{", "["):
                ends, _ = _element_ends(self.data[self.pos :])
                if len(ends):
                    end = self.pos + int(ends[0]) + 1
                    value = self._decode(self.data[self.pos : end], where)
                    self.pos = end
                    return value
            else:
                match = SCALAR.match(self.data, self.pos)
                if match and (match.end() < len(self.data) or self.done):
                    self.pos = match.end()
                    return self._decode(match.group(), where)
                if not match and first:
                    raise InvalidInput(
                        f"{self._filename}: {where}: not valid JSON (unexpected {first!r})"
                    )
            # The value runs past the window: read more (twice as much each time, so one
            # huge value is not rescanned per chunk).
            if not self.more(want):
                raise InvalidInput(f"{self._filename}: {where}: not valid JSON (the file ends)")
            want *= 2

    def pieces(self, name: str, first_index: int = 0) -> Iterator[Piece]:
        """The elements of an array (the position is just after its ``[``), cut a window
        at a time: all the complete elements in the window, undecoded."""
        index = first_index
        want = CHUNK
        while True:
            window = self.data[self.pos :]
            ends, below = _element_ends(window)
            upto = int(below[0]) if len(below) else None  # the array's own "]"
            if upto is None:
                if not len(ends):
                    if not self.more(want):
                        raise InvalidInput(
                            f"{self._filename}: {name}: not valid JSON (the file ends inside "
                            f"feature {index})"
                        )
                    want *= 2
                    continue
                upto = int(ends[-1]) + 1
            want = CHUNK
            ended = len(below) > 0
            count = int(np.count_nonzero(ends < upto))
            del below, ends  # not held while the window is handed out
            body = window[:upto].strip()
            if index > first_index:  # the comma after the previous window's last element
                body = body.removeprefix(b",")
            if body:
                yield Piece(index, count, body)
                index += count
            self.pos += upto
            if ended:
                self.pos += 1
                return
            if self.pos >= len(self.data) and not self.more():
                raise InvalidInput(f"{self._filename}: {name}: the file ends inside the list")


def _decoded(piece: Piece, filename: str) -> list[Any]:
    """The features of a piece: one orjson call for them all."""
    try:
        features = orjson.loads(b"[" + piece.body + b"]")
    except orjson.JSONDecodeError as exc:
        # Name the feature that is wrong: count the complete elements before the error.
        ends, _ = _element_ends(piece.body)
        before = int(np.count_nonzero(ends < exc.pos - 1))
        raise InvalidInput(
            f"{filename}: feature {piece.first_index + before}: not valid JSON ({exc.msg})"
        ) from exc
    if len(features) != piece.count:  # an element that is neither object nor list
        first = next(i for i, feature in enumerate(features) if not isinstance(feature, dict))
        raise InvalidInput(f"{filename}: feature {piece.first_index + first}: not a GeoJSON object")
    return features  # type: ignore[no-any-return]


def _pieces(source: _Source, filename: str) -> Iterator[Piece]:
    """The features (or bare geometries) of a FeatureCollection, a list, or a single object."""
    first = source.skip()
    if first == "[":
        source.pos += 1
        yield from source.pieces("feature list")
        return
    if first != "{":
        raise InvalidInput(f"{filename}: not GeoJSON: it does not start with an object or a list")
    # An object: read it key by key so that a "features" array is streamed, whatever the
    # order of its keys.
    source.pos += 1
    other: dict[str, Any] = {}
    streamed = False
    while True:
        character = source.skip()
        if character == "}":
            source.pos += 1
            break
        if other or streamed:
            source.expect(",", "top-level object")
        key = source.value("a top-level key")
        if not isinstance(key, str):
            raise InvalidInput(f"{filename}: not GeoJSON: a top-level key is not a string")
        source.expect(":", f"key {key!r}")
        if key == "features" and source.skip() == "[":
            source.pos += 1
            yield from source.pieces("features")
            streamed = True
        else:
            other[key] = source.value(f"key {key!r}")
    kind = other.get("type")
    if streamed:
        if kind not in (None, "FeatureCollection"):
            raise InvalidInput(f"{filename}: an object of type {kind!r} has features")
        return
    if kind == "Feature" or kind in SHAPES:
        yield Piece(0, 1, orjson.dumps(other))
        return
    raise InvalidInput(
        f"{filename}: not GeoJSON: expected a FeatureCollection, a Feature or a geometry, "
        f"found type {kind!r}"
    )


def _where(index: int, feature: Any) -> str:
    name = None
    if isinstance(feature, dict) and isinstance(feature.get("properties"), dict):
        name = feature["properties"].get("name")
    return f"feature {index} ({name!r})" if isinstance(name, str) and name else f"feature {index}"


def _colour(value: Any) -> str | None:
    """QuPath writes ``[r, g, b]`` or a packed ARGB integer (``colorRGB``); others ``#rrggbb``."""
    if isinstance(value, list) and len(value) >= 3 and all(isinstance(v, int) for v in value[:3]):
        return colour_hex(value[0], value[1], value[2])
    if isinstance(value, int) and not isinstance(value, bool):
        return colour_hex(value >> 16, value >> 8, value)
    if isinstance(value, str) and HEX_COLOUR.fullmatch(value):
        return value.lower()
    return None


def _text(value: Any, limits: ImportLimits, what: str, where: str, filename: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{filename}: {where}: {what} is not text")
    if len(value) > limits.max_text:
        raise InvalidInput(
            f"{filename}: {where}: {what} is longer than {limits.max_text:,} characters"
        )
    return value


def _measurements(value: Any, where: str, filename: str) -> dict[str, float]:
    """QuPath ≤ 0.3 writes a list of {name, value}; later versions a mapping."""
    pairs: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = value.items()
    elif isinstance(value, list):
        pairs = ((item.get("name"), item.get("value")) for item in value if isinstance(item, dict))
    elif value is None:
        return {}
    else:
        raise InvalidInput(f"{filename}: {where}: measurements are not a list or a mapping")
    found: dict[str, float] = {}
    for name, number in pairs:
        if isinstance(name, str) and isinstance(number, int | float) and math.isfinite(number):
            found[name] = float(number)
    return found


def _label(properties: dict[str, Any], classes: dict[str, LabelStyle], ctx: _Context) -> Any:
    classification = properties.get("classification")
    colour = None
    if isinstance(classification, dict):
        label = classification.get("name")
        colour = _colour(classification.get("color", classification.get("colorRGB")))
    elif isinstance(classification, str):
        label = classification
    else:
        label = properties.get("label", properties.get("class"))
    if label is None:
        return None
    label = _text(label, ctx.limits, "the class name", ctx.where, ctx.filename)
    if label not in classes or (classes[label].color is None and colour is not None):
        classes[label] = LabelStyle(color=colour)
    return label


class _Context:
    def __init__(self, filename: str, limits: ImportLimits) -> None:
        self.filename = filename
        self.limits = limits
        self.where = ""
        self._labels: dict[Any, str | None] = {}
        self._shared: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}

    def shared(self, kept: dict[str, Any]) -> dict[str, Any]:
        """One dict for every cell with the same plain properties (``{"object_type":
        "detection"}``): the store then encodes it once per batch."""
        if len(kept) > 2 or not all(isinstance(v, str) for v in kept.values()):
            return kept
        key = tuple(sorted(kept.items()))
        return self._shared.setdefault(key, kept)

    def label(self, properties: dict[str, Any], classes: dict[str, LabelStyle]) -> str | None:
        """The class, worked out once per distinct classification (cells repeat a few)."""
        classification = properties.get("classification")
        key: Any = (
            orjson.dumps(classification)
            if isinstance(classification, dict)
            else (classification, properties.get("label"), properties.get("class"))
        )
        if key not in self._labels:
            self._labels[key] = _label(properties, classes, self)
        return self._labels[key]


# Properties with a meaning of their own; every other one is kept as it is.
KNOWN = frozenset(
    {"name", "color", "objectType", "nucleusGeometry", "classification", "label", "class"}
    | {"measurements", "isLocked", "shape", "confidence"}
)


def _annotation(
    feature: Any,
    geometry: BaseGeometry,
    classes: dict[str, LabelStyle],
    ctx: _Context,
    rectangle_candidate: bool = True,
) -> Annotation:
    properties = feature.get("properties") if "geometry" in feature else None
    if not isinstance(properties, dict):
        properties = {}
    kept: dict[str, Any] = {}
    if (name := properties.get("name")) is not None:
        kept["name"] = _text(name, ctx.limits, "the name", ctx.where, ctx.filename)
    if (colour := properties.get("color")) is not None and (colour := _colour(colour)):
        kept["color"] = colour
    if isinstance(object_type := properties.get("objectType"), str):
        kept["object_type"] = object_type
    nucleus = feature.get("nucleusGeometry", properties.get("nucleusGeometry"))
    if isinstance(nucleus, dict):
        kept["nucleus"] = nucleus
    if not KNOWN.issuperset(properties):
        for key, value in properties.items():
            if key in KNOWN:
                continue
            if len(json.dumps(value)) > ctx.limits.max_text:
                raise InvalidInput(
                    f"{ctx.filename}: {ctx.where}: property {key!r} is longer than "
                    f"{ctx.limits.max_text:,} characters"
                )
            kept[key] = value
    confidence = properties.get("confidence")
    kind = SHAPES[feature["geometry"]["type"] if "geometry" in feature else feature["type"]]
    declared = properties.get("shape")
    if declared in ("rectangle", "ellipse") and kind == "polygon":
        kind = declared
    elif kind == "polygon" and rectangle_candidate and _is_rectangle(geometry):
        kind = "rectangle"  # QuPath exports its rectangles as plain polygons
    measurements = properties.get("measurements")
    return Annotation(
        geometry=geometry,
        shape=kind,
        label=ctx.label(properties, classes),
        properties=ctx.shared(kept),
        measurements=_measurements(measurements, ctx.where, ctx.filename) if measurements else {},
        confidence=float(confidence) if isinstance(confidence, int | float) else None,
    )


def _is_rectangle(geometry: BaseGeometry) -> bool:
    exterior = getattr(geometry, "exterior", None)
    return (
        exterior is not None
        and len(exterior.coords) == 5
        and not geometry.interiors  # type: ignore[attr-defined]
        and geometry.equals(shapely.box(*geometry.bounds))
    )


def _geometry_of(index: int, feature: Any, ctx: _Context) -> dict[str, Any]:
    if not isinstance(feature, dict):
        raise InvalidInput(f"{ctx.filename}: {ctx.where}: not a GeoJSON object")
    geometry = feature.get("geometry") if feature.get("type") == "Feature" else feature
    if not isinstance(geometry, dict):
        raise InvalidInput(f"{ctx.filename}: {ctx.where}: has no geometry")
    kind = geometry.get("type")
    if kind not in SHAPES:
        raise InvalidInput(
            f"{ctx.filename}: {ctx.where}: geometry type {kind!r} is not one of {', '.join(SHAPES)}"
        )
    return geometry


def _polygon_rings(geometry: dict[str, Any]) -> list[Any] | None:
    """The rings of a simple Polygon in the fast path's form, or None for the slow path."""
    if geometry["type"] != "Polygon":
        return None
    rings = geometry.get("coordinates")
    if not isinstance(rings, list) or not rings:
        return None
    return rings


def _slow(geometry: dict[str, Any], ctx: _Context) -> BaseGeometry:
    """One feature at a time, for other types and for messages that name the feature."""
    try:
        built = shape(geometry)
        coordinates = shapely.get_coordinates(built)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise InvalidInput(
            f"{ctx.filename}: {ctx.where}: malformed {geometry.get('type')} coordinates ({exc})"
        ) from exc
    if built.is_empty:
        raise InvalidInput(f"{ctx.filename}: {ctx.where}: empty geometry")
    if not np.isfinite(coordinates).all():
        raise InvalidInput(f"{ctx.filename}: {ctx.where}: coordinates are not finite numbers")
    if len(coordinates) > ctx.limits.max_vertices:
        raise InvalidInput(
            f"{ctx.filename}: {ctx.where}: {len(coordinates):,} vertices, more than "
            f"{ctx.limits.max_vertices:,}"
        )
    if shapely.has_z(built):
        built = shapely.force_2d(built)
    return built


def _fast_polygons(rings: list[list[Any]]) -> Any:
    """Polygons (with holes) from plain 2-D coordinate lists, vectorised; None when any
    coordinate is not a plain ``[x, y]`` pair of finite numbers (the slow path decides)."""
    polygon_rings = [len(polygon) for polygon in rings]
    every_ring = list(chain.from_iterable(rings))
    ring_lengths = [len(ring) for ring in every_ring]
    pairs = sum(ring_lengths)
    try:
        # One flat pass over the numbers (np.array on nested lists costs several times
        # more); a pair that is not two numbers shows as a wrong count or a TypeError.
        numbers = np.fromiter(
            chain.from_iterable(chain.from_iterable(every_ring)), dtype=np.float64
        )
    except (ValueError, TypeError):
        return None
    if len(numbers) != 2 * pairs or not np.isfinite(numbers).all() or min(ring_lengths) < 4:
        return None
    coordinates = numbers.reshape(pairs, 2)
    ring_offsets = np.zeros(len(ring_lengths) + 1, dtype=np.int64)
    np.cumsum(ring_lengths, out=ring_offsets[1:])
    polygon_offsets = np.zeros(len(polygon_rings) + 1, dtype=np.int64)
    np.cumsum(polygon_rings, out=polygon_offsets[1:])
    return shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, coordinates, (ring_offsets, polygon_offsets)
    )


class GeoJsonReader:
    name = "geojson"

    def sniff(self, head: bytes) -> bool:
        text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if not text.startswith((b"{", b"[")):
            return False
        return (
            any(
                marker in head
                for marker in (b'"FeatureCollection"', b'"Feature"', b'"coordinates"')
            )
            and b'"elements"' not in head
        )

    def read(
        self,
        source: BinaryIO,
        filename: str,
        limits: ImportLimits,
        classes: dict[str, LabelStyle],
    ) -> Iterator[Parsed]:
        for piece in self.pieces(source, filename, limits):
            yield from self.read_piece(piece, filename, limits, classes)

    def pieces(self, source: BinaryIO, filename: str, limits: ImportLimits) -> Iterator[Piece]:
        for piece in _pieces(_Source(source, filename, limits), filename):
            if piece.first_index + piece.count > limits.max_annotations:
                raise InvalidInput(f"{filename}: more than {limits.max_annotations:,} annotations")
            yield piece

    def read_piece(
        self,
        piece: Piece,
        filename: str,
        limits: ImportLimits,
        classes: dict[str, LabelStyle],
    ) -> list[Parsed]:
        ctx = _Context(filename, limits)
        batch: list[tuple[int, Any, dict[str, Any]]] = []
        for index, feature in enumerate(_decoded(piece, filename), piece.first_index):
            ctx.where = _where(index, feature)
            batch.append((index, feature, _geometry_of(index, feature, ctx)))
        return list(self._batch(batch, classes, ctx))

    def _batch(
        self,
        batch: list[tuple[int, Any, dict[str, Any]]],
        classes: dict[str, LabelStyle],
        ctx: _Context,
    ) -> Iterator[Parsed]:
        simple = [(i, rings) for i, (_, _, g) in enumerate(batch) if (rings := _polygon_rings(g))]
        built: dict[int, BaseGeometry] = {}
        if simple:
            vertices = [sum(len(ring) for ring in rings) for _, rings in simple]
            polygons = (
                _fast_polygons([rings for _, rings in simple])
                if max(vertices) <= ctx.limits.max_vertices
                else None
            )
            if polygons is not None:
                built = {position: polygons[k] for k, (position, _) in enumerate(simple)}
        for position, (index, feature, geometry) in enumerate(batch):
            ctx.where = _where(index, feature)
            made = built.get(position)
            if made is None:
                made = _slow(geometry, ctx)
            # Only a single ring of five points can be an axis-aligned rectangle: the JSON
            # says so without asking shapely about every cell.
            coordinates: Any = geometry.get("coordinates") or []
            candidate = geometry["type"] != "Polygon" or (
                len(coordinates) == 1 and len(coordinates[0]) == 5
            )
            yield Parsed(_annotation(feature, made, classes, ctx, candidate), ctx.where)


def _feature(item: Annotation, context: ExportContext, qupath: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    extra = {k: v for k, v in item.properties.items() if k not in ("nucleus", "object_type")}
    if qupath:
        properties["objectType"] = item.properties.get("object_type", "annotation")
        if "name" in extra:
            properties["name"] = extra.pop("name")
        if "color" in extra:
            colour = extra.pop("color")
            properties["color"] = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        if item.label is not None:
            style = context.classes.get(item.label, LabelStyle())
            classification: dict[str, Any] = {"name": item.label}
            if style.color:
                classification["color"] = [int(style.color[i : i + 2], 16) for i in (1, 3, 5)]
            properties["classification"] = classification
        properties["isLocked"] = False
    else:
        if item.label is not None:
            properties["label"] = item.label
        if "object_type" in item.properties:
            properties["objectType"] = item.properties["object_type"]
        if "nucleus" in item.properties:
            properties["nucleusGeometry"] = item.properties["nucleus"]
    properties.update(extra)
    if item.measurements:
        properties["measurements"] = dict(item.measurements)
    if item.confidence is not None:
        properties["confidence"] = item.confidence
    if item.shape in ("rectangle", "ellipse"):
        properties["shape"] = item.shape
    feature: dict[str, Any] = {
        "type": "Feature",
        "id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{context.set_name}/{item.number}"))
        if qupath
        else item.number,
        "geometry": mapping(item.geometry),
        "properties": properties,
    }
    if qupath and "nucleus" in item.properties:
        feature["nucleusGeometry"] = item.properties["nucleus"]
    return feature


class GeoJsonWriter:
    """A FeatureCollection written feature by feature."""

    media_type = "application/geo+json"
    suffix = ".geojson"

    def __init__(self, name: str, qupath: bool) -> None:
        self.name = name
        self._qupath = qupath

    def write(self, items: Iterable[Annotation], out: BinaryIO, context: ExportContext) -> None:
        out.write(b'{"type":"FeatureCollection","features":[')
        encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
        for index, item in enumerate(items):
            if index:
                out.write(b",\n")
            out.write(encoder.encode(_feature(item, context, self._qupath)).encode())
        out.write(b"]}\n")


reader = GeoJsonReader()
writer = GeoJsonWriter("geojson", qupath=False)
qupath_writer = GeoJsonWriter("qupath", qupath=True)
