"""Use cases: list, show and count what the catalogue holds, as the asking principal may see it.

Landing information of every dataset is public; everything else goes through the access
policy (``access.policy.require``) with the dataset it belongs to.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy.orm import Session

from slidebank.access.policy import Action, Principal, decide, require, require_for_slide
from slidebank.access.principals import dataset_gates, gate_of
from slidebank.catalog import queries
from slidebank.catalog.queries import SlideFilter
from slidebank.catalog.records import (
    case_record,
    case_summary,
    dataset_record,
    slide_record,
    slide_summary,
)
from slidebank.catalog.tables import Image
from slidebank.errors import NotFound
from slidebank.services.repository import Repository


def readable(session: Session, principal: Principal, where: SlideFilter) -> SlideFilter:
    """``where`` narrowed to the datasets whose slides ``principal`` may see."""
    allowed = frozenset(
        gate.id
        for gate in dataset_gates(session).values()
        if decide(principal, Action.READ_METADATA, gate).allowed
    )
    return dataclasses.replace(where, dataset_ids=allowed)


def list_slides(
    repository: Repository, principal: Principal, where: SlideFilter
) -> list[dict[str, Any]]:
    with repository.catalogue.reading() as session:
        where = readable(session, principal, where)
        return [slide_summary(image) for image in queries.list_images(session, where)]


def page_of_slides(
    repository: Repository, principal: Principal, where: SlideFilter
) -> tuple[list[dict[str, Any]], int]:
    """One page of the slides ``principal`` may see, and how many match in all (the API's
    and the slide browser's listing: one session, one look at the policies)."""
    with repository.catalogue.reading() as session:
        where = readable(session, principal, where)
        items = [slide_summary(image) for image in queries.list_images(session, where)]
        return items, queries.count_images(session, where)


def count_slides(repository: Repository, principal: Principal, where: SlideFilter) -> int:
    with repository.catalogue.reading() as session:
        return queries.count_images(session, readable(session, principal, where))


def show_dataset(repository: Repository, short_name: str) -> dict[str, Any]:
    """A dataset's landing information: public under every policy."""
    with repository.catalogue.reading() as session:
        dataset = queries.dataset_by_name(session, short_name)
        return {
            **dataset_record(dataset),
            "id": dataset.id,
            "terms": dataset.terms,
            "featured": list(dataset.featured or []),
            "images": queries.count_images(session, SlideFilter(dataset=short_name)),
            "cases": queries.count_cases(session, dataset),
            "counts": queries.landing_counts(session, dataset),
        }


def list_cases(
    repository: Repository, principal: Principal, short_name: str, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of a dataset's cases, and how many there are in all."""
    with repository.catalogue.reading() as session:
        dataset = queries.dataset_by_name(session, short_name)
        require(principal, Action.READ_METADATA, gate_of(dataset), public=True)
        cases = queries.list_cases(session, dataset, limit, offset)
        return [case_summary(case) for case in cases], queries.count_cases(session, dataset)


def show_case(
    repository: Repository, principal: Principal, short_name: str, pseudonym: str
) -> dict[str, Any]:
    with repository.catalogue.reading() as session:
        dataset = queries.dataset_by_name(session, short_name)
        # Refused before the lookup: whether a pseudonym exists is itself case metadata.
        require(principal, Action.READ_METADATA, gate_of(dataset))
        case = queries.case_by_pseudonym(session, dataset, pseudonym)
        return case_record(case, queries.observations_of_case(session, case))


# The source file's SHA-256, and the storage key made from it, name the scanner file: anyone
# holding the identified original could find its de-identified slide by them. For the
# dataset's stewards only (duplicates and stored objects are their business).
STEWARDS_ONLY = ("checksum", "storage_key")


def show_slide(repository: Repository, principal: Principal, public_id: str) -> dict[str, Any]:
    with repository.catalogue.reading() as session:
        image = _readable_image(session, principal, public_id, Action.READ_METADATA)
        record = slide_record(image, queries.observations_of(session, image))
        if not decide(principal, Action.CURATE, gate_of(image.slide.dataset)).allowed:
            for name in STEWARDS_ONLY:
                del record["image"][name]
        return record


def list_datasets(repository: Repository) -> list[dict[str, Any]]:
    """Every dataset's landing summary (public)."""
    with repository.catalogue.reading() as session:
        return [
            {**dataset_record(dataset), "images": count}
            for dataset, count in queries.list_datasets(session)
        ]


def thumbnail_of(repository: Repository, principal: Principal, public_id: str) -> bytes:
    """The stored JPEG thumbnail of a slide: public for the slides a dataset features."""
    with repository.catalogue.reading() as session:
        image = _readable_image(session, principal, public_id, Action.READ_PIXELS, landing=True)
        key = image.storage_key
    path = repository.store.thumbnail_path(key)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"slide {public_id} has no stored thumbnail") from exc


def _readable_image(
    session: Session, principal: Principal, public_id: str, action: Action, landing: bool = False
) -> Image:
    image = queries.image_by_public_id(session, public_id)
    gate = gate_of(image.slide.dataset)
    if not (landing and public_id in gate.featured):
        require_for_slide(principal, action, gate, public_id)
    return image
