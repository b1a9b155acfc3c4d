"""Use cases of DICOMweb: search the instance index (QIDO-RS), read headers, frames and
renderings of stored instance files (WADO-RS), and store posted instances (STOW-RS) through
the one ingest pipeline.

Searches narrow to the datasets the principal may read, and storing asks the policy for the
steward's right; reads of instances are decided here (:func:`readable`) on the ``Instance``
found here and the dataset gates the web layer keeps cached (as for tiles).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from slidebank.access.policy import (
    Action,
    DatasetGate,
    DatasetPolicy,
    Decision,
    Principal,
    Role,
    decide,
    require,
)
from slidebank.access.principals import dataset_gates, gate_of
from slidebank.catalog import dicom_queries, queries
from slidebank.catalog.dicom_queries import Level, Located
from slidebank.catalog.dicom_tables import DicomInstance
from slidebank.catalog.queries import MAX_OFFSET
from slidebank.catalog.tables import Dataset as CatalogDataset
from slidebank.catalog.tables import Image, Slide
from slidebank.errors import (
    CorruptSlide,
    Forbidden,
    InvalidInput,
    NotFound,
    SignInRequired,
    SlidebankError,
    UnsupportedFormat,
)
from slidebank.ingest.dicom_index import describe_instances
from slidebank.ingest.pipeline import Outcome
from slidebank.services import annotating, ingesting
from slidebank.services.repository import Repository
from slidebank.slides.dicom_frames import FramePositions

# Microscopy Bulk Simple Annotations: STOW-RS imports these into annotation sets.
ANNOTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.91.1"

LOCATIONS_TTL_S = 30.0
MAX_LOCATIONS = 10_000
MAX_HEADERS = 256
MAX_PAGE = 1000
PIXEL_DATA_TAG = "7FE00010"
AVAILABLE_TRANSFER_SYNTAX = "00083002"
STUDY_TAGS = frozenset(
    {"00080005", "00080020", "00080030", "00080050", "00080090", "00081030", "00100010"}
    | {"00100020", "00100030", "00100040", "0020000D", "00200010"}
)
SERIES_TAGS = frozenset({"00080005", "00080060", "0020000E", "00200011", "0008103E", "0020000D"})
# STOW-RS failure reasons (PS3.18 table I.2-3 and PS3.4 annex GG).
PROCESSING_FAILURE = 0x0110
CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class Instance:
    """A stored instance file, where it is and whose it is (detached from any session)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    number_of_frames: int
    public_id: str  # the slide (image) it belongs to
    dataset_id: int
    path: Path
    thumbnail: Path


class DicomReads:
    """What serving DICOMweb keeps between requests (thread-safe, bounded): frame positions
    per instance file, parsed headers, and where instances are (content never moves)."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.frames = FramePositions()
        self._located: OrderedDict[tuple[str, str | None, str | None], tuple[float, Any]] = (
            OrderedDict()
        )
        self._headers: OrderedDict[Path, Dataset] = OrderedDict()
        self._lock = threading.Lock()

    def instances(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[Instance]:
        """The stored instances of a study, series or one instance (every dataset); NotFound
        when there are none. Cached for a while: a lookup per frame would cost more than
        reading the frame."""
        key = (study, series, sop)
        with self._lock:
            cached = self._located.get(key)
            if cached is not None and cached[0] > time.monotonic():
                return list(cached[1])
        found = self._lookup(study, series, sop)
        if not found:
            raise no_such_instances(study, series, sop)
        with self._lock:
            self._located[key] = (time.monotonic() + LOCATIONS_TTL_S, tuple(found))
            while len(self._located) > MAX_LOCATIONS:
                self._located.popitem(last=False)
        return found

    def cached(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[Instance] | None:
        """The instances if a recent lookup found them, without asking the catalogue."""
        with self._lock:
            cached = self._located.get((study, series, sop))
        if cached is None or cached[0] <= time.monotonic():
            return None
        return list(cached[1])

    def _lookup(self, study: str, series: str | None, sop: str | None) -> list[Instance]:
        store = self.repository.store
        with self.repository.catalogue.reading() as session:
            located = dicom_queries.locate(session, study, series, sop)
        return [_instance(store.content_dir(row.storage_key), row, store) for row in located]

    def header(self, instance: Instance) -> Dataset:
        """The instance's attributes without pixel data (kept for the last few files)."""
        with self._lock:
            found = self._headers.get(instance.path)
            if found is not None:
                self._headers.move_to_end(instance.path)
                return found
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = pydicom.dcmread(instance.path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise CorruptSlide(f"instance {instance.sop_uid}: cannot read ({exc})") from exc
        with self._lock:
            self._headers[instance.path] = found
            while len(self._headers) > MAX_HEADERS:
                self._headers.popitem(last=False)
        return found

    def read_frames(self, instance: Instance, numbers: list[int]) -> list[bytes]:
        return self.frames.read(instance.path, numbers)

    def read_known_frames(self, instance: Instance, numbers: list[int]) -> list[bytes] | None:
        """The frames if where they lie is known (no scan, a few ``pread``), else None."""
        return self.frames.read_known(instance.path, numbers)


def _instance(content: Path, row: Located, store: Any) -> Instance:
    item = row.instance
    return Instance(
        item.study_uid,
        item.series_uid,
        item.sop_uid,
        item.sop_class_uid,
        item.transfer_syntax_uid,
        item.number_of_frames,
        row.public_id,
        row.dataset_id,
        content / item.file_name,
        store.thumbnail_path(row.storage_key),
    )


def no_such_instances(study: str, series: str | None, sop: str | None) -> NotFound:
    """The one answer for instances that are not stored and for those the asker may not know
    are: the same words, so that a refusal tells nothing of what is stored."""
    what = "instance" if sop else "series" if series else "study"
    return NotFound(f"no {what} {sop or series or study}")


class Readable(NamedTuple):
    """The instances a request may read, and whether all of them are open data (which makes
    the answer publicly cacheable). A tuple: made on every frame request."""

    instances: list[Instance]
    open_data: bool


def readable(
    principal: Principal,
    action: Action,
    found: Sequence[Instance],
    gates: Mapping[int, DatasetGate],
    study: str,
    series: str | None = None,
    sop: str | None = None,
) -> Readable:
    """Of the instances ``found`` for the UIDs asked, those ``principal`` may ``action``
    (``gates``: each one's dataset, by id). Refused as if not stored unless one of them
    belongs to a featured slide (403). A SOP instance UID is unique per image only, so it
    may be stored more than once: an instance URL then answers with the first copy the
    principal may read (the order of the index lookup), never with several."""
    allowed: list[Instance] = []
    refusals: list[Decision] = []
    open_data = True
    for item in found:
        gate = gates[item.dataset_id]
        decision = decide(principal, action, gate, public=item.public_id in gate.featured)
        if decision.allowed:
            allowed.append(item)
            open_data = open_data and gate.policy is DatasetPolicy.OPEN
            if sop is not None:
                break
        else:
            refusals.append(decision)
    if not allowed:
        refused = min(refusals, key=lambda d: d.status != 404, default=None)  # 404 first
        if refused is None or refused.status == 404:
            raise no_such_instances(study, series, sop)
        refused.raise_if_refused()
    return Readable(allowed, open_data)


# QIDO-RS


def readable_datasets(session: Session, principal: Principal) -> frozenset[int]:
    return frozenset(
        gate.id
        for gate in dataset_gates(session).values()
        if decide(principal, Action.READ_METADATA, gate).allowed
    )


def search(
    repository: Repository,
    principal: Principal,
    level: Level,
    filters: Mapping[str, str],
    include: Iterable[str],
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], frozenset[int]]:
    """QIDO-RS results as DICOM JSON, and the datasets they come from (for the audit)."""
    if not 0 < limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput(f"offset must be between 0 and {MAX_OFFSET}, got {offset}")
    with repository.catalogue.reading() as session:
        allowed = readable_datasets(session, principal)
        found = dicom_queries.search(session, level, filters, allowed, limit, offset)
    extra = frozenset(tag.upper() for tag in include)
    results = [_qido_result(level, item, extra) for item in found]
    return results, frozenset(item.dataset_id for item in found)


def _qido_result(
    level: Level, found: dicom_queries.Found, include: frozenset[str]
) -> dict[str, Any]:
    attributes: dict[str, Any] = dict(found.instance.attributes)
    if level == "instance":
        attributes[AVAILABLE_TRANSFER_SYNTAX] = {
            "vr": "UI",
            "Value": [found.instance.transfer_syntax_uid],
        }
        return attributes
    wanted = (STUDY_TAGS if level == "study" else SERIES_TAGS) | include
    if "ALL" in include:
        wanted = wanted | STUDY_TAGS | SERIES_TAGS
    result = {tag: value for tag, value in attributes.items() if tag in wanted}
    if level == "study":
        result["00080061"] = {"vr": "CS", "Value": list(found.modalities)}
        result["00201206"] = {"vr": "IS", "Value": [found.series]}
        result["00201208"] = {"vr": "IS", "Value": [found.instances]}
    else:
        result["00201209"] = {"vr": "IS", "Value": [found.instances]}
    return dict(sorted(result.items()))


# WADO-RS


def metadata(reads: DicomReads, instance: Instance, bulk_data_uri: str) -> dict[str, Any]:
    """The instance's attributes as DICOM JSON, its pixel data by reference."""
    header = reads.header(instance)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attributes: dict[str, Any] = header.to_json_dict(suppress_invalid_tags=True)
    meta = header.file_meta
    file_meta = Dataset()
    for keyword in ("TransferSyntaxUID", "MediaStorageSOPClassUID"):
        if keyword in meta:
            file_meta.add(meta[keyword])
    attributes.update(file_meta.to_json_dict())
    attributes[AVAILABLE_TRANSFER_SYNTAX] = {"vr": "UI", "Value": [instance.transfer_syntax_uid]}
    encapsulated = header.file_meta.TransferSyntaxUID.is_compressed
    wide = int(header.get("BitsAllocated") or 8) > 8
    vr = "OW" if wide and not encapsulated else "OB"
    attributes[PIXEL_DATA_TAG] = {"vr": vr, "BulkDataURI": bulk_data_uri}
    return dict(sorted(attributes.items()))


def thumbnail_of(instance: Instance) -> bytes:
    """The stored JPEG thumbnail of the slide the instance belongs to."""
    try:
        return instance.thumbnail.read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"slide {instance.public_id} has no stored thumbnail") from exc


def render_frame(reads: DicomReads, instance: Instance, number: int) -> Any:
    """One frame decoded to a Pillow image (RGB or gray)."""
    from wsidicom.codec import Codec
    from wsidicom.geometry import Size as WsiSize

    header = reads.header(instance)
    (data,) = reads.read_frames(instance, [number])
    syntax = pydicom.uid.UID(instance.transfer_syntax_uid)
    spp = int(header.get("SamplesPerPixel") or 1)
    bits = int(header.get("BitsAllocated") or 8)
    photometric = str(header.get("PhotometricInterpretation") or "MONOCHROME2")
    if not Codec.is_supported(syntax, spp, bits, photometric):
        raise UnsupportedFormat(f"instance {instance.sop_uid}: cannot decode {syntax.name}")
    size = WsiSize(int(header.Columns), int(header.Rows))
    codec = Codec.create(syntax, spp, bits, size, photometric)
    try:
        image = codec.decode(data)
    except Exception as exc:  # any codec's failure on damaged data
        raise CorruptSlide(f"instance {instance.sop_uid}: frame {number} ({exc})") from exc
    return image.convert("L" if image.mode in ("L", "I;16", "I") else "RGB")


# STOW-RS


@dataclass(frozen=True)
class Stored:
    """What happened to one posted instance."""

    sop_class_uid: str
    sop_uid: str
    stored: bool
    reason: str = ""
    # The stored copy's study and series: ingest converts and de-identifies, so the stored
    # instances have UIDs of their own.
    retrieve: tuple[str, str] | None = None


def stow_dataset(repository: Repository, principal: Principal, name: str | None) -> str:
    """The dataset posted instances go to: the one named, else the only one the principal
    stewards. Its steward's right (``curate``) is required either way."""
    with repository.catalogue.reading() as session:
        if name is None:
            mine = sorted(
                dataset_id for dataset_id, roles in principal.roles.items() if Role.STEWARD in roles
            )
            if len(mine) != 1:
                if not principal.signed_in:
                    raise SignInRequired("sign in as a steward of the dataset to store into")
                if not mine and not principal.is_admin:
                    raise Forbidden("only a dataset's stewards store instances into it")
                raise InvalidInput(
                    "name the dataset to store into: ?dataset=<short name> "
                    "(needed unless you steward exactly one dataset)"
                )
            dataset = session.get(CatalogDataset, mine[0])
            if dataset is None:
                raise NotFound(f"no dataset {mine[0]}")
        else:
            dataset = queries.dataset_by_name(session, name)
        require(principal, Action.CURATE, gate_of(dataset))
        return dataset.short_name


def store_instances(
    repository: Repository,
    principal: Principal,
    dataset: str,
    folder: Path,
    study: str | None = None,
) -> list[Stored]:
    """Ingest the instance files in ``folder`` (one file per posted part) into ``dataset``:
    grouped by series, each series one slide through the ingest pipeline; annotation
    instances (Microscopy Bulk Simple Annotations) are imported into a set of the slide
    they reference. With ``study`` (STOW-RS to a study's URL), instances of other studies
    are refused."""
    headers: dict[Path, Dataset | None] = {}
    refused: dict[Path, str] = {}
    annotations: dict[Path, Stored] = {}
    for path in sorted(folder.iterdir()):
        header = _posted_header(path)
        headers[path] = header
        if header is not None and study and str(header.get("StudyInstanceUID", "")) != study:
            refused[path] = f"not an instance of study {study}"
        elif header is not None and str(header.get("SOPClassUID", "")) == ANNOTATION_SOP_CLASS:
            annotations[path] = _store_annotations(repository, principal, dataset, path, header)
    series: dict[str, Path] = {}
    moved: dict[Path, Path] = {}
    for path, header in headers.items():
        if header is None or path in refused or path in annotations:
            continue
        uid = str(header.get("SeriesInstanceUID", ""))
        target = series.setdefault(uid, folder / f"series-{len(series):04d}")
        target.mkdir(exist_ok=True)
        moved[path] = path.rename(target / path.name)
    report = ingesting.ingest_paths(repository, sorted(series.values()), dataset)
    outcomes: dict[Path, Outcome] = {}
    for outcome in report.outcomes:
        source = Path(outcome.source)
        outcomes[source if source.is_dir() else source.parent] = outcome
    kept = _stored_uids(repository, [o.id for o in report.outcomes if o.id])
    results = []
    for path, header in headers.items():
        if header is None:
            results.append(Stored("", "", False, "not a DICOM instance"))
            continue
        sop_class = str(header.get("SOPClassUID", ""))
        sop = str(header.get("SOPInstanceUID", ""))
        if path in refused:
            results.append(Stored(sop_class, sop, False, refused[path]))
            continue
        if path in annotations:
            results.append(annotations[path])
            continue
        done = outcomes.get(moved[path].parent)
        if done is None:
            skipped = next((p.reason for p in report.skipped if Path(p.path) == moved[path]), "")
            results.append(Stored(sop_class, sop, False, skipped or "not ingested"))
        elif done.status == "failed":
            results.append(Stored(sop_class, sop, False, done.reason or "ingest failed"))
        else:
            results.append(Stored(sop_class, sop, True, done.status, kept.get(done.id or "")))
    return results


def _store_annotations(
    repository: Repository, principal: Principal, dataset: str, path: Path, header: Dataset
) -> Stored:
    """A posted annotation instance into a set of the slide of ``dataset`` it annotates:
    found by the image instances it references (the stored, de-identified UIDs a client read
    here), else by its study. Only its annotations are kept, never its header."""
    sop_class, sop = str(header.SOPClassUID), str(header.SOPInstanceUID)
    referenced = {
        str(instance.ReferencedSOPInstanceUID)
        for series in header.get("ReferencedSeriesSequence", [])
        for instance in series.get("ReferencedInstanceSequence", [])
        if "ReferencedSOPInstanceUID" in instance
    } | {
        str(item.ReferencedSOPInstanceUID)
        for item in header.get("ReferencedImageSequence", [])
        if "ReferencedSOPInstanceUID" in item
    }
    with repository.catalogue.reading() as session:
        # Only slides of the target dataset: looking further would tell a steward of one
        # dataset which UIDs another dataset holds, and name its slides.
        query = (
            select(Image.public_id)
            .join(DicomInstance, DicomInstance.image_id == Image.id)
            .join(Slide, Slide.id == Image.slide_id)
            .join(CatalogDataset, CatalogDataset.id == Slide.dataset_id)
            .where(CatalogDataset.short_name == dataset)
        )
        slides = set(
            session.scalars(query.where(DicomInstance.sop_uid.in_(sorted(referenced))))
        ) or set(
            session.scalars(
                query.where(DicomInstance.study_uid == str(header.get("StudyInstanceUID", "")))
            )
        )
    if len(slides) != 1:
        reason = "references no stored slide" if not slides else "references several slides"
        return Stored(sop_class, sop, False, f"annotation instance {reason}")
    (slide,) = slides
    name = str(header.get("SeriesDescription", "") or "") or f"DICOM {sop[-12:]}"
    try:
        with path.open("rb") as source:
            report = annotating.import_annotations(
                repository,
                principal,
                slide,
                source,
                path.name,
                set_name=name[:200],
                file_format="dicom-ann",
                kind="automatic",
            )
    except SlidebankError as exc:
        return Stored(sop_class, sop, False, str(exc))
    return Stored(
        sop_class, sop, True, f"{report.imported} annotations into set {name!r} of {slide}"
    )


def _posted_header(path: Path) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError):
        return None
    if not header.get("SOPInstanceUID") or not header.get("SeriesInstanceUID"):
        return None
    return header


def _stored_uids(repository: Repository, public_ids: list[str]) -> dict[str, tuple[str, str]]:
    """The study and series of each slide's stored instances, by public id."""
    with repository.catalogue.reading() as session:
        rows = session.execute(
            select(Image.public_id, DicomInstance.study_uid, DicomInstance.series_uid)
            .select_from(DicomInstance)
            .join(Image, Image.id == DicomInstance.image_id)
            .where(Image.public_id.in_(public_ids))
        )
        return {public_id: (study, series) for public_id, study, series in rows}


def index_stored_slides(repository: Repository) -> int:
    """Index the DICOM slides stored before the index existed; returns how many instances."""
    count = 0
    with repository.catalogue.reading() as session:
        images = [
            (image.id, image.storage_key)
            for image in dicom_queries.images_without_instances(session)
        ]
    for image_id, key in images:
        entries = describe_instances(repository.store.content_dir(key))
        with repository.catalogue.transaction() as session:
            image = session.get(Image, image_id)
            if image is not None and entries:
                dicom_queries.add_instances(session, image, entries)
                count += len(entries)
    return count
