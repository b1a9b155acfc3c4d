"""DICOM Microscopy Bulk Simple Annotations (SOP class 1.2.840.10008.5.1.4.1.1.91.1), read
and written with highdicom.

Coordinates are 2D (Annotation Coordinate Type ``2D``, Pixel Origin Interpretation
``VOLUME``): (column, row) in the total pixel matrix of the referenced image, with (0, 0)
at the top-left corner of its top-left pixel, as Slidebank's level-0 pixels are, so they
are taken over unchanged. The writer references the slide's stored DICOM image of its
largest level (``ExportContext.source_dicom``), whose patient, study and specimen
attributes highdicom copies (they are already de-identified; nothing else is added).

One annotation group per (class, graphic type):

* point → POINT; multipoint → one POINT per part (read back as separate points).
* line → POLYLINE.
* polygon → POLYGON of its exterior ring; multipolygon → one POLYGON per part. Holes
  cannot be expressed (a POLYGON is one ring) and are left out.
* rectangle → RECTANGLE (corners top-left, top-right, bottom-right, bottom-left of its
  minimum rotated rectangle) when its polygon is a rectangle; otherwise POLYGON, read back
  as a polygon.
* ellipse → ELLIPSE (the ends of the major, then of the minor axis, found as the DSA
  writer finds them); read back as a polygon of 64 vertices.
* An empty geometry is not written.

Group label and description: the label is the class cut to what a DICOM LO holds (64
characters, no backslash), the description (UT, unlimited) ``Class: <class>`` holds it
whole (the reader prefers it); annotations without a class go in groups described
``Annotations without a class``. The annotated property category is SCT 91723000
"Anatomical structure"; the type is the class's code when ``LabelStyle.code`` is
``SCHEME:VALUE`` (e.g. ``SCT:4421005``), else a code of the local scheme ``99SLIDEBANK``
derived from the class name (a private coding scheme, as PS3.3 8.2 allows with a ``99``
prefix). The class colour is the group's recommended display colour (CIELab; it reads back
within a unit per channel).

Measurements become highdicom Measurements (float32, unit UCUM ``1``, the name as a local
code's meaning, so at most 64 characters); the confidence is a measurement of the local
code ``CONFIDENCE``, read back as the confidence. Generation type is MANUAL (no algorithm
is identified). Per-object names, colours and other properties have no place in this
format and are not written. Coordinates are stored as float32 (``Point Coordinates
Data``, which viewers read widely): below 131,072 pixels they keep 1/128 pixel or better.

The reader reads the file whole with pydicom (the format is one dataset with no way to
read it in parts), straight from the file, so it holds about the file's size in memory:
files larger than ``MAX_DICOM_BYTES`` (256 MiB, some 30 million float32 vertices) or
``ImportLimits.max_bytes`` are refused by their size before any byte is read; larger
collections are imported as several instances or in a streamed format (GeoJSON, DSA).
It refuses 3D coordinates and frame-relative 2D coordinates. It takes coordinates as
level-0 pixels: that the referenced image is the slide's largest level is for the caller
to check. The writer gathers every group's coordinates (float32 arrays) before highdicom
builds the dataset, so it holds about 8 bytes per vertex plus a small array per annotation.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np
import pydicom
from highdicom import UID
from highdicom.ann import (
    AnnotationCoordinateTypeValues,
    AnnotationGroup,
    AnnotationGroupGenerationTypeValues,
    GraphicTypeValues,
    Measurements,
    MicroscopyBulkSimpleAnnotations,
)
from highdicom.color import CIELabColor
from highdicom.sr import CodedConcept
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry.base import BaseGeometry

import slidebank
from slidebank.annotations.formats.base import (
    ExportContext,
    ImportLimits,
    LabelStyle,
    Parsed,
    colour_hex,
)
from slidebank.annotations.formats.dsa import (
    box_corners,
    box_parameters,
    ellipse_parameters,
    ellipse_polygon,
)
from slidebank.annotations.model import Annotation, Shape
from slidebank.errors import InvalidInput

SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.91.1"
WSI_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.77.1.6"
LOCAL_SCHEME = "99SLIDEBANK"

MAX_DICOM_BYTES = 256 * 1024**2
"""Largest instance the reader takes: pydicom holds it whole in memory."""
_SNIFF_UID = re.compile(re.escape(SOP_CLASS_UID.encode()) + rb"(?![0-9.])")
_CATEGORY = Code("91723000", "SCT", "Anatomical structure")
_UNLABELLED = Code("UNLABELLED", LOCAL_SCHEME, "Unlabelled")
_CONFIDENCE = Code("CONFIDENCE", LOCAL_SCHEME, "Confidence")
_NO_UNITS = Code("1", "UCUM", "no units")
_CLASS_PREFIX = "Class: "
_UNLABELLED_DESCRIPTION = "Annotations without a class"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SINGLE_COMPONENT_NAME = r"The string .* is unlikely to represent the intended person name"


def _lo(text: str) -> str:
    """``text`` as a DICOM LO value: no backslash (it separates values), no control
    characters, at most 64 characters."""
    cleaned = _CONTROL.sub(" ", text.replace("\\", "/")).strip()[:64].strip()
    return cleaned or "-"


def _local_code(kind: str, name: str, meaning: str) -> Code:
    # A stable code value per name, within SH's 16 characters.
    digest = hashlib.sha256(f"{kind}:{name}".encode()).hexdigest()
    return Code(kind[0].upper() + digest[:15], LOCAL_SCHEME, _lo(meaning))


def _class_code(label: str | None, style: LabelStyle | None) -> Code:
    if label is None:
        return _UNLABELLED
    if style is not None and style.code:
        scheme, _, value = style.code.partition(":")
        scheme, value = scheme.strip(), value.strip()
        if scheme and value and len(scheme) <= 16 and "\\" not in scheme + value:
            return Code(value, scheme, _lo(label))
    return _local_code("class", label, label)


def _code_text(concept: CodedConcept) -> str:
    return f"{concept.scheme_designator}:{concept.value}"


def _sop_class_name(uid: object) -> str:
    if uid is None:
        return "an instance without a SOP Class UID"
    name = pydicom.uid.UID(str(uid)).name
    return f"a {name} instance" if name != str(uid) else f"an instance of SOP class {uid}"


def _which(annotation: Annotation, number: int) -> str:
    return f"annotation {number}" + (f" (id {annotation.id})" if annotation.id is not None else "")


class DicomAnnReader:
    name = "dicom-ann"

    def sniff(self, head: bytes) -> bool:
        # "DICM" alone would take slide images too: the file meta names the SOP class. The
        # meta group starts with its length (explicit VR little endian, always); elsewhere
        # the UID could be a mere reference to an annotation object.
        if head[128:132] != b"DICM":
            return False
        end = 1024
        if head[132:138] == b"\x02\x00\x00\x00UL" and len(head) >= 144:
            end = 144 + int.from_bytes(head[140:144], "little")
        return _SNIFF_UID.search(head, 132, end) is not None

    def read(
        self,
        source: BinaryIO,
        filename: str,
        limits: ImportLimits,
        classes: dict[str, LabelStyle],
    ) -> Iterator[Parsed]:
        bound = min(limits.max_bytes, MAX_DICOM_BYTES)
        start = source.tell()
        size = source.seek(0, io.SEEK_END) - start
        source.seek(start)
        if size > bound:
            raise InvalidInput(
                f"{filename}: is {size:,} bytes, larger than the limit of {bound:,} bytes of a "
                "DICOM annotation instance (read whole into memory); split it into several"
            )
        try:
            dataset = pydicom.dcmread(source)
            # pydicom decodes values when first touched: touch them all here, so that a bad
            # value anywhere is refused as one, not raised later in some other form.
            for _element in dataset.iterall():
                pass
            sop_class = dataset.get("SOPClassUID")
        except Exception as exc:  # pydicom raises many kinds on malformed input
            raise InvalidInput(f"{filename}: is not a readable DICOM file ({exc})") from exc
        if sop_class != SOP_CLASS_UID:
            raise InvalidInput(
                f"{filename}: is {_sop_class_name(sop_class)}, "
                "not Microscopy Bulk Simple Annotations"
            )
        coordinate_type = dataset.get("AnnotationCoordinateType")
        if coordinate_type == "3D":
            raise InvalidInput(
                f"{filename}: has 3D coordinates (millimetres in the slide's frame of "
                "reference); only 2D coordinates in the image's pixel matrix are supported"
            )
        if coordinate_type != "2D":
            raise InvalidInput(f"{filename}: Annotation Coordinate Type {coordinate_type!r}")
        origin = dataset.get("PixelOriginInterpretation", "VOLUME")
        if origin != "VOLUME":
            raise InvalidInput(
                f"{filename}: Pixel Origin Interpretation {origin!r}: only coordinates in "
                "the total pixel matrix (VOLUME) are supported, not relative to single frames"
            )
        try:
            document = MicroscopyBulkSimpleAnnotations.from_dataset(dataset, copy=False)
            groups = document.get_annotation_groups()
        except Exception as exc:  # missing or malformed attributes, in many forms
            raise InvalidInput(f"{filename}: malformed annotation groups ({exc})") from exc
        count = 0
        for index, group in enumerate(groups, 1):
            reading = _GroupReader(group, index, filename, limits)
            if count + reading.size > limits.max_annotations:
                raise InvalidInput(
                    f"{filename}: {reading.where}: more than {limits.max_annotations} annotations"
                )
            count += reading.size
            yield from reading.parsed(classes)


class _GroupReader:
    """One annotation group, read with every refusal naming it."""

    def __init__(
        self, group: AnnotationGroup, index: int, filename: str, limits: ImportLimits
    ) -> None:
        self.group = group
        self.filename = filename
        self.limits = limits
        self.where = f"group {index}"
        try:
            label_text = str(group.AnnotationGroupLabel)
            description = group.get("AnnotationGroupDescription")
            self.graphic_type = group.graphic_type
            self.size = group.number_of_annotations
        except Exception as exc:  # untrusted values fail in many ways
            self.fail(f"malformed ({exc})")
        if description is not None and str(description) == _UNLABELLED_DESCRIPTION:
            self.label: str | None = None
        elif description is not None and str(description).startswith(_CLASS_PREFIX):
            self.label = str(description)[len(_CLASS_PREFIX) :]
        else:
            self.label = label_text or None
        self.where = f"group {index} ({self.label[:60]!r})" if self.label else self.where
        if self.label is not None and len(self.label) > limits.max_text:
            self.fail(f"its class is longer than {limits.max_text} characters")
        if self.size < 0:
            self.fail(f"Number of Annotations is {self.size}")

    def fail(self, message: str) -> NoReturn:
        raise InvalidInput(f"{self.filename}: {self.where}: {message}")

    def _style(self) -> LabelStyle:
        group = self.group
        code: str | None = None
        colour: str | None = None
        try:
            concept = group.annotated_property_type
            if concept.scheme_designator != LOCAL_SCHEME:
                code = _code_text(concept)
            lab = group.get("RecommendedDisplayCIELabValue")
            if lab is not None:
                colour = colour_hex(*CIELabColor.from_dicom_value(list(lab)).to_rgb(clip=True))
        except Exception as exc:  # untrusted values fail in many ways
            self.fail(f"malformed property type or colour ({exc})")
        return LabelStyle(color=colour, code=code)

    def _measurements(self) -> tuple[list[str], NDArray[Any], int | None]:
        """Measurement names, values (annotations × names) and the confidence's column."""
        try:
            names, values, _units = self.group.get_measurements()
        except Exception as exc:  # untrusted values fail in many ways
            self.fail(f"malformed measurements ({exc})")
        texts: list[str] = []
        confidence: int | None = None
        for column, name in enumerate(names):
            if name.scheme_designator == LOCAL_SCHEME and name.value == _CONFIDENCE.value:
                confidence = column
            text = str(name.meaning)
            if len(text) > self.limits.max_text:
                self.fail(f"a measurement name is longer than {self.limits.max_text} characters")
            texts.append(text)
        if values.shape != (self.size, len(names)):
            self.fail(f"measurements for {values.shape[0]} annotations, not {self.size}")
        # NaN is highdicom's "no value" (left out); an infinity is no measurement at all.
        infinite = np.argwhere(np.isinf(values))
        if len(infinite):
            row, column = (int(v) for v in infinite[0])
            what = "confidence" if column == confidence else f"measurement {texts[column]!r}"
            self.fail(f"annotation {row + 1}: {what} is not a finite number")
        return texts, values, confidence

    def parsed(self, classes: dict[str, LabelStyle]) -> Iterator[Parsed]:
        style = self._style()
        if self.label is not None:
            known = classes.get(self.label)
            classes[self.label] = LabelStyle(
                color=known.color if known and known.color else style.color,
                code=known.code if known and known.code else style.code,
            )
        names, values, confidence_column = self._measurements()
        try:
            graphics = self.group.get_graphic_data(AnnotationCoordinateTypeValues.SCOORD)
        except Exception as exc:  # bad lengths or index lists surface as several kinds
            self.fail(f"malformed graphic data ({exc})")
        if len(graphics) != self.size:
            self.fail(f"holds {len(graphics)} annotations but says {self.size}")
        for index, coordinates in enumerate(graphics):
            where = f"{self.where} annotation {index + 1}"
            geometry, shape = self._geometry(coordinates, where)
            measurements = {
                name: float(values[index, column])
                for column, name in enumerate(names)
                if column != confidence_column and not math.isnan(values[index, column])
            }
            confidence = None
            if confidence_column is not None and not math.isnan(values[index, confidence_column]):
                confidence = float(values[index, confidence_column])
            annotation = Annotation(
                geometry=geometry,
                shape=shape,
                label=self.label,
                measurements=measurements,
                confidence=confidence,
            )
            yield Parsed(annotation, where)

    def _geometry(self, coordinates: NDArray[Any], where: str) -> tuple[BaseGeometry, Shape]:
        def refuse(message: str) -> NoReturn:
            raise InvalidInput(f"{self.filename}: {where}: {message}")

        count = len(coordinates)
        if count > self.limits.max_vertices:
            refuse(f"has more than {self.limits.max_vertices} vertices")
        if coordinates.ndim != 2 or coordinates.shape[1] != 2:
            refuse("coordinates are not (column, row) pairs")
        if not np.all(np.isfinite(coordinates)):
            refuse("has coordinates that are not finite")
        points = [(float(x), float(y)) for x, y in coordinates]
        kind = self.graphic_type
        needed = {
            GraphicTypeValues.POINT: (1, "exactly 1"),
            GraphicTypeValues.POLYLINE: (2, "at least 2"),
            GraphicTypeValues.POLYGON: (3, "at least 3"),
            GraphicTypeValues.RECTANGLE: (4, "exactly 4"),
            GraphicTypeValues.ELLIPSE: (4, "exactly 4"),
        }[kind]
        exact = kind not in (GraphicTypeValues.POLYLINE, GraphicTypeValues.POLYGON)
        if count < needed[0] or (exact and count != needed[0]):
            refuse(f"{kind.value} has {count} points (it needs {needed[1]})")
        if kind == GraphicTypeValues.POINT:
            return Point(points[0]), "point"
        if kind == GraphicTypeValues.POLYLINE:
            return LineString(points), "line"
        if kind == GraphicTypeValues.POLYGON:
            return Polygon(points), "polygon"
        if kind == GraphicTypeValues.RECTANGLE:
            return Polygon(points), "rectangle"
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = points
        rotation = math.atan2(y1 - y0, x1 - x0)
        major = math.dist((x0, y0), (x1, y1))
        minor = math.dist((x2, y2), (x3, y3))
        return ellipse_polygon((x0 + x1) / 2, (y0 + y1) / 2, major, minor, rotation), "ellipse"


@dataclass
class _Group:
    """What one annotation group collects while the annotations stream past."""

    coordinates: list[NDArray[np.float32]] = field(default_factory=list)
    measurements: dict[str, dict[int, float]] = field(default_factory=dict)
    """Sparse: name → annotation index → value."""
    confidences: dict[int, float] = field(default_factory=dict)

    def add(self, coordinates: NDArray[np.float32], annotation: Annotation) -> None:
        index = len(self.coordinates)
        self.coordinates.append(coordinates)
        for name, value in annotation.measurements.items():
            self.measurements.setdefault(name, {})[index] = value
        if annotation.confidence is not None:
            self.confidences[index] = annotation.confidence

    def dicom_measurements(self) -> list[Measurements]:
        size = len(self.coordinates)

        def column(values: dict[int, float]) -> NDArray[np.float64]:
            array = np.full(size, np.nan)
            for index, value in values.items():
                array[index] = value
            return array

        items = [
            Measurements(_local_code("measurement", name, name), column(values), _NO_UNITS)
            for name, values in self.measurements.items()
        ]
        if self.confidences:
            items.append(Measurements(_CONFIDENCE, column(self.confidences), _NO_UNITS))
        return items


def _float32(coordinates: Iterable[tuple[float, ...]]) -> NDArray[np.float32]:
    return np.array([(c[0], c[1]) for c in coordinates], dtype=np.float32).reshape(-1, 2)


def _is_rectangle(polygon: Polygon) -> bool:
    if polygon.interiors:
        return False
    ring = list(polygon.exterior.coords)[:-1]
    distinct = [c for i, c in enumerate(ring) if c != ring[i - 1]]
    if len(distinct) != 4:
        return False
    _cx, _cy, width, height, _rotation = box_parameters(polygon)
    return bool(abs(width * height - polygon.area) <= 1e-6 * max(width * height, 1.0))


def _graphics(
    annotation: Annotation, number: int
) -> Iterator[tuple[GraphicTypeValues, NDArray[np.float32]]]:
    """The annotation's graphic items, one per part of a multi-part geometry."""

    def refuse(message: str) -> NoReturn:
        raise InvalidInput(f"{_which(annotation, number)}: {message}")

    geometry = annotation.geometry
    if geometry.is_empty:
        return  # nothing to draw; one such object must not fail the whole export
    for part in getattr(geometry, "geoms", [geometry]):
        if part.is_empty:
            continue
        if isinstance(part, Point):
            kind, array = GraphicTypeValues.POINT, _float32([(part.x, part.y)])
        elif isinstance(part, LineString):
            kind, array = GraphicTypeValues.POLYLINE, _float32(part.coords)
        elif isinstance(part, Polygon) and annotation.shape == "ellipse":
            cx, cy, width, height, rotation = ellipse_parameters(part)
            cos, sin = math.cos(rotation), math.sin(rotation)
            (ux, uy, a), (vx, vy, b) = (cos, sin, width / 2), (-sin, cos, height / 2)
            if height > width:
                (ux, uy, a), (vx, vy, b) = (vx, vy, b), (ux, uy, a)
            ends = [
                (cx - ux * a, cy - uy * a),
                (cx + ux * a, cy + uy * a),
                (cx - vx * b, cy - vy * b),
                (cx + vx * b, cy + vy * b),
            ]
            kind, array = GraphicTypeValues.ELLIPSE, _float32(ends)
        elif isinstance(part, Polygon) and annotation.shape == "rectangle" and _is_rectangle(part):
            corners = box_corners(*box_parameters(part))
            kind, array = GraphicTypeValues.RECTANGLE, _float32(corners)
        elif isinstance(part, Polygon):
            ring = _float32(part.exterior.coords)[:-1]
            # A POLYGON must not repeat its first point at the end (unlike a shapely ring);
            # float32 rounding can make a last point equal to the first, too.
            while len(ring) > 1 and np.array_equal(ring[-1], ring[0]):
                ring = ring[:-1]
            if len(ring) < 3:
                refuse("a polygon part has fewer than 3 distinct vertices")
            kind, array = GraphicTypeValues.POLYGON, ring
        else:
            refuse(f"a {part.geom_type} cannot be written as DICOM annotations")
        if not np.all(np.isfinite(array)):
            refuse("has coordinates that are not finite (or too large for float32)")
        yield kind, array


def _source_image(path: Path, context: ExportContext) -> Dataset:
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many kinds on malformed input
        raise InvalidInput(f"{path}: the slide's DICOM image cannot be read ({exc})") from exc
    if dataset.get("SOPClassUID") != WSI_SOP_CLASS_UID:
        raise InvalidInput(
            f"{path}: is {_sop_class_name(dataset.get('SOPClassUID'))}, "
            "not a VL Whole Slide Microscopy Image"
        )
    size = (dataset.get("TotalPixelMatrixColumns"), dataset.get("TotalPixelMatrixRows"))
    if size != (context.slide_width, context.slide_height):
        raise InvalidInput(
            f"{path}: its total pixel matrix is {size[0]} × {size[1]}, not the slide's "
            f"level 0 ({context.slide_width} × {context.slide_height})"
        )
    return dataset


class DicomAnnWriter:
    name = "dicom-ann"
    media_type = "application/dicom"
    suffix = ".dcm"

    def write(self, items: Iterable[Annotation], out: BinaryIO, context: ExportContext) -> None:
        if context.source_dicom is None:
            raise InvalidInput(
                "DICOM annotations reference the slide's stored DICOM image, "
                "and this slide has none"
            )
        source = _source_image(context.source_dicom, context)
        groups: dict[tuple[str | None, GraphicTypeValues], _Group] = {}
        for number, annotation in enumerate(items, 1):
            for kind, coordinates in _graphics(annotation, number):
                groups.setdefault((annotation.label, kind), _Group()).add(coordinates, annotation)
        if not groups:
            raise InvalidInput(
                "there are no annotations to write (a DICOM annotation object needs at least "
                "one group)"
            )
        annotation_groups = [
            self._group(number, label, kind, group, context)
            for number, ((label, kind), group) in enumerate(groups.items(), 1)
        ]
        try:
            with warnings.catch_warnings():
                # The patient's name is the repository's pseudonym, one component on purpose;
                # highdicom's warning about it would reach every notebook that exports.
                warnings.filterwarnings("ignore", _SINGLE_COMPONENT_NAME, UserWarning)
                document = self._document(source, annotation_groups, context)
        except (AttributeError, ValueError, TypeError, KeyError) as exc:
            raise InvalidInput(
                f"{context.source_dicom}: cannot be the source image of DICOM annotations ({exc})"
            ) from exc
        document.SeriesDescription = _lo(context.set_name)
        document.save_as(out, enforce_file_format=True)

    @staticmethod
    def _document(
        source: Dataset, annotation_groups: list[AnnotationGroup], context: ExportContext
    ) -> MicroscopyBulkSimpleAnnotations:
        return MicroscopyBulkSimpleAnnotations(
            source_images=[source],
            annotation_coordinate_type=AnnotationCoordinateTypeValues.SCOORD,
            annotation_groups=annotation_groups,
            series_instance_uid=UID(),
            series_number=1,
            sop_instance_uid=UID(),
            instance_number=1,
            manufacturer="Slidebank",
            manufacturer_model_name="Slidebank",
            software_versions=slidebank.__version__,
            device_serial_number="0",
            content_description=_lo(context.set_name),
            content_label="ANNOTATIONS",
            # Class names and set names are Unicode.
            specific_character_set="ISO_IR 192",
        )

    @staticmethod
    def _group(
        number: int,
        label: str | None,
        kind: GraphicTypeValues,
        group: _Group,
        context: ExportContext,
    ) -> AnnotationGroup:
        style = context.classes.get(label) if label is not None else None
        description = _UNLABELLED_DESCRIPTION if label is None else _CLASS_PREFIX + label
        colour = None
        if style is not None and style.color and re.fullmatch(r"#[0-9a-fA-F]{6}", style.color):
            red, green, blue = (int(style.color[i : i + 2], 16) for i in (1, 3, 5))
            colour = CIELabColor.from_rgb(red, green, blue)
        measurements = group.dicom_measurements()
        try:
            return AnnotationGroup(
                number=number,
                uid=UID(),
                label=_lo(label) if label is not None else "unlabelled",
                annotated_property_category=_CATEGORY,
                annotated_property_type=_class_code(label, style),
                graphic_type=kind,
                graphic_data=group.coordinates,
                algorithm_type=AnnotationGroupGenerationTypeValues.MANUAL,
                measurements=measurements or None,
                description=description,
                display_color=colour,
            )
        except (ValueError, TypeError) as exc:
            shown = repr(label) if label is not None else "unlabelled"
            raise InvalidInput(f"group {number} ({shown}, {kind.value}): {exc}") from exc


reader = DicomAnnReader()
writer = DicomAnnWriter()
