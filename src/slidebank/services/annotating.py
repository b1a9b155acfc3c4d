"""Use cases of annotations: sets on a slide, import and export in the formats pathologists
use, viewport reads for the viewer, edits, history, agreement between annotators, the
dataset's label schema. Every one goes through the access policy; imports, exports and
promotions are audited in the transaction that does them.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

import numpy as np
import shapely
from shapely.errors import ShapelyError
from shapely.geometry import mapping, shape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from slidebank.access import audit
from slidebank.access.clock import now
from slidebank.access.policy import (
    Action,
    DatasetGate,
    Owner,
    Principal,
    decide,
    require,
    require_for_slide,
)
from slidebank.access.principals import gate_of
from slidebank.annotations.checking import CheckReport, Outside, checked
from slidebank.annotations.formats.base import (
    AnnotationReader,
    ExportContext,
    ImportLimits,
    LabelStyle,
    Parsed,
    PieceReader,
)
from slidebank.annotations.formats.registry import SNIFF_BYTES, reader_for, writer_for
from slidebank.annotations.import_workers import ImportJob, prepared_in_workers
from slidebank.annotations.model import SHAPES, Annotation, Viewport, not_finite
from slidebank.annotations.sql_store import SqlAnnotationStore
from slidebank.annotations.store import Change, Revision, density_grid
from slidebank.catalog import queries
from slidebank.catalog.annotation_tables import (
    ANNOTATION_KINDS,
    AnnotationRevision,
    AnnotationSet,
    LabelClass,
)
from slidebank.catalog.dicom_tables import DicomInstance
from slidebank.catalog.tables import Dataset, Image
from slidebank.errors import Conflict, InvalidInput, NotFound, StorageError
from slidebank.services.repository import Repository

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
# A viewport read is for drawing: more than this many objects on one screen is a density
# map's job (the viewer asks for one when zoomed out).
MAX_VIEWPORT_ANNOTATIONS = 20_000
MAX_EDIT_ANNOTATIONS = 10_000
MAX_DIFF_ROWS = 100_000
# Agreement holds both sets in memory (about 1 kB an annotation with its geometry) and
# compares them in one request: larger sets are compared from their exports, offline.
MAX_AGREEMENT_ANNOTATIONS = 100_000
HEX_COLOUR_LENGTH = 7
# Set ids, revision and annotation numbers are 64-bit integers in the catalogue: a larger
# number names nothing, and the database drivers refuse to bind it (OverflowError).
MAX_NUMBER = 2**63 - 1


# One import at a time in each process decodes in worker processes (``_decoding_workers``).
_WORKER_IMPORTS = threading.BoundedSemaphore(1)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """An import makes millions of short-lived lists and dicts (decoded features), which
    set off the cyclic garbage collector again and again over everything alive: it took
    most of the decoding time. None of them forms a cycle; collection waits for the end."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class ImportReport:
    set: dict[str, Any]
    format: str
    revision: int
    imported: int
    repaired: int
    clipped: int
    dropped: int
    classes: list[str]


@dataclass
class Reads:
    """What a read use case read, for its caller to tally as reads of data for the audit
    trail (``AppState.note_read``): (dataset short name, target) pairs, added once the
    policy allowed. Targets are the slide's public id, or ``<slide>/<set name>`` for one set,
    as export audits name it."""

    found: list[tuple[str, str]] = field(default_factory=list)

    def note(self, dataset: Dataset, target: str) -> None:
        self.found.append((dataset.short_name, target))


def _noted(reads: Reads | None, annotation_set: AnnotationSet) -> None:
    if reads is not None:
        image = annotation_set.image
        reads.note(image.slide.dataset, f"{image.public_id}/{annotation_set.name}")


def _store(repository: Repository) -> SqlAnnotationStore:
    return SqlAnnotationStore(repository.catalogue)


def set_record(annotation_set: AnnotationSet, counts: Mapping[int, int]) -> dict[str, Any]:
    return {
        "id": annotation_set.id,
        "slide": annotation_set.image.public_id,
        "name": annotation_set.name,
        "kind": annotation_set.kind,
        "author": annotation_set.author,
        "owner_user_id": annotation_set.author_user_id,
        "created_at": annotation_set.created_at.isoformat(),
        "annotations": counts.get(annotation_set.id, 0),
    }


def revision_record(revision: Revision) -> dict[str, Any]:
    return {
        "number": revision.number,
        "at": revision.at.isoformat(),
        "user_id": revision.user_id,
        "author": revision.author,
        "action": revision.action,
        "added": revision.added,
        "removed": revision.removed,
        "detail": dict(revision.detail),
    }


def feature(item: Annotation, simplify: float = 0.0) -> dict[str, Any]:
    """An annotation as a GeoJSON feature (the API's and the viewer's shape)."""
    geometry = item.geometry
    if simplify > 0 and geometry.geom_type in ("Polygon", "MultiPolygon", "LineString"):
        simpler = shapely.simplify(geometry, simplify, preserve_topology=True)
        geometry = simpler if not simpler.is_empty else geometry
    return {
        "type": "Feature",
        "id": item.number,
        "geometry": mapping(geometry),
        "properties": _properties(item),
    }


def _counts(session: Session, set_ids: Sequence[int]) -> dict[int, int]:
    """Current annotations per set, from the revisions (no scan of the annotations)."""
    if not set_ids:
        return {}
    rows = session.execute(
        select(
            AnnotationRevision.set_id,
            func.sum(AnnotationRevision.added) - func.sum(AnnotationRevision.removed),
        )
        .where(AnnotationRevision.set_id.in_(set_ids))
        .group_by(AnnotationRevision.set_id)
    )
    return {int(set_id): int(count or 0) for set_id, count in rows}


def _no_set(set_id: int) -> NotFound:
    """The one answer for a set that does not exist and for one the asker may not know
    exists (``require(hidden_as=...)``): the same words."""
    return NotFound(f"no annotation set {set_id}")


def _set(session: Session, set_id: int) -> AnnotationSet:
    found = session.get(AnnotationSet, set_id) if 0 <= set_id <= MAX_NUMBER else None
    if found is None:
        raise _no_set(set_id)
    return found


def _gate(annotation_set: AnnotationSet) -> DatasetGate:
    return gate_of(annotation_set.image.slide.dataset)


def _readable_set(session: Session, principal: Principal, set_id: int) -> AnnotationSet:
    """The set, if the principal may read it; refused in the words of a missing set."""
    annotation_set = _set(session, set_id)
    require(principal, Action.READ_ANNOTATIONS, _gate(annotation_set), hidden_as=_no_set(set_id))
    return annotation_set


def _require_slide_read(principal: Principal, image: Image) -> None:
    """Refused in the words of a missing slide (unless the dataset features it)."""
    require_for_slide(
        principal, Action.READ_ANNOTATIONS, gate_of(image.slide.dataset), image.public_id
    )


def _revision_number(value: int | None, name: str) -> None:
    if value is not None and not 0 <= value <= MAX_NUMBER:
        raise InvalidInput(f"{name}: revision {value} is not a revision number (0 to {MAX_NUMBER})")


def _change(principal: Principal, action: str, **detail: Any) -> Change:
    return Change(principal.user_id, principal.name, action, detail)


def _set_records(session: Session, image: Image) -> list[dict[str, Any]]:
    """The image's sets, oldest first, with their current sizes."""
    sets = list(
        session.scalars(
            select(AnnotationSet)
            .where(AnnotationSet.image_id == image.id)
            .order_by(AnnotationSet.id)
        )
    )
    counts = _counts(session, [s.id for s in sets])
    return [set_record(s, counts) for s in sets]


def list_sets(
    repository: Repository, principal: Principal, slide_id: str, *, reads: Reads | None = None
) -> list[dict[str, Any]]:
    with repository.catalogue.reading() as session:
        image = queries.image_by_public_id(session, slide_id)
        _require_slide_read(principal, image)
        records = _set_records(session, image)
        if reads is not None:
            reads.note(image.slide.dataset, image.public_id)
        return records


def get_set(
    repository: Repository, principal: Principal, set_id: int, *, reads: Reads | None = None
) -> dict[str, Any]:
    with repository.catalogue.reading() as session:
        annotation_set = _readable_set(session, principal, set_id)
        record = set_record(annotation_set, _counts(session, [set_id]))
        _noted(reads, annotation_set)
        return record


def _new_set(
    session: Session,
    principal: Principal,
    image: Image,
    name: str,
    kind: str,
    author: str | None,
) -> AnnotationSet:
    if kind not in ANNOTATION_KINDS or kind == "reference":
        raise InvalidInput(
            f"kind: {kind!r} is not one of manual, semi-automatic, automatic "
            "(a steward promotes a set to reference)"
        )
    if not name.strip() or len(name) > 200:
        raise InvalidInput("set name: give 1 to 200 characters")
    taken = session.scalar(
        select(AnnotationSet.id).where(
            AnnotationSet.image_id == image.id, AnnotationSet.name == name
        )
    )
    if taken is not None:
        raise Conflict(f"slide {image.public_id} already has an annotation set {name!r}")
    annotation_set = AnnotationSet(
        image_id=image.id,
        name=name,
        kind=kind,
        author_user_id=principal.user_id,
        author=(author or principal.name)[:200],
        created_at=now(),
    )
    session.add(annotation_set)
    session.flush()
    return annotation_set


def create_set(
    repository: Repository,
    principal: Principal,
    slide_id: str,
    name: str,
    kind: str = "manual",
    author: str | None = None,
) -> dict[str, Any]:
    with repository.catalogue.transaction() as session:
        image = queries.image_by_public_id(session, slide_id)
        _require_slide_write(principal, image)
        annotation_set = _new_set(session, principal, image, name, kind, author)
        return set_record(annotation_set, {})


def _target_set(
    session: Session,
    principal: Principal,
    image: Image,
    name: str,
    kind: str,
    author: str | None,
) -> AnnotationSet:
    """The set an import goes into: the slide's set of that name (which the principal must
    own), or a new one."""
    existing = session.scalar(
        select(AnnotationSet).where(AnnotationSet.image_id == image.id, AnnotationSet.name == name)
    )
    if existing is None:
        return _new_set(session, principal, image, name, kind, author)
    _writable(principal, existing)
    return existing


def _require_slide_write(principal: Principal, image: Image) -> None:
    # Reading first: whoever may not see the slide learns nothing more from a refusal.
    _require_slide_read(principal, image)
    require(principal, Action.WRITE_ANNOTATIONS, gate_of(image.slide.dataset))


def _writable(principal: Principal, annotation_set: AnnotationSet) -> None:
    gate = _gate(annotation_set)
    require(principal, Action.READ_ANNOTATIONS, gate, hidden_as=_no_set(annotation_set.id))
    require(principal, Action.WRITE_ANNOTATIONS, gate, owner=Owner(annotation_set.author_user_id))
    if annotation_set.kind == "reference":
        raise Conflict(
            f"annotation set {annotation_set.name!r} is a reference set: it is no longer edited"
        )


def check_import(
    repository: Repository, principal: Principal, slide_id: str, set_name: str
) -> None:
    """Whether ``import_annotations`` would accept the principal's file into the slide's set
    called ``set_name``, asked before the file is received: a refused upload is answered
    before its bytes are read or stored. The import asks the policy again."""
    with repository.catalogue.reading() as session:
        image = queries.image_by_public_id(session, slide_id)
        _require_slide_write(principal, image)
        existing = session.scalar(
            select(AnnotationSet).where(
                AnnotationSet.image_id == image.id, AnnotationSet.name == set_name
            )
        )
        if existing is not None:
            _writable(principal, existing)


def import_annotations(
    repository: Repository,
    principal: Principal,
    slide_id: str,
    source: BinaryIO,
    filename: str,
    *,
    set_name: str,
    file_format: str = "auto",
    outside: Outside = "refuse",
    kind: str = "manual",
    author: str | None = None,
    limits: ImportLimits | None = None,
    address: str | None = None,
) -> ImportReport:
    """One transaction: the set (when new), the annotations, the new classes of the
    dataset's label schema and the audit event. A file that fails stores nothing."""
    limits = limits or ImportLimits()
    head = source.read(SNIFF_BYTES)
    source.seek(0)
    reader = reader_for(file_format, head, filename)
    classes: dict[str, LabelStyle] = {}
    report = CheckReport()
    with repository.catalogue.transaction() as session:
        image = queries.image_by_public_id(session, slide_id)
        dataset = image.slide.dataset
        _require_slide_write(principal, image)
        annotation_set = _target_set(session, principal, image, set_name, kind, author)
        change = _change(principal, "import", file=filename, format=reader.name)
        store = _store(repository)
        with _collector_paused(), _decoding_workers(repository, reader, source) as workers:
            if workers and isinstance(reader, PieceReader):
                job = ImportJob(reader.name, filename, limits, image.width, image.height, outside)
                batches = prepared_in_workers(reader, source, job, workers, classes, report)
                revision = store.insert_prepared(annotation_set.id, batches, change, session)
            else:
                items = checked(
                    reader.read(source, filename, limits, classes),
                    filename,
                    image.width,
                    image.height,
                    outside=outside,
                    report=report,
                )
                revision = store.insert(annotation_set.id, items, change, session=session)
        if revision.added == 0:
            raise InvalidInput(f"{filename}: holds no annotations to import")
        new_classes = _add_classes(session, dataset, classes)
        revision_row = session.scalar(
            select(AnnotationRevision).where(
                AnnotationRevision.set_id == annotation_set.id,
                AnnotationRevision.number == revision.number,
            )
        )
        if revision_row is not None:
            revision_row.detail = {
                **revision_row.detail,
                "repaired": report.repaired,
                "clipped": report.clipped,
                "dropped": report.dropped,
            }
        audit.append(
            session,
            principal,
            "annotations.import",
            dataset_id=dataset.id,
            target=f"{slide_id}/{annotation_set.name}",
            address=address,
            detail={"file": filename, "format": reader.name, "annotations": revision.added},
        )
        counts = _counts(session, [annotation_set.id])
        return ImportReport(
            set_record(annotation_set, counts),
            reader.name,
            revision.number,
            revision.added,
            report.repaired,
            report.clipped,
            report.dropped,
            new_classes,
        )


@contextlib.contextmanager
def _decoding_workers(
    repository: Repository, reader: AnnotationReader, source: BinaryIO
) -> Iterator[int]:
    """How many worker processes decode an import: none for a small file or a format read
    only whole, nor while another import of this process has them (concurrent uploads to a
    server must not start processes without bound)."""
    settings = repository.settings
    wanted = settings.annotation_import_workers
    if (
        not wanted
        or not isinstance(reader, PieceReader)
        or _size(source) < settings.annotation_parallel_import_bytes
        or not _WORKER_IMPORTS.acquire(blocking=False)
    ):
        yield 0
        return
    try:
        yield wanted
    finally:
        _WORKER_IMPORTS.release()


def _size(source: BinaryIO) -> int:
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    return size


def _add_classes(session: Session, dataset: Dataset, found: Mapping[str, LabelStyle]) -> list[str]:
    """Classes an import brought that the dataset's schema lacks join it, with the file's
    colours (a steward can change them)."""
    if not found:
        return []
    known = set(session.scalars(select(LabelClass.name).where(LabelClass.dataset_id == dataset.id)))
    added = []
    for name, style in found.items():
        if name not in known and len(name) <= 200:
            session.add(
                LabelClass(dataset_id=dataset.id, name=name, color=style.color, code=style.code)
            )
            added.append(name)
    return added


def _styles(session: Session, dataset_id: int) -> dict[str, LabelStyle]:
    return {
        row.name: LabelStyle(color=row.color, code=row.code)
        for row in session.scalars(select(LabelClass).where(LabelClass.dataset_id == dataset_id))
    }


@dataclass(frozen=True)
class Export:
    filename: str
    media_type: str
    size: int


def export_annotations(
    repository: Repository,
    principal: Principal,
    set_id: int,
    file_format: str,
    out: IO[bytes],
    *,
    at: int | None = None,
    address: str | None = None,
) -> Export:
    """Writes the set (now, or at revision ``at``) to ``out``; audited once written, so that
    an export that failed half-way is not recorded as one."""
    writer = writer_for(file_format)
    _revision_number(at, "revision")
    with repository.catalogue.reading() as session:
        annotation_set = _readable_set(session, principal, set_id)
        image = annotation_set.image
        dataset = image.slide.dataset
        context = ExportContext(
            set_name=annotation_set.name,
            slide_width=image.width,
            slide_height=image.height,
            mpp=image.mpp_x,
            classes=_styles(session, dataset.id),
            source_dicom=_level0_instance(repository, session, image),
        )
        dataset_id = dataset.id
        target = f"{image.public_id}/{annotation_set.name}"
        name = f"{image.public_id}-{annotation_set.name}{writer.suffix}"
    start = out.tell() if out.seekable() else 0
    writer.write(_store(repository).stream(set_id, at), out, context)  # type: ignore[arg-type]
    size = (out.tell() - start) if out.seekable() else 0
    with repository.catalogue.transaction() as session:
        audit.append(
            session,
            principal,
            "annotations.export",
            dataset_id=dataset_id,
            target=target,
            address=address,
            detail={"format": writer.name, "revision": at},
        )
    return Export(name, writer.media_type, size)


def _level0_instance(repository: Repository, session: Session, image: Image) -> Any:
    row = session.scalar(
        select(DicomInstance)
        .where(DicomInstance.image_id == image.id, DicomInstance.sop_class_uid == WSI_SOP_CLASS)
        .order_by(DicomInstance.number_of_frames.desc())
        .limit(1)
    )
    if row is None:
        return None
    return repository.store.content_dir(image.storage_key) / row.file_name


def _slide_sets(
    repository: Repository,
    principal: Principal,
    slide_id: str,
    set_ids: Sequence[int] | None,
    reads: Reads | None,
) -> list[int]:
    """The slide's sets the read is of (all, or ``set_ids``), once the policy allowed; the
    read is noted with the dataset loaded here (no query of its own per viewport)."""
    with repository.catalogue.reading() as session:
        image = queries.image_by_public_id(session, slide_id)
        sets = _readable_sets(session, principal, image, set_ids)
        if reads is not None:
            reads.note(image.slide.dataset, image.public_id)
        return sets


def _readable_sets(
    session: Session, principal: Principal, image: Image, set_ids: Sequence[int] | None
) -> list[int]:
    _require_slide_read(principal, image)
    on_slide = list(
        session.scalars(select(AnnotationSet.id).where(AnnotationSet.image_id == image.id))
    )
    if set_ids is None:
        return on_slide
    unknown = sorted(set(set_ids) - set(on_slide))
    if unknown:
        raise NotFound(f"slide {image.public_id} has no annotation set {unknown[0]}")
    return list(set_ids)


def viewport_geojson(
    repository: Repository,
    principal: Principal,
    slide_id: str,
    window: Viewport,
    *,
    set_ids: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    min_area: float | None = None,
    simplify: float = 0.0,
    limit: int = MAX_VIEWPORT_ANNOTATIONS,
    reads: Reads | None = None,
) -> bytes:
    """The annotations in a window as GeoJSON text, geometry simplified to ``simplify``
    level-0 pixels (the viewer passes about one screen pixel): what the viewer asks for at
    every pan, so geometry is written by GEOS for the whole window at once."""
    limit = min(limit, MAX_VIEWPORT_ANNOTATIONS)
    if not math.isfinite(simplify) or (min_area is not None and not math.isfinite(min_area)):
        name = "simplify" if not math.isfinite(simplify) else "min_area"
        raise InvalidInput(f"{name}: must be a finite number")
    sets = _slide_sets(repository, principal, slide_id, set_ids, reads)
    found = _store(repository).query(
        sets, window, labels=labels, min_area=min_area, limit=limit + 1
    )
    truncated = len(found) > limit
    found = found[:limit]
    geometries = np.array([a.geometry for a in found], dtype=object)
    if simplify > 0 and found:
        simpler = shapely.simplify(geometries, simplify, preserve_topology=True)
        geometries = np.where(shapely.is_empty(simpler), geometries, simpler)
    texts = shapely.to_geojson(geometries) if found else []
    # NaN and infinities have no JSON spelling: refused rather than sent as invalid JSON
    # (edits and imports refuse them; only a row stored before that holds one).
    encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    plain: dict[tuple[Any, ...], str] = {}  # cells share label and shape: encode once
    parts = []
    for item, text in zip(found, texts, strict=True):
        # The store shares equal property values between annotations: key on identity.
        key = (item.label, item.shape, item.confidence, id(item.properties), id(item.measurements))
        properties = plain.get(key) or plain.setdefault(key, _encoded(encode, item))
        parts.append(
            f'{{"type":"Feature","id":{item.number},"geometry":{text},"properties":{properties}}}'
        )
    return (
        '{"type":"FeatureCollection","truncated":'
        + ("true" if truncated else "false")
        + ',"features":['
        + ",".join(parts)
        + "]}"
    ).encode()


def _encoded(encode: Callable[[Any], str], item: Annotation) -> str:
    try:
        text = encode(_properties(item))
    except ValueError as exc:
        raise StorageError(
            f"annotation {item.number}: a stored property is not a finite number, which JSON "
            "cannot carry; edit or remove the annotation"
        ) from exc
    return text


def _properties(item: Annotation) -> dict[str, Any]:
    return {
        "label": item.label,
        "shape": item.shape,
        "confidence": item.confidence,
        "measurements": item.measurements,
        **{k: v for k, v in item.properties.items() if k != "nucleus"},
    }


def density(
    repository: Repository,
    principal: Principal,
    slide_id: str,
    window: Viewport,
    cell: float,
    *,
    set_ids: Sequence[int] | None = None,
    reads: Reads | None = None,
) -> dict[str, Any]:
    density_grid(window, cell)  # before any query: a refused grid costs none
    sets = _slide_sets(repository, principal, slide_id, set_ids, reads)
    counts = _store(repository).density(sets, window, cell)
    return {
        "x0": window.x0,
        "y0": window.y0,
        "cell": cell,
        "cells": [[column, row, count] for (column, row), count in sorted(counts.items())],
    }


def count_by_label(
    repository: Repository,
    principal: Principal,
    slide_id: str,
    window: Viewport,
    *,
    set_ids: Sequence[int] | None = None,
    reads: Reads | None = None,
) -> dict[str, int]:
    sets = _slide_sets(repository, principal, slide_id, set_ids, reads)
    counts = _store(repository).count_by_label(sets, window)
    return {("" if label is None else label): n for label, n in counts.items()}


def _annotation_of(item: Any, where: str, width: int, height: int) -> Annotation:
    """A GeoJSON feature from the viewer or a script, checked like an import."""
    if not isinstance(item, dict) or not isinstance(item.get("geometry"), dict):
        raise InvalidInput(f"{where}: not a GeoJSON feature with a geometry")
    try:
        geometry = shape(item["geometry"])
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, ShapelyError) as exc:
        raise InvalidInput(f"{where}: malformed geometry ({exc})") from exc
    if not np.isfinite(shapely.get_coordinates(geometry)).all():
        raise InvalidInput(f"{where}: coordinates are not finite numbers")
    properties = item.get("properties") or {}
    if not isinstance(properties, dict):
        raise InvalidInput(f"{where}: properties are not an object")
    declared = properties.get("shape")
    kinds = {"Point": "point", "MultiPoint": "multipoint", "LineString": "line"}
    kinds |= {"Polygon": "polygon", "MultiPolygon": "multipolygon"}
    if geometry.geom_type not in kinds:
        raise InvalidInput(f"{where}: geometry type {geometry.geom_type} is not supported")
    kind: Any = kinds[geometry.geom_type]
    if declared in ("rectangle", "ellipse") and kind == "polygon":
        kind = declared
    elif declared is not None and declared not in SHAPES:
        raise InvalidInput(f"{where}: shape {declared!r} is not one of {', '.join(SHAPES)}")
    label = properties.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > 200):
        raise InvalidInput(f"{where}: label must be text of at most 200 characters")
    extra = {
        k: v
        for k, v in properties.items()
        if k not in ("label", "shape", "confidence", "measurements") and len(repr(v)) < 65_536
    }
    confidence = properties.get("confidence")
    annotation = Annotation(
        geometry=geometry,
        shape=kind,
        label=label,
        properties=extra,
        measurements={},
        confidence=float(confidence) if isinstance(confidence, int | float) else None,
    )
    reason = not_finite(annotation)  # as the stores word it, with the feature's place
    if reason is not None:
        raise InvalidInput(f"{where}: {reason}")
    checked_items = list(checked(iter([Parsed(annotation, where)]), "request", width, height))
    if not checked_items:
        raise InvalidInput(f"{where}: nothing of it lies on the slide")
    return checked_items[0]


def edit(
    repository: Repository,
    principal: Principal,
    set_id: int,
    *,
    add: Sequence[Any] = (),
    replace: Mapping[int, Any] | None = None,
    remove: Sequence[int] = (),
) -> dict[str, Any]:
    """One revision of the principal's own set, from GeoJSON features (the viewer's edits)."""
    replace = replace or {}
    if len(add) + len(replace) + len(remove) > MAX_EDIT_ANNOTATIONS:
        raise InvalidInput(
            f"an edit changes at most {MAX_EDIT_ANNOTATIONS:,} annotations; import files instead"
        )
    with repository.catalogue.reading() as session:
        annotation_set = _set(session, set_id)
        _writable(principal, annotation_set)
        width, height = annotation_set.image.width, annotation_set.image.height
    unknown = [n for n in [*replace, *remove] if not 0 <= int(n) <= MAX_NUMBER]
    if unknown:  # the store's words for a number the set does not hold
        raise NotFound(f"annotation {unknown[0]} is not in set {set_id}")
    added = [
        _annotation_of(item, f"added feature {i}", width, height) for i, item in enumerate(add)
    ]
    replaced = {
        int(number): _annotation_of(item, f"annotation {number}", width, height)
        for number, item in replace.items()
    }
    action = (
        "add"
        if add and not (replace or remove)
        else "delete"
        if remove and not (add or replace)
        else "edit"
    )
    revision = _store(repository).edit(
        set_id, _change(principal, action), add=added, replace=replaced, remove=list(remove)
    )
    return revision_record(revision)


def history(
    repository: Repository, principal: Principal, set_id: int, *, reads: Reads | None = None
) -> list[dict[str, Any]]:
    with repository.catalogue.reading() as session:
        _noted(reads, _readable_set(session, principal, set_id))
    return [revision_record(r) for r in _store(repository).history(set_id)]


def diff(
    repository: Repository,
    principal: Principal,
    set_id: int,
    start: int,
    end: int,
    *,
    reads: Reads | None = None,
) -> dict[str, Any]:
    _revision_number(start, "start")
    _revision_number(end, "end")
    with repository.catalogue.reading() as session:
        _noted(reads, _readable_set(session, principal, set_id))
        changed_rows = session.scalar(
            select(func.sum(AnnotationRevision.added + AnnotationRevision.removed)).where(
                AnnotationRevision.set_id == set_id,
                AnnotationRevision.number > start,
                AnnotationRevision.number <= end,
            )
        )
    if (changed_rows or 0) > MAX_DIFF_ROWS:
        raise InvalidInput(
            f"revisions {start}..{end} change {changed_rows:,} annotations, more than a diff "
            f"shows ({MAX_DIFF_ROWS:,}); export the set at each revision instead"
        )
    found = _store(repository).diff(set_id, start, end)
    return {
        "start": start,
        "end": end,
        "added": [feature(a) for a in found.added],
        "removed": [feature(a) for a in found.removed],
        "changed": [{"before": feature(a), "after": feature(b)} for a, b in found.changed],
    }


def revert(repository: Repository, principal: Principal, set_id: int, to: int) -> dict[str, Any]:
    with repository.catalogue.reading() as session:
        _writable(principal, _set(session, set_id))
    revision = _store(repository).revert(set_id, to, _change(principal, "revert", to=to))
    return revision_record(revision)


def promote(
    repository: Repository, principal: Principal, set_id: int, address: str | None = None
) -> dict[str, Any]:
    """A steward makes a set the dataset's reference; it is not edited afterwards."""
    with repository.catalogue.transaction() as session:
        annotation_set = _readable_set(session, principal, set_id)
        dataset = annotation_set.image.slide.dataset
        require(principal, Action.CURATE, gate_of(dataset))
        if annotation_set.kind == "reference":
            raise Conflict(f"annotation set {annotation_set.name!r} is already a reference")
        previous = annotation_set.kind
        annotation_set.kind = "reference"
        _store(repository).insert(
            set_id, iter(()), _change(principal, "promote", kind=previous), session=session
        )
        audit.append(
            session,
            principal,
            "annotations.promote",
            dataset_id=dataset.id,
            target=f"{annotation_set.image.public_id}/{annotation_set.name}",
            address=address,
            detail={"from": previous},
        )
        return set_record(annotation_set, _counts(session, [set_id]))


def compare(
    repository: Repository,
    principal: Principal,
    reference_set: int,
    test_set: int,
    *,
    distance: float = 10.0,
    cells: bool = False,
    limit: int | None = MAX_AGREEMENT_ANNOTATIONS,
    reads: Reads | None = None,
) -> dict[str, Any]:
    """Agreement between two sets of one slide (``annotations.agreement``). Both sets are
    held in memory and compared at once, so each may hold at most ``limit`` annotations
    (``MAX_AGREEMENT_ANNOTATIONS``, 100,000: a few hundred MB for both; None: no bound, for
    the command line); larger sets are refused before any is read."""
    with repository.catalogue.reading() as session:
        # Both readable first: whether the two are on one slide is news about the second.
        first = _readable_set(session, principal, reference_set)
        second = _readable_set(session, principal, test_set)
        if first.image_id != second.image_id:
            raise InvalidInput("agreement: the two sets annotate different slides")
        names = (first.name, second.name)
        sizes = _counts(session, [reference_set, test_set])
        for annotation_set in (first, second):
            size = sizes.get(annotation_set.id, 0)
            if limit is not None and size > limit:
                raise InvalidInput(
                    f"agreement: set {annotation_set.id} ({annotation_set.name!r}) holds "
                    f"{size:,} annotations, more than the {limit:,} an agreement compares; "
                    "compare exports of the sets instead"
                )
        _noted(reads, first)
        _noted(reads, second)
    # Imported here: it loads scipy (about 45 MB), which every server worker would otherwise
    # carry for a page few requests open.
    from slidebank.annotations import agreement

    store = _store(repository)
    result = agreement.compare(
        list(store.stream(reference_set)),
        list(store.stream(test_set)),
        distance=distance,
        cells=cells,
    )
    return {
        "reference_set": {"id": reference_set, "name": names[0]},
        "test_set": {"id": test_set, "name": names[1]},
        **result.to_dict(),
    }


def label_schema(repository: Repository, principal: Principal, name: str) -> list[dict[str, Any]]:
    with repository.catalogue.reading() as session:
        dataset = queries.dataset_by_name(session, name)
        require(principal, Action.READ_ANNOTATIONS, gate_of(dataset), public=True)
        return [_class_record(row) for row in _classes(session, dataset.id)]


def _classes(session: Session, dataset_id: int) -> list[LabelClass]:
    return list(
        session.scalars(
            select(LabelClass).where(LabelClass.dataset_id == dataset_id).order_by(LabelClass.name)
        )
    )


def _class_record(row: LabelClass) -> dict[str, Any]:
    return {
        "name": row.name,
        "parent": row.parent,
        "color": row.color,
        "code": row.code,
        "code_meaning": row.code_meaning,
    }


def set_label_schema(
    repository: Repository,
    principal: Principal,
    name: str,
    classes: Sequence[Mapping[str, Any]],
    address: str | None = None,
) -> list[dict[str, Any]]:
    """Replaces the dataset's label schema (stewards). Parents must be classes of it."""
    parsed = [_label_class(i, item) for i, item in enumerate(classes)]
    names = [c["name"] for c in parsed]
    if len(set(names)) != len(names):
        raise InvalidInput("label schema: a class name appears twice")
    for item in parsed:
        if item["parent"] is not None and item["parent"] not in names:
            raise InvalidInput(
                f"label schema: class {item['name']!r} has parent {item['parent']!r}, "
                "which is not in the schema"
            )
    with repository.catalogue.transaction() as session:
        dataset = queries.dataset_by_name(session, name)
        require(principal, Action.CURATE, gate_of(dataset), public=True)
        for row in _classes(session, dataset.id):
            session.delete(row)
        session.flush()
        for item in parsed:
            session.add(LabelClass(dataset_id=dataset.id, **item))
        audit.append(
            session,
            principal,
            "annotations.labels",
            dataset_id=dataset.id,
            target=name,
            address=address,
            detail={"classes": len(parsed)},
        )
        session.flush()
        return [_class_record(row) for row in _classes(session, dataset.id)]


def _label_class(index: int, item: Mapping[str, Any]) -> dict[str, Any]:
    where = f"label schema: class {index}"
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where}: not an object")
    name = item.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 200:
        raise InvalidInput(f"{where}: name must be text of 1 to 200 characters")
    colour = item.get("color")
    if colour is not None and not (
        isinstance(colour, str)
        and len(colour) == HEX_COLOUR_LENGTH
        and colour.startswith("#")
        and all(c in "0123456789abcdefABCDEF" for c in colour[1:])
    ):
        raise InvalidInput(f"{where} ({name!r}): color must be #rrggbb")
    fields: dict[str, Any] = {"name": name, "color": colour.lower() if colour else None}
    for key, size in (("parent", 200), ("code", 64), ("code_meaning", 200)):
        value = item.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > size):
            raise InvalidInput(f"{where} ({name!r}): {key} must be text of at most {size}")
        fields[key] = value
    return fields


def stream_set(
    repository: Repository, principal: Principal, set_id: int, at: int | None = None
) -> Iterator[Annotation]:
    _revision_number(at, "revision")
    with repository.catalogue.reading() as session:
        _readable_set(session, principal, set_id)
    return _store(repository).stream(set_id, at)


def readable_slide_sets(
    repository: Repository, principal: Principal, slide_id: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """For the slide page: the sets, the label schema, and whether the principal may draw."""
    with repository.catalogue.reading() as session:
        image = queries.image_by_public_id(session, slide_id)
        dataset = image.slide.dataset
        gate = gate_of(dataset)
        if not decide(principal, Action.READ_ANNOTATIONS, gate).allowed:
            return [], [], False
        may_draw = decide(principal, Action.WRITE_ANNOTATIONS, gate).allowed
        return (
            _set_records(session, image),
            [_class_record(row) for row in _classes(session, dataset.id)],
            may_draw,
        )


def find_set(repository: Repository, principal: Principal, slide_id: str, name: str) -> int:
    """The id of the slide's set called ``name``."""
    with repository.catalogue.reading() as session:
        image = queries.image_by_public_id(session, slide_id)
        _require_slide_read(principal, image)
        found = session.scalar(
            select(AnnotationSet.id).where(
                AnnotationSet.image_id == image.id, AnnotationSet.name == name
            )
        )
        if found is None:
            raise NotFound(f"slide {slide_id} has no annotation set {name!r}")
        return int(found)


def slide_rights(repository: Repository, principal: Principal, slide_id: str) -> dict[str, bool]:
    """What the principal may do with the slide's annotations, for pages to offer the right
    buttons: ``read``, ``write`` (sets of their own) and ``curate`` (promote to reference).
    Only a hint: each use case asks the policy again when it is called."""
    with repository.catalogue.reading() as session:
        image = queries.image_by_public_id(session, slide_id)
        gate = gate_of(image.slide.dataset)
        read = decide(principal, Action.READ_ANNOTATIONS, gate).allowed
        return {
            "read": read,
            "write": read and decide(principal, Action.WRITE_ANNOTATIONS, gate).allowed,
            "curate": read and decide(principal, Action.CURATE, gate).allowed,
        }
