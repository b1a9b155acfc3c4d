"""GeoJSON, plain and as QuPath writes it (annotations, detections, cells with their nucleus,
classification name and colour, measurements).

Reading streams: a FeatureCollection of a million cells is about 600 MB, so features are
decoded one at a time from a sliding buffer (``json.JSONDecoder.raw_decode``; the json
module has no incremental API and ijson's C backend was no faster here), and geometries
are built a batch at a time with ``shapely.from_ragged_array`` (about 3× faster than one
``shapely.geometry.shape`` per feature). The file's structure is checked as it is read;
geometry validity and slide bounds are judged by ``annotations.checking``.
"""

from __future__ import annotations

import codecs
import json
import math
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import numpy as np
import shapely
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from slidebank.annotations.formats.base import (
    ExportContext,
    ImportLimits,
    LabelStyle,
    Parsed,
    colour_hex,
)
from slidebank.annotations.model import Annotation, Shape
from slidebank.errors import InvalidInput

CHUNK = 1 << 20
BATCH = 4096
WHITESPACE = re.compile(r"[ \t\n\r]*")
SHAPES: dict[str, Shape] = {
    "Point": "point",
    "MultiPoint": "multipoint",
    "LineString": "line",
    "MultiLineString": "line",
    "Polygon": "polygon",
    "MultiPolygon": "multipolygon",
}
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


class _Incomplete(Exception):
    """The buffer ends inside a value: read more."""


class _Source:
    """Text of a binary stream in a sliding window, counted against the byte limit."""

    def __init__(self, source: BinaryIO, filename: str, limits: ImportLimits) -> None:
        self._source = source
        self._filename = filename
        self._limit = limits.max_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.read = 0
        self.text = ""
        self.pos = 0
        self.done = False

    def more(self, at_least: int = CHUNK) -> bool:
        if self.done:
            return False
        chunk = self._source.read(max(at_least, CHUNK))
        self.read += len(chunk)
        if self.read > self._limit:
            raise InvalidInput(
                f"{self._filename}: larger than the import limit of {self._limit:,} bytes"
            )
        try:
            text = self._decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{self._filename}: not UTF-8 text ({exc.reason})") from exc
        if self.pos > len(self.text) // 2:
            self.text, self.pos = self.text[self.pos :], 0
        self.text += text
        self.done = not chunk
        return True

    def skip(self) -> str:
        """Skips whitespace; the next character, or "" at the end."""
        while True:
            self.pos = WHITESPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def expect(self, character: str, where: str) -> None:
        found = self.skip()
        if found != character:
            raise InvalidInput(
                f"{self._filename}: {where}: expected {character!r}, found {found or 'the end'!r}"
            )
        self.pos += 1

    def value(self, decoder: json.JSONDecoder, where: str) -> Any:
        want = CHUNK
        while True:
            self.skip()
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                # A value cut by the window's end fails like a broken one: read more (twice
                # as much each time, so one huge feature is not rescanned per megabyte).
                if self.more(want):
                    want *= 2
                    continue
                raise InvalidInput(
                    f"{self._filename}: {where}: not valid JSON ({exc.msg} at byte about "
                    f"{self.read - len(self.text) + exc.pos:,})"
                ) from exc
            self.pos = end
            return value


def _features(source: _Source, filename: str) -> Iterator[Any]:
    """Each feature (or bare geometry) of a FeatureCollection, a list, or a single object."""
    decoder = json.JSONDecoder()
    first = source.skip()
    if first == "[":
        source.pos += 1
        yield from _array(source, decoder, "feature list")
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
        key = source.value(decoder, "a top-level key")
        if not isinstance(key, str):
            raise InvalidInput(f"{filename}: not GeoJSON: a top-level key is not a string")
        source.expect(":", f"key {key!r}")
        if key == "features" and source.skip() == "[":
            source.pos += 1
            yield from _array(source, decoder, "features")
            streamed = True
        else:
            other[key] = source.value(decoder, f"key {key!r}")
    kind = other.get("type")
    if streamed:
        if kind not in (None, "FeatureCollection"):
            raise InvalidInput(f"{filename}: an object of type {kind!r} has features")
        return
    if kind == "Feature" or kind in SHAPES:
        yield other
        return
    raise InvalidInput(
        f"{filename}: not GeoJSON: expected a FeatureCollection, a Feature or a geometry, "
        f"found type {kind!r}"
    )


def _array(source: _Source, decoder: json.JSONDecoder, name: str) -> Iterator[Any]:
    index = 0
    while True:
        character = source.skip()
        if character == "]":
            source.pos += 1
            return
        if index:
            source.expect(",", f"{name} after feature {index - 1}")
        yield source.value(decoder, f"feature {index}")
        index += 1


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


def _annotation(
    index: int, feature: Any, geometry: BaseGeometry, classes: dict[str, LabelStyle], ctx: _Context
) -> Annotation:
    properties = feature.get("properties") if "geometry" in feature else None
    properties = properties if isinstance(properties, dict) else {}
    kept: dict[str, Any] = {}
    name = properties.get("name")
    if name is not None:
        kept["name"] = _text(name, ctx.limits, "the name", ctx.where, ctx.filename)
    colour = _colour(properties.get("color"))
    if colour:
        kept["color"] = colour
    object_type = properties.get("objectType")
    if isinstance(object_type, str):
        kept["object_type"] = object_type
    nucleus = feature.get("nucleusGeometry", properties.get("nucleusGeometry"))
    if isinstance(nucleus, dict):
        kept["nucleus"] = nucleus
    for key, value in properties.items():
        if key in ("name", "color", "objectType", "nucleusGeometry", "classification", "label"):
            continue
        if key in ("class", "measurements", "isLocked", "shape", "confidence"):
            continue
        if len(json.dumps(value)) > ctx.limits.max_text:
            raise InvalidInput(
                f"{ctx.filename}: {ctx.where}: property {key!r} is longer than "
                f"{ctx.limits.max_text:,} characters"
            )
        kept[key] = value
    confidence = properties.get("confidence")
    declared = properties.get("shape")
    kind = SHAPES[feature["geometry"]["type"] if "geometry" in feature else feature["type"]]
    if declared in ("rectangle", "ellipse") and kind == "polygon":
        kind = declared
    elif kind == "polygon" and _is_rectangle(geometry):
        kind = "rectangle"  # QuPath exports its rectangles as plain polygons
    return Annotation(
        geometry=geometry,
        shape=kind,
        label=_label(properties, classes, ctx),
        properties=kept,
        measurements=_measurements(properties.get("measurements"), ctx.where, ctx.filename),
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
    ring_lengths: list[int] = []
    polygon_rings: list[int] = []
    flat: list[Any] = []
    for polygon in rings:
        polygon_rings.append(len(polygon))
        for ring in polygon:
            ring_lengths.append(len(ring))
            flat.extend(ring)
    try:
        coordinates = np.array(flat, dtype=np.float64)
    except (ValueError, TypeError):
        return None
    if coordinates.ndim != 2 or coordinates.shape[1] != 2 or not np.isfinite(coordinates).all():
        return None
    if min(ring_lengths) < 4:
        return None
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
        stream = _Source(source, filename, limits)
        ctx = _Context(filename, limits)
        batch: list[tuple[int, Any, dict[str, Any]]] = []
        index = 0
        for index, feature in enumerate(_features(stream, filename)):
            if index >= limits.max_annotations:
                raise InvalidInput(f"{filename}: more than {limits.max_annotations:,} annotations")
            ctx.where = _where(index, feature)
            batch.append((index, feature, _geometry_of(index, feature, ctx)))
            if len(batch) == BATCH:
                yield from self._batch(batch, classes, ctx)
                batch = []
        yield from self._batch(batch, classes, ctx)

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
            yield Parsed(_annotation(index, feature, made, classes, ctx), ctx.where)


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
