"""Use cases: list, show and count what the catalogue holds."""

from __future__ import annotations

from typing import Any

from slidebank.catalog import queries
from slidebank.catalog.queries import SlideFilter
from slidebank.catalog.records import (
    case_record,
    case_summary,
    dataset_record,
    slide_record,
    slide_summary,
)
from slidebank.errors import NotFound
from slidebank.services.repository import Repository


def list_slides(repository: Repository, where: SlideFilter) -> list[dict[str, Any]]:
    with repository.catalogue.reading() as session:
        return [slide_summary(image) for image in queries.list_images(session, where)]


def count_slides(repository: Repository, where: SlideFilter) -> int:
    with repository.catalogue.reading() as session:
        return queries.count_images(session, where)


def show_dataset(repository: Repository, short_name: str) -> dict[str, Any]:
    with repository.catalogue.reading() as session:
        dataset = queries.dataset_by_name(session, short_name)
        return {
            **dataset_record(dataset),
            "images": queries.count_images(session, SlideFilter(dataset=short_name)),
            "cases": queries.count_cases(session, dataset),
        }


def list_cases(
    repository: Repository, short_name: str, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of a dataset's cases, and how many there are in all."""
    with repository.catalogue.reading() as session:
        dataset = queries.dataset_by_name(session, short_name)
        cases = queries.list_cases(session, dataset, limit, offset)
        return [case_summary(case) for case in cases], queries.count_cases(session, dataset)


def show_case(repository: Repository, short_name: str, pseudonym: str) -> dict[str, Any]:
    with repository.catalogue.reading() as session:
        dataset = queries.dataset_by_name(session, short_name)
        case = queries.case_by_pseudonym(session, dataset, pseudonym)
        return case_record(case, queries.observations_of_case(session, case))


def show_slide(repository: Repository, public_id: str) -> dict[str, Any]:
    with repository.catalogue.reading() as session:
        image = queries.image_by_public_id(session, public_id)
        return slide_record(image, queries.observations_of(session, image))


def list_datasets(repository: Repository) -> list[dict[str, Any]]:
    with repository.catalogue.reading() as session:
        return [
            {**dataset_record(dataset), "images": count}
            for dataset, count in queries.list_datasets(session)
        ]


def thumbnail_of(repository: Repository, public_id: str) -> bytes:
    """The stored JPEG thumbnail of a slide."""
    with repository.catalogue.reading() as session:
        key = queries.image_by_public_id(session, public_id).storage_key
    path = repository.store.thumbnail_path(key)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"slide {public_id} has no stored thumbnail") from exc
