"""Reads and writes of the catalogue. The caller's session owns the transaction."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, or_, select
from sqlalchemy.orm import Session, selectinload

from slidebank.catalog.entries import DatasetEntry, ObservationEntry, ScanEntry, SlideEntry
from slidebank.catalog.tables import (
    Block,
    Case,
    Dataset,
    Image,
    Observation,
    Slide,
    Specimen,
)
from slidebank.errors import InvalidInput, NotFound, no_such_slide

SHORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PUBLIC_ID_ALPHABET = "abcdefghjkmnpqrstvwxyz0123456789"  # no i, l, o, u: easy to read aloud
MAX_PAGE = 10_000
# The deepest page any listing reaches (the web's slide browser pages no deeper either).
# Bounded so that no value a client sends overflows the engines' 64-bit integers: SQLite
# raises OverflowError on a larger one.
MAX_OFFSET = MAX_PAGE * 1000
# The largest row id either engine stores (64-bit signed); ids in URLs are bounded by it.
MAX_ID = 2**63 - 1


def new_public_id() -> str:
    """A random, stable, URL-safe slide identifier such as ``sb-7k2m9x4q1c``."""
    return "sb-" + "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(10))


def check_short_name(name: str) -> None:
    if not SHORT_NAME.match(name):
        raise InvalidInput(
            f"dataset name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def ensure_dataset(session: Session, entry: DatasetEntry) -> Dataset:
    """The dataset with this short name, created (and its given fields set) if absent."""
    check_short_name(entry.short_name)
    dataset = session.scalar(select(Dataset).where(Dataset.short_name == entry.short_name))
    if dataset is None:
        dataset = Dataset(short_name=entry.short_name, title=entry.title or entry.short_name)
        session.add(dataset)
    for name in ("title", "version", "licence", "description"):
        value = getattr(entry, name)
        if value is not None:
            setattr(dataset, name, value)
    session.flush()
    return dataset


def list_datasets(session: Session) -> list[tuple[Dataset, int]]:
    """Every dataset with its number of images."""
    counts = (
        select(Slide.dataset_id, func.count(Image.id).label("images"))
        .join(Image, Image.slide_id == Slide.id)
        .group_by(Slide.dataset_id)
        .subquery()
    )
    rows = session.execute(
        select(Dataset, func.coalesce(counts.c.images, 0))
        .outerjoin(counts, counts.c.dataset_id == Dataset.id)
        .order_by(Dataset.short_name)
    )
    return [(dataset, int(count)) for dataset, count in rows]


def image_by_checksum(session: Session, checksum: str) -> Image | None:
    return session.scalar(select(Image).where(Image.checksum == checksum))


def has_image_of_size(session: Session, width: int, height: int) -> bool:
    """Whether a registered slide has these level-0 dimensions (a possible duplicate)."""
    found = session.scalar(
        select(Image.id).where(Image.width == width, Image.height == height).limit(1)
    )
    return found is not None


def dataset_id_of_image(session: Session, public_id: str) -> int:
    """The dataset of a slide, by one indexed lookup (checked before a slide is opened)."""
    found: int | None = session.scalar(
        select(Slide.dataset_id)
        .join(Image, Image.slide_id == Slide.id)
        .where(Image.public_id == public_id)
    )
    if found is None:
        raise no_such_slide(public_id)
    return found


def image_by_public_id(session: Session, public_id: str) -> Image:
    image: Image | None = session.scalar(
        _with_hierarchy(select(Image)).where(Image.public_id == public_id)
    )
    if image is None:
        raise no_such_slide(public_id)
    return image


def images_named(session: Session, public_ids: list[str] | None) -> list[Image]:
    """The images of ``public_ids`` in that order (NotFound naming the first unknown), or
    every image by id when None: what commands taking "ids or --all" work on."""
    if public_ids is None:
        return list(session.scalars(select(Image).order_by(Image.public_id)))
    return [image_by_public_id(session, public_id) for public_id in public_ids]


def add_scanned_slide(
    session: Session, dataset: Dataset, scan: ScanEntry, entry: SlideEntry | None
) -> Image:
    """Register one scan with its case → specimen → block → slide hierarchy and observations."""
    entry = entry or SlideEntry()
    block = _block_for(session, dataset, entry)
    slide = Slide(
        dataset=dataset,
        block=block,
        identifier=entry.slide,
        stain_compound=entry.stain_compound,
        stain_target=entry.stain_target,
        stain_method=entry.stain_method,
    )
    session.add(slide)
    image = Image(
        public_id=new_public_id(),
        slide=slide,
        format=scan.format,
        vendor=scan.vendor,
        backend=scan.backend,
        width=scan.width,
        height=scan.height,
        level_count=len(scan.levels),
        levels=scan.levels,
        mpp_x=scan.mpp_x,
        mpp_y=scan.mpp_y,
        objective_power=scan.objective_power,
        associated=scan.associated,
        properties=scan.properties,
        checksum=scan.checksum,
        storage_key=scan.storage_key,
        size_bytes=scan.size_bytes,
        files=[vars(f) for f in scan.files],
        source_name=scan.source_name,
    )
    session.add(image)
    session.flush()
    _add_observations(session, entry.slide_observations, slide_id=slide.id)
    if block is not None:
        specimen = block.specimen
        _add_observations(session, entry.specimen_observations, specimen_id=specimen.id)
        _add_observations(session, entry.case_observations, case_id=specimen.case.id)
    session.flush()
    return image


def _block_for(session: Session, dataset: Dataset, entry: SlideEntry) -> Block | None:
    if entry.case is None:
        if entry.specimen or entry.block or entry.case_observations:
            raise InvalidInput("sidecar: 'case' is required when specimen or block is given")
        return None
    case = session.scalar(
        select(Case).where(Case.dataset_id == dataset.id, Case.pseudonym == entry.case)
    )
    if case is None:
        case = Case(dataset=dataset, pseudonym=entry.case, species=entry.species)
        session.add(case)
    elif entry.species and case.species and case.species != entry.species:
        raise InvalidInput(
            f"sidecar: case {entry.case!r} is {case.species!r} in the catalogue, "
            f"not {entry.species!r}"
        )
    elif entry.species:
        case.species = entry.species
    session.flush()
    specimen_id = entry.specimen or "1"
    specimen = session.scalar(
        select(Specimen).where(Specimen.case_id == case.id, Specimen.identifier == specimen_id)
    )
    if specimen is None:
        specimen = Specimen(
            case=case,
            identifier=specimen_id,
            anatomical_site=entry.anatomical_site,
            sampling=entry.sampling,
        )
        session.add(specimen)
    else:
        specimen.anatomical_site = entry.anatomical_site or specimen.anatomical_site
        specimen.sampling = entry.sampling or specimen.sampling
    session.flush()
    block_id = entry.block or "1"
    block = session.scalar(
        select(Block).where(Block.specimen_id == specimen.id, Block.identifier == block_id)
    )
    if block is None:
        block = Block(specimen=specimen, identifier=block_id)
        session.add(block)
        session.flush()
    return block


def _add_observations(
    session: Session, observations: tuple[ObservationEntry, ...], **subject: int
) -> None:
    for observation in observations:
        session.add(
            Observation(
                kind=observation.kind,
                code=observation.code,
                scheme=observation.scheme,
                meaning=observation.meaning,
                text=observation.text,
                **subject,
            )
        )


@dataclass(frozen=True)
class SlideFilter:
    """Filters of ``slidebank list`` and ``GET /api/slides``; text matches are case-blind."""

    dataset: str | None = None
    anatomical_site: str | None = None
    stain: str | None = None
    species: str | None = None
    diagnosis: str | None = None
    vendor: str | None = None
    format: str | None = None
    mpp_min: float | None = None
    mpp_max: float | None = None
    limit: int = 100
    offset: int = 0
    # Only these datasets (ids): the ones the asking principal may read; None for all.
    dataset_ids: frozenset[int] | None = None


# The property in which a converted slide keeps the format of its source (OpenSlide's name).
SOURCE_FORMAT = "slidebank.source-format"
# File extensions people type for a format, as the format names the catalogue keeps (only
# those that name one format: a .tif may be Philips, OME, generic or Ventana).
FORMAT_ALIASES = {
    "svs": "aperio",
    "ndpi": "hamamatsu",
    "vms": "hamamatsu",
    "vmu": "hamamatsu",
    "mrxs": "mirax",
    "scn": "leica",
    "bif": "ventana",
    "dcm": "dicom",
}


# The text filters by the parameter names users type (API query, web form) and the
# SlideFilter field each one sets: one table, so the interfaces cannot drift apart.
TEXT_FILTER_FIELDS: dict[str, str] = {
    "site": "anatomical_site",
    "stain": "stain",
    "species": "species",
    "diagnosis": "diagnosis",
    "vendor": "vendor",
    "format": "format",
}


def slide_filter(
    dataset: str | None,
    texts: Mapping[str, str | None],
    mpp_min: float | None,
    mpp_max: float | None,
    limit: int,
    offset: int,
) -> SlideFilter:
    """A SlideFilter from parameters named as in ``TEXT_FILTER_FIELDS``; empty texts are unset."""
    fields = {TEXT_FILTER_FIELDS[name]: texts.get(name) or None for name in TEXT_FILTER_FIELDS}
    return SlideFilter(
        dataset=dataset or None,
        mpp_min=mpp_min,
        mpp_max=mpp_max,
        limit=limit,
        offset=offset,
        **fields,  # type: ignore[arg-type]
    )


def list_images(session: Session, where: SlideFilter) -> list[Image]:
    """Images matching every given filter, newest first."""
    check_page(where.limit, where.offset)
    query = _filtered(_with_hierarchy(select(Image)), where)
    query = query.order_by(Image.created_at.desc(), Image.id.desc())
    return list(session.scalars(query.limit(where.limit).offset(where.offset)))


def count_images(session: Session, where: SlideFilter) -> int:
    """How many images match the filters (all pages)."""
    return int(session.scalar(_filtered(select(func.count(Image.id)), where)) or 0)


def check_page(limit: int, offset: int) -> None:
    if not 0 < limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput(f"offset must be between 0 and {MAX_OFFSET}, got {offset}")


def _filtered(query: Select[Any], where: SlideFilter) -> Select[Any]:
    query = (
        query.select_from(Image)
        .join(Image.slide)
        .join(Slide.dataset)
        .outerjoin(Slide.block)
        .outerjoin(Block.specimen)
        .outerjoin(Specimen.case)
    )
    for condition in _conditions(where):
        query = query.where(condition)
    return query


def dataset_by_name(session: Session, short_name: str) -> Dataset:
    dataset = session.scalar(select(Dataset).where(Dataset.short_name == short_name))
    if dataset is None:
        raise NotFound(f"no dataset {short_name!r}")
    return dataset


def list_cases(session: Session, dataset: Dataset, limit: int, offset: int) -> list[Case]:
    """A dataset's cases by pseudonym, with their specimens, blocks and slides loaded."""
    check_page(limit, offset)
    query = (
        _with_case_hierarchy(select(Case))
        .where(Case.dataset_id == dataset.id)
        .order_by(Case.pseudonym)
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query))


def count_cases(session: Session, dataset: Dataset) -> int:
    return int(
        session.scalar(select(func.count(Case.id)).where(Case.dataset_id == dataset.id)) or 0
    )


def case_by_pseudonym(session: Session, dataset: Dataset, pseudonym: str) -> Case:
    case: Case | None = session.scalar(
        _with_case_hierarchy(select(Case)).where(
            Case.dataset_id == dataset.id, Case.pseudonym == pseudonym
        )
    )
    if case is None:
        raise NotFound(f"dataset {dataset.short_name!r} has no case {pseudonym!r}")
    return case


def _with_case_hierarchy(query: Select[Any]) -> Select[Any]:
    return query.options(
        selectinload(Case.specimens)
        .selectinload(Specimen.blocks)
        .selectinload(Block.slides)
        .selectinload(Slide.images)
    )


def observations_of_case(session: Session, case: Case) -> list[Observation]:
    """Observations on the case and its specimens and blocks (slides' are on their records)."""
    specimens = [specimen.id for specimen in case.specimens]
    blocks = [block.id for specimen in case.specimens for block in specimen.blocks]
    subject = [
        Observation.case_id == case.id,
        Observation.specimen_id.in_(specimens),
        Observation.block_id.in_(blocks),
    ]
    return list(session.scalars(select(Observation).where(or_(*subject)).order_by(Observation.id)))


def _conditions(where: SlideFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if where.dataset_ids is not None:
        conditions.append(Dataset.id.in_(sorted(where.dataset_ids)))
    if where.dataset:
        conditions.append(Dataset.short_name == where.dataset)
    if where.anatomical_site:
        conditions.append(_contains(Specimen.anatomical_site, where.anatomical_site))
    if where.stain:
        conditions.append(
            or_(
                _contains(Slide.stain_compound, where.stain),
                _contains(Slide.stain_target, where.stain),
            )
        )
    if where.species:
        conditions.append(_contains(Case.species, where.species))
    if where.vendor:
        conditions.append(_contains(Image.vendor, where.vendor))
    if where.format:
        conditions.append(_has_format(where.format))
    if where.mpp_min is not None:
        conditions.append(Image.mpp_x >= where.mpp_min)
    if where.mpp_max is not None:
        conditions.append(Image.mpp_x <= where.mpp_max)
    if where.diagnosis:
        conditions.append(_has_diagnosis(where.diagnosis))
    return conditions


def _contains(column: Any, text: str) -> ColumnElement[bool]:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return func.lower(column).like(f"%{escaped}%", escape="\\")


def _has_format(text: str) -> ColumnElement[bool]:
    """Stored in this format, or converted from a source of this format: a converted slide
    is stored as "dicom", and people look for the files they scanned ("svs", "aperio")."""
    wanted = FORMAT_ALIASES.get(text.lower(), text.lower())
    return or_(
        func.lower(Image.format) == wanted,
        func.lower(Image.properties[SOURCE_FORMAT].as_string()) == wanted,
    )


def _has_diagnosis(text: str) -> ColumnElement[bool]:
    """A diagnosis matching by code (exactly) or by meaning or text, on any level above."""
    matches = or_(
        Observation.code == text,
        _contains(Observation.meaning, text),
        _contains(Observation.text, text),
    )
    subject = or_(
        Observation.image_id == Image.id,
        Observation.slide_id == Slide.id,
        Observation.block_id == Slide.block_id,
        Observation.specimen_id == Specimen.id,
        Observation.case_id == Case.id,
    )
    # Correlated explicitly: without the outer query's joins this would silently become a
    # cross join instead of failing.
    return (
        exists()
        .where(Observation.kind == "diagnosis", matches, subject)
        .correlate(Image, Slide, Specimen, Case)
    )


def _with_hierarchy(query: Select[Any]) -> Select[Any]:
    return query.options(
        selectinload(Image.slide).selectinload(Slide.dataset),
        selectinload(Image.slide)
        .selectinload(Slide.block)
        .selectinload(Block.specimen)
        .selectinload(Specimen.case),
    )


def observations_of(session: Session, image: Image) -> list[Observation]:
    """Observations on the image and on everything above it."""
    slide = image.slide
    subject = [Observation.image_id == image.id, Observation.slide_id == slide.id]
    if slide.block is not None:
        specimen = slide.block.specimen
        subject += [
            Observation.block_id == slide.block.id,
            Observation.specimen_id == specimen.id,
            Observation.case_id == specimen.case.id,
        ]
    return list(session.scalars(select(Observation).where(or_(*subject)).order_by(Observation.id)))


def landing_counts(session: Session, dataset: Dataset) -> dict[str, dict[str, int]]:
    """Slides of a dataset counted by anatomical site, stain and species (its landing page)."""
    base = (
        select(func.count(Image.id))
        .join(Slide, Image.slide_id == Slide.id)
        .outerjoin(Block, Slide.block_id == Block.id)
        .outerjoin(Specimen, Block.specimen_id == Specimen.id)
        .outerjoin(Case, Specimen.case_id == Case.id)
        .where(Slide.dataset_id == dataset.id)
    )
    counts: dict[str, dict[str, int]] = {}
    for name, column in (
        ("anatomical_site", Specimen.anatomical_site),
        ("stain", Slide.stain_compound),
        ("species", Case.species),
    ):
        rows = session.execute(base.add_columns(column).group_by(column).order_by(column))
        counts[name] = {str(value) if value is not None else "unknown": n for n, value in rows}
    return counts
