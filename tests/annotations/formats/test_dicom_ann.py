"""DICOM Microscopy Bulk Simple Annotations: round trips of every shape against a real DICOM
WSI instance as the source image, what the written object references and copies, and
refusals naming the group."""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from slidebank.annotations.formats import dicom_ann, dsa
from slidebank.annotations.formats.base import ExportContext, ImportLimits, LabelStyle, Parsed
from slidebank.annotations.model import Annotation
from slidebank.errors import InvalidInput


@pytest.fixture(scope="module")
def source_dicom(testdata: Path) -> Path:
    """The largest VOLUME instance of the DICOM test slide (its level 0)."""
    folder = testdata / "slides" / "synthetic" / "boxes-dicom"

    def pixels(path: Path) -> int:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        if "VOLUME" not in dataset.ImageType:
            return -1
        return int(dataset.TotalPixelMatrixColumns) * int(dataset.TotalPixelMatrixRows)

    return max(sorted(folder.glob("*.dcm")), key=pixels)


@pytest.fixture(scope="module")
def source(source_dicom: Path) -> Dataset:
    return pydicom.dcmread(source_dicom, stop_before_pixels=True)


def context(source_dicom: Path, source: Dataset, **classes: LabelStyle) -> ExportContext:
    return ExportContext(
        set_name="Reviewed cells",
        slide_width=int(source.TotalPixelMatrixColumns),
        slide_height=int(source.TotalPixelMatrixRows),
        classes=classes,
        source_dicom=source_dicom,
    )


def write(items: list[Annotation], export: ExportContext) -> bytes:
    out = io.BytesIO()
    dicom_ann.writer.write(items, out, export)
    return out.getvalue()


def read(
    data: bytes,
    limits: ImportLimits | None = None,
    classes: dict[str, LabelStyle] | None = None,
) -> list[Parsed]:
    return list(
        dicom_ann.reader.read(
            io.BytesIO(data),
            "cells.dcm",
            limits or ImportLimits(),
            classes if classes is not None else {},
        )
    )


def close(a: BaseGeometry, b: BaseGeometry, tolerance: float = 1e-4) -> bool:
    # Coordinates are float32: at these sizes, a few millionths of a pixel.
    return bool(a.geom_type == b.geom_type and a.hausdorff_distance(b) <= tolerance)


LONG_CLASS = "A class name longer than sixty-four characters, with a \\ backslash, ü"

SHAPES = [
    Annotation(Point(1.5, 2.25), "point", "Lymphocyte", measurements={"area": 2.5}),
    Annotation(Point(3, 4), "point", "Lymphocyte", confidence=0.75),
    Annotation(LineString([(0, 0), (5.5, 5), (7, 1)]), "line", "Margin"),
    Annotation(box(1, 1, 9, 12), "polygon", "Tumour ä", measurements={"area": 88, "p": 1.5}),
    Annotation(Polygon(dsa.box_corners(8, 8, 6, 3, 0.3)), "rectangle", "Box"),
    Annotation(box(2, 3, 10, 7), "rectangle", "Box"),
    Annotation(dsa.ellipse_polygon(8, 8, 6, 3, -1.0), "ellipse", "Nucleus"),
    Annotation(dsa.ellipse_polygon(8, 8, 4, 4, 0.0), "ellipse", "Nucleus"),
    Annotation(Polygon([(0, 0), (1, 0), (1, 1)]), "polygon", None),
    Annotation(Point(5, 5), "point", LONG_CLASS),
]


def test_round_trip_of_every_shape(source_dicom: Path, source: Dataset) -> None:
    export = context(
        source_dicom,
        source,
        Lymphocyte=LabelStyle(color="#ff0000", code="SCT:4421005"),
        Margin=LabelStyle(color="#00c864"),
    )
    data = write(SHAPES, export)
    classes: dict[str, LabelStyle] = {}
    items = read(data, classes=classes)
    # Grouped by (class, graphic type) in order of first appearance.
    back = {(p.annotation.label, p.annotation.geometry.wkt): p.annotation for p in items}
    assert len(items) == len(SHAPES)
    for original in SHAPES:
        (copy,) = [
            a
            for (label, _), a in back.items()
            if label == original.label and close(a.geometry, original.geometry)
        ]
        assert copy.shape == original.shape
        assert copy.measurements == pytest.approx(original.measurements)
        assert copy.confidence == original.confidence
    assert [p.where for p in items[:3]] == [
        "group 1 ('Lymphocyte') annotation 1",
        "group 1 ('Lymphocyte') annotation 2",
        "group 2 ('Margin') annotation 1",
    ]
    assert classes["Lymphocyte"] == LabelStyle(color="#ff0000", code="SCT:4421005")
    margin = classes["Margin"].color
    assert margin is not None
    # CIELab holds the colour within a unit per channel.
    assert all(
        abs(int(margin[i : i + 2], 16) - int("#00c864"[i : i + 2], 16)) <= 1 for i in (1, 3, 5)
    )
    assert classes["Tumour ä"] == LabelStyle()
    assert LONG_CLASS in classes
    assert None not in classes


def test_what_the_format_cannot_hold(source_dicom: Path, source: Dataset) -> None:
    with_hole = Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (3, 2), (3, 3)]])
    not_a_rectangle = Polygon([(0, 0), (4, 0), (5, 3), (0, 3)])
    items = [
        Annotation(MultiPoint([(1, 1), (2, 3)]), "multipoint", "Mitosis"),
        Annotation(MultiPolygon([box(0, 0, 1, 1), box(5, 5, 7, 7)]), "multipolygon", "T"),
        Annotation(with_hole, "polygon", "T", properties={"name": "T1", "color": "#123456"}),
        Annotation(not_a_rectangle, "rectangle", "R"),
        Annotation(Polygon(), "polygon", "Empty"),
    ]
    back = [p.annotation for p in read(write(items, context(source_dicom, source)))]
    assert [(a.shape, a.label) for a in back] == [
        ("point", "Mitosis"),
        ("point", "Mitosis"),
        ("polygon", "T"),
        ("polygon", "T"),
        ("polygon", "T"),
        ("polygon", "R"),
    ]
    assert close(back[1].geometry, Point(2, 3))
    assert close(back[3].geometry, box(5, 5, 7, 7))
    # The hole and the object's own name and colour are left out.
    assert close(back[4].geometry, Polygon(with_hole.exterior))
    assert back[4].properties == {}
    assert close(back[5].geometry, not_a_rectangle)


def test_written_object_is_valid_and_references_the_source(
    source_dicom: Path, source: Dataset
) -> None:
    data = write(SHAPES, context(source_dicom, source))
    assert dicom_ann.reader.sniff(data[:65536])
    assert not dicom_ann.reader.sniff(source_dicom.read_bytes()[:65536])

    document = hd.ann.annread(io.BytesIO(data))
    assert document.SOPClassUID == dicom_ann.SOP_CLASS_UID
    assert document.file_meta.MediaStorageSOPClassUID == dicom_ann.SOP_CLASS_UID
    assert document.Modality == "ANN"
    assert document.StudyInstanceUID == source.StudyInstanceUID
    assert document.SeriesInstanceUID != source.SeriesInstanceUID
    (image,) = document.ReferencedImageSequence
    assert image.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert image.ReferencedSOPClassUID == source.SOPClassUID
    (series,) = document.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert document.annotation_coordinate_type == hd.ann.AnnotationCoordinateTypeValues.SCOORD
    assert document.PixelOriginInterpretation == "VOLUME"
    assert document.ContentDescription == "Reviewed cells"

    groups = document.get_annotation_groups()
    assert [(g.label, g.graphic_type.value) for g in groups] == [
        ("Lymphocyte", "POINT"),
        ("Margin", "POLYLINE"),
        ("Tumour ä", "POLYGON"),
        ("Box", "RECTANGLE"),
        ("Nucleus", "ELLIPSE"),
        ("unlabelled", "POLYGON"),
        (LONG_CLASS.replace("\\", "/")[:64].strip(), "POINT"),
    ]
    assert groups[-1].AnnotationGroupDescription == "Class: " + LONG_CLASS
    box_group = groups[3]
    corners = box_group.get_graphic_data(hd.ann.AnnotationCoordinateTypeValues.SCOORD)[1]
    # Top-left, top-right, bottom-right, bottom-left.
    np.testing.assert_allclose(corners, [(2, 3), (10, 3), (10, 7), (2, 7)])
    ellipse = groups[4].get_graphic_data(hd.ann.AnnotationCoordinateTypeValues.SCOORD)[0]
    major, minor = math.dist(*ellipse[:2]), math.dist(*ellipse[2:])
    assert (major, minor) == pytest.approx((6, 3), abs=1e-5)
    names, values, units = groups[0].get_measurements()
    assert [n.meaning for n in names] == ["area", "Confidence"]
    np.testing.assert_allclose(values, [[2.5, np.nan], [np.nan, 0.75]])
    assert {u.value for u in units} == {"1"}

    # pydicom reads it whole, and writes it back the same.
    dataset = pydicom.dcmread(io.BytesIO(data))
    again = io.BytesIO()
    dataset.save_as(again, enforce_file_format=True)
    assert len(read(again.getvalue())) == len(SHAPES)


IDENTIFYING = {
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientAddress",
    "OtherPatientIDs",
    "OtherPatientNames",
    "IssuerOfPatientID",
    "EthnicGroup",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "ReferringPhysicianName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "PerformingPhysicianName",
    "OperatorsName",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "ContainerIdentifier",
    "SpecimenIdentifier",
    "AcquisitionDateTime",
    "ContentCreatorName",
    "ClinicalTrialSponsorName",
    "ClinicalTrialSubjectID",
}


def walk(dataset: Dataset) -> Iterator[Any]:
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                yield from walk(item)
        else:
            yield element


def test_nothing_identifying_is_added(source_dicom: Path, source: Dataset) -> None:
    """Every identifying attribute written is empty or a value the (de-identified) source
    image already holds; every person name and date comes from it or is today's."""
    data = write(SHAPES, context(source_dicom, source))
    written = pydicom.dcmread(io.BytesIO(data))
    held: dict[str, set[str]] = {}
    for element in walk(source):
        held.setdefault(element.keyword, set()).add(str(element.value))
    ours = {"DeviceSerialNumber": {"0"}}  # the writer's own equipment
    today = date.today().strftime("%Y%m%d")
    checked = 0
    for element in walk(written):
        value = str(element.value)
        if element.keyword in IDENTIFYING and value:
            checked += 1
            assert value in held.get(element.keyword, set()) | ours.get(element.keyword, set()), (
                element
            )
        if element.VR == "PN" and value:
            assert value in held.get(element.keyword, set()), element
        if element.VR in ("DA", "DT") and value:
            dates = set().union(*(held.get(k, set()) for k in held if "Date" in k))
            assert value in dates or value.startswith(today), element
    assert checked >= 3  # the study date and time, the container identifier at least
    assert written.PatientName == source.PatientName
    assert written.PatientID == source.PatientID
    assert "OtherPatientIDs" not in written
    assert "InstitutionName" not in written  # the source has it only as contributing equipment


def test_a_one_part_pseudonym_as_the_patient_name_is_written_without_a_warning(
    source_dicom: Path, source: Dataset, tmp_path: Path
) -> None:
    """Stored slides name the patient by a pseudonym of one component, which highdicom
    warns about; an export must not print that warning into the user's notebook or log."""
    stored = pydicom.dcmread(source_dicom)
    stored.PatientName = "C-7Q2KX4NW9ABD"
    stored_path = tmp_path / "stored.dcm"
    stored.save_as(stored_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = write(SHAPES, context(stored_path, source))
    assert pydicom.dcmread(io.BytesIO(data)).PatientName == "C-7Q2KX4NW9ABD"


def test_writer_refuses_without_a_fitting_source(source_dicom: Path, source: Dataset) -> None:
    export = context(source_dicom, source)
    items = [Annotation(Point(1, 1), "point", "x")]
    with pytest.raises(InvalidInput, match="reference the slide's stored DICOM image"):
        write(items, ExportContext("s", 16, 16))
    with pytest.raises(InvalidInput, match=r"total pixel matrix is 16 × 16, not the slide's"):
        write(items, ExportContext("s", 1000, 800, source_dicom=source_dicom))
    with pytest.raises(InvalidInput, match="no annotations to write"):
        write([], export)


def test_writer_refuses_a_non_image_source(
    source_dicom: Path, source: Dataset, tmp_path: Path
) -> None:
    annotations = tmp_path / "annotations.dcm"
    annotations.write_bytes(
        write([Annotation(Point(1, 1), "point", "x")], context(source_dicom, source))
    )
    export = ExportContext("s", 16, 16, source_dicom=annotations)
    with pytest.raises(InvalidInput, match="not a VL Whole Slide Microscopy Image"):
        write([Annotation(Point(1, 1), "point", "x")], export)
    text = tmp_path / "text.dcm"
    text.write_text("not DICOM")
    with pytest.raises(
        InvalidInput, match=re.escape("text.dcm: the slide's DICOM image cannot be read")
    ):
        write([], ExportContext("s", 16, 16, source_dicom=text))


def test_reader_refuses_other_files(source_dicom: Path) -> None:
    with pytest.raises(InvalidInput, match=re.escape("cells.dcm: is not a readable DICOM file")):
        read(b"plain text, not DICOM")
    with pytest.raises(
        InvalidInput,
        match=re.escape(
            "cells.dcm: is a VL Whole Slide Microscopy Image Storage instance, not Microscopy"
        ),
    ):
        read(source_dicom.read_bytes())


def rewritten(data: bytes, change: Any) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(data))
    change(dataset)
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_reader_refuses_3d_and_frame_coordinates(source_dicom: Path, source: Dataset) -> None:
    data = write([Annotation(Point(1, 1), "point", "x")], context(source_dicom, source))

    def three_d(dataset: Dataset) -> None:
        dataset.AnnotationCoordinateType = "3D"

    with pytest.raises(InvalidInput, match=re.escape("cells.dcm: has 3D coordinates")):
        read(rewritten(data, three_d))

    def frame(dataset: Dataset) -> None:
        dataset.PixelOriginInterpretation = "FRAME"

    with pytest.raises(InvalidInput, match="Pixel Origin Interpretation 'FRAME': only"):
        read(rewritten(data, frame))


def test_reader_refuses_malformed_groups(source_dicom: Path, source: Dataset) -> None:
    items = [Annotation(Point(1, 1), "point", "Cells"), Annotation(box(0, 0, 2, 2), "polygon", "T")]
    data = write(items, context(source_dicom, source))

    def miscount(dataset: Dataset) -> None:
        dataset.AnnotationGroupSequence[0].NumberOfAnnotations = 3

    with pytest.raises(InvalidInput, match=r"cells.dcm: group 1 \('Cells'\): holds 1 annotations"):
        read(rewritten(data, miscount))

    def odd_coordinates(dataset: Dataset) -> None:
        group = dataset.AnnotationGroupSequence[1]
        group.PointCoordinatesData = group.PointCoordinatesData[:-4]

    with pytest.raises(InvalidInput, match=r"cells.dcm: group 2 \('T'\): malformed graphic data"):
        read(rewritten(data, odd_coordinates))

    def few_points(dataset: Dataset) -> None:
        group = dataset.AnnotationGroupSequence[1]
        group.PointCoordinatesData = group.PointCoordinatesData[:16]

    with pytest.raises(
        InvalidInput,
        match=r"group 2 \('T'\) annotation 1: POLYGON has 2 points \(it needs at least 3\)",
    ):
        read(rewritten(data, few_points))

    def no_label(dataset: Dataset) -> None:
        del dataset.AnnotationGroupSequence[0].AnnotationGroupLabel

    with pytest.raises(InvalidInput, match=re.escape("cells.dcm: malformed annotation groups")):
        read(rewritten(data, no_label))


def test_reader_limits(source_dicom: Path, source: Dataset) -> None:
    items = [
        Annotation(Point(1, 1), "point", "Cells"),
        Annotation(Point(2, 2), "point", "Cells"),
        Annotation(box(0, 0, 2, 2), "polygon", "Tumour"),
    ]
    data = write(items, context(source_dicom, source))
    assert (
        len(read(data, ImportLimits(max_annotations=3, max_vertices=4, max_bytes=len(data)))) == 3
    )
    with pytest.raises(InvalidInput, match=r"group 2 \('Tumour'\): more than 2 annotations"):
        read(data, ImportLimits(max_annotations=2))
    with pytest.raises(
        InvalidInput, match=r"group 2 \('Tumour'\) annotation 1: has more than 3 vertices"
    ):
        read(data, ImportLimits(max_vertices=3))
    with pytest.raises(
        InvalidInput, match=r"group 1 \('Cells'\): its class is longer than 4 characters"
    ):
        read(data, ImportLimits(max_text=4))
    with pytest.raises(InvalidInput, match=f"larger than the limit of {len(data) - 1:,} bytes"):
        read(data, ImportLimits(max_bytes=len(data) - 1))


class _Watched(io.BytesIO):
    """A file that records how many bytes were read from it."""

    taken = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data


def test_an_instance_over_the_memory_bound_is_refused_unread(
    source_dicom: Path, source: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [Annotation(Point(1, 1), "point", "Cells")]
    data = write(items, context(source_dicom, source))
    monkeypatch.setattr(dicom_ann, "MAX_DICOM_BYTES", len(data) - 1)
    file = _Watched(data)
    with pytest.raises(InvalidInput, match=f"cells.dcm: is {len(data):,} bytes, larger than"):
        list(dicom_ann.reader.read(file, "cells.dcm", ImportLimits(), {}))
    assert file.taken == 0  # refused by its size: nothing of it was held in memory
    monkeypatch.setattr(dicom_ann, "MAX_DICOM_BYTES", len(data))
    assert len(read(data)) == 1


@pytest.mark.parametrize(
    ("item", "what"),
    [
        (Annotation(Point(1, 1), "point", "Cells", measurements={"area": math.inf}), "measurement"),
        (Annotation(Point(1, 1), "point", "Cells", confidence=-math.inf), "confidence"),
    ],
)
def test_infinite_measurements_are_refused(
    source_dicom: Path, source: Dataset, item: Annotation, what: str
) -> None:
    # NaN means "no value" in DICOM measurements; an infinity would be stored and then
    # written into every answer as a number JSON has no spelling for.
    data = write([Annotation(Point(2, 2), "point", "Cells"), item], context(source_dicom, source))
    with pytest.raises(InvalidInput) as caught:
        read(data)
    assert str(caught.value).startswith("cells.dcm: group 1 ('Cells'): annotation 2: " + what)
    assert str(caught.value).endswith("is not a finite number")


def test_the_registry_names_the_dicom_format_as_its_module_does() -> None:
    from slidebank.annotations.formats import dicom_ann, registry

    writer = registry.writer_for("dicom-ann")
    assert (writer.name, writer.media_type, writer.suffix) == (
        dicom_ann.writer.name,
        dicom_ann.writer.media_type,
        dicom_ann.writer.suffix,
    )
    assert registry.reader_for("dicom-ann", b"", "x").name == dicom_ann.reader.name
    assert not registry.READERS["dicom-ann"].sniff(b"\0" * 128 + b"XXXX")
