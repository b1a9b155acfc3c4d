"""Reads and writes of the DICOMweb index. The caller's session owns the transaction.

Searches take the datasets the asking principal may read (ids) and match attributes the way
QIDO-RS does: UIDs from a list, strings exactly or with ``*``/``?`` wildcards, dates and
date ranges, numbers exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, distinct, func, select
from sqlalchemy.orm import Session

from slidebank.catalog.dicom_tables import DicomInstance
from slidebank.catalog.entries import DicomInstanceEntry
from slidebank.catalog.tables import Image, Slide
from slidebank.errors import InvalidInput

Level = Literal["study", "series", "instance"]
MatchKind = Literal["uid", "text", "date", "number"]
# Attributes QIDO-RS may match on: keyword → (tag, index column, how it matches).
MATCHABLE: dict[str, tuple[str, str, MatchKind]] = {
    "StudyInstanceUID": ("0020000D", "study_uid", "uid"),
    "SeriesInstanceUID": ("0020000E", "series_uid", "uid"),
    "SOPInstanceUID": ("00080018", "sop_uid", "uid"),
    "SOPClassUID": ("00080016", "sop_class_uid", "uid"),
    "Modality": ("00080060", "modality", "text"),
    "ModalitiesInStudy": ("00080061", "modality", "text"),
    "PatientID": ("00100020", "patient_id", "text"),
    "PatientName": ("00100010", "patient_name", "text"),
    "StudyDate": ("00080020", "study_date", "date"),
    "AccessionNumber": ("00080050", "accession_number", "text"),
    "StudyID": ("00200010", "study_id", "text"),
    "SeriesNumber": ("00200011", "series_number", "number"),
    "InstanceNumber": ("00200013", "instance_number", "number"),
}
BY_TAG = {tag: keyword for keyword, (tag, _, _) in MATCHABLE.items()}
IS_RANGE = (-(2**31), 2**31 - 1)  # what a DICOM Integer String may hold


@dataclass(frozen=True)
class Located:
    """An indexed instance and the image (slide) it belongs to."""

    instance: DicomInstance
    public_id: str
    dataset_id: int
    storage_key: str


@dataclass(frozen=True)
class Found:
    """One QIDO-RS result: a representative instance, and counts for studies and series."""

    instance: DicomInstance
    dataset_id: int
    series: int = 0
    instances: int = 0
    modalities: tuple[str, ...] = ()


def add_instances(session: Session, image: Image, entries: Iterable[DicomInstanceEntry]) -> None:
    """Index the instances of a newly registered image."""
    for entry in entries:
        session.add(DicomInstance(image_id=image.id, **vars(entry)))
    session.flush()


def keyword_of(key: str) -> str | None:
    """The matchable keyword a query key names (keyword or eight hex digits), if any."""
    if key in MATCHABLE:
        return key
    return BY_TAG.get(key.upper())


def search(
    session: Session,
    level: Level,
    filters: Mapping[str, str],
    dataset_ids: frozenset[int],
    limit: int,
    offset: int,
) -> list[Found]:
    """Studies, series or instances matching ``filters`` (keyword → value) in the datasets."""
    base = _matching(filters, dataset_ids)
    if level == "instance":
        query = base.add_columns(DicomInstance.id, Slide.dataset_id).order_by(DicomInstance.id)
        rows = session.execute(query.limit(limit).offset(offset)).all()
        found = {row[0]: row[1] for row in rows}
        instances = _by_id(session, list(found))
        return [Found(instances[key], dataset) for key, dataset in found.items()]
    group = DicomInstance.study_uid if level == "study" else DicomInstance.series_uid
    grouped = (
        base.add_columns(
            func.min(DicomInstance.id),
            func.min(Slide.dataset_id),
            func.count(distinct(DicomInstance.series_uid)),
            func.count(DicomInstance.id),
        )
        .group_by(group)
        .order_by(func.min(DicomInstance.id))
    )
    rows = session.execute(grouped.limit(limit).offset(offset)).all()
    instances = _by_id(session, [row[0] for row in rows])
    modalities = _modalities(session, [instances[row[0]].study_uid for row in rows], dataset_ids)
    return [
        Found(
            instances[first],
            dataset,
            series,
            count,
            modalities.get(instances[first].study_uid, ()),
        )
        for first, dataset, series, count in rows
    ]


def _matching(filters: Mapping[str, str], dataset_ids: frozenset[int]) -> Select[Any]:
    query = (
        select()
        .select_from(DicomInstance)
        .join(Image, Image.id == DicomInstance.image_id)
        .join(Slide, Slide.id == Image.slide_id)
        .where(Slide.dataset_id.in_(sorted(dataset_ids)))
    )
    for keyword, value in filters.items():
        condition = _condition(keyword, value)
        if condition is not None:
            query = query.where(condition)
    return query


def _condition(keyword: str, value: str) -> ColumnElement[bool] | None:
    _, name, kind = MATCHABLE[keyword]
    column = getattr(DicomInstance, name)
    value = value.strip()
    if not value or value == "*":
        return None  # universal matching
    if kind == "uid":
        uids = [uid.strip() for uid in value.replace("\\", ",").split(",") if uid.strip()]
        return column.in_(uids)  # type: ignore[no-any-return]
    if kind == "number":
        try:
            numbers = [int(part) for part in value.replace("\\", ",").split(",")]
        except ValueError:
            raise InvalidInput(f"{keyword}: {value!r} is not a whole number") from None
        # An Integer String (IS) holds 32 bits; a larger number would overflow SQLite.
        if any(not IS_RANGE[0] <= number <= IS_RANGE[1] for number in numbers):
            raise InvalidInput(
                f"{keyword}: {value!r} is out of range ({IS_RANGE[0]} to {IS_RANGE[1]})"
            )
        return column.in_(numbers)  # type: ignore[no-any-return]
    if kind == "date":
        return _date_condition(keyword, column, value)
    if "*" in value or "?" in value:
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = escaped.replace("*", "%").replace("?", "_")
        return column.like(pattern, escape="\\")  # type: ignore[no-any-return]
    return column == value  # type: ignore[no-any-return]


def _date_condition(keyword: str, column: Any, value: str) -> ColumnElement[bool]:
    start, dash, end = value.partition("-")
    for part in (start, end):
        if part and not (len(part) == 8 and part.isdigit()):
            raise InvalidInput(f"{keyword}: {value!r} is not a date (YYYYMMDD) or range")
    if not dash:
        return column == start  # type: ignore[no-any-return]
    conditions = []
    if start:
        conditions.append(column >= start)
    if end:
        conditions.append(column <= end)
    if not conditions:
        raise InvalidInput(f"{keyword}: {value!r} is not a date range")
    result: ColumnElement[bool] = (
        conditions[0] if len(conditions) == 1 else conditions[0] & conditions[1]
    )
    return result


def _by_id(session: Session, ids: Sequence[int]) -> dict[int, DicomInstance]:
    if not ids:
        return {}
    rows = session.scalars(select(DicomInstance).where(DicomInstance.id.in_(ids)))
    return {row.id: row for row in rows}


def _modalities(
    session: Session, studies: Sequence[str], dataset_ids: frozenset[int]
) -> dict[str, tuple[str, ...]]:
    if not studies:
        return {}
    query = (
        _matching({}, dataset_ids)
        .add_columns(DicomInstance.study_uid, DicomInstance.modality)
        .where(
            DicomInstance.study_uid.in_(sorted(set(studies))), DicomInstance.modality.is_not(None)
        )
        .distinct()
    )
    found: dict[str, list[str]] = {}
    for study, modality in session.execute(query):
        found.setdefault(study, []).append(modality)
    return {study: tuple(sorted(values)) for study, values in found.items()}


def locate(
    session: Session, study: str, series: str | None = None, sop: str | None = None
) -> list[Located]:
    """The indexed instances of a study (of one series, or one instance), every dataset."""
    query = (
        select(DicomInstance, Image.public_id, Slide.dataset_id, Image.storage_key)
        .join(Image, Image.id == DicomInstance.image_id)
        .join(Slide, Slide.id == Image.slide_id)
        .where(DicomInstance.study_uid == study)
        .order_by(DicomInstance.series_uid, DicomInstance.instance_number, DicomInstance.id)
    )
    if series is not None:
        query = query.where(DicomInstance.series_uid == series)
    if sop is not None:
        query = query.where(DicomInstance.sop_uid == sop)
    return [Located(*row) for row in session.execute(query)]


def images_without_instances(session: Session, fmt: str = "dicom") -> list[Image]:
    """Images of a format that have no indexed instances (stored before the index existed)."""
    indexed = select(DicomInstance.image_id)
    return list(
        session.scalars(
            select(Image).where(func.lower(Image.format) == fmt, Image.id.not_in(indexed))
        )
    )
