"""Use cases: list, show and count what the catalogue holds."""

from __future__ import annotations

from typing import Any

from slidebank.catalog import queries
from slidebank.catalog.queries import SlideFilter
from slidebank.catalog.records import dataset_record, slide_record, slide_summary
from slidebank.errors import NotFound
from slidebank.services.repository import Repository


def list_slides(repository: Repository, where: SlideFilter) -> list[dict[str, Any]]:
    with repository.catalogue.reading() as session:
        return [slide_summary(image) for image in queries.list_images(session, where)]


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
