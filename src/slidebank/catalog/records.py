"""Catalogue rows as plain dictionaries: the one shape the CLI's --json and the API share."""

from __future__ import annotations

from typing import Any

from slidebank.catalog.tables import Case, Dataset, Image, Observation


def slide_summary(image: Image) -> dict[str, Any]:
    """The short record of ``slidebank list``."""
    slide = image.slide
    block = slide.block
    specimen = block.specimen if block else None
    case = specimen.case if specimen else None
    return {
        "id": image.public_id,
        "dataset": slide.dataset.short_name,
        "case": case.pseudonym if case else None,
        "species": case.species if case else None,
        "anatomical_site": specimen.anatomical_site if specimen else None,
        "stain": slide.stain_compound,
        "format": image.format,
        "vendor": image.vendor,
        "width": image.width,
        "height": image.height,
        "levels": image.level_count,
        "mpp": image.mpp_x,
        "objective_power": image.objective_power,
        "size_bytes": image.size_bytes,
    }


def slide_record(image: Image, observations: list[Observation]) -> dict[str, Any]:
    """The full record of ``slidebank show``."""
    slide = image.slide
    block = slide.block
    specimen = block.specimen if block else None
    case = specimen.case if specimen else None

    def about(kind: str, identifier: int | None) -> list[dict[str, Any]]:
        return [
            observation_record(o)
            for o in observations
            if identifier is not None and getattr(o, f"{kind}_id") == identifier
        ]

    return {
        "id": image.public_id,
        "dataset": dataset_record(slide.dataset),
        "case": None
        if case is None
        else {
            "pseudonym": case.pseudonym,
            "species": case.species,
            "observations": about("case", case.id),
        },
        "specimen": None
        if specimen is None
        else {
            "identifier": specimen.identifier,
            "anatomical_site": specimen.anatomical_site,
            "sampling": specimen.sampling,
            "observations": about("specimen", specimen.id),
        },
        "block": None if block is None else {"identifier": block.identifier},
        "slide": {
            "identifier": slide.identifier,
            "staining": {
                "compound": slide.stain_compound,
                "target": slide.stain_target,
                "method": slide.stain_method,
            },
            "observations": about("slide", slide.id),
        },
        "image": {
            "format": image.format,
            "vendor": image.vendor,
            "backend": image.backend,
            "width": image.width,
            "height": image.height,
            "levels": image.levels,
            "mpp": [image.mpp_x, image.mpp_y] if image.mpp_x is not None else None,
            "objective_power": image.objective_power,
            "associated_images": image.associated,
            "checksum": image.checksum,
            "storage_key": image.storage_key,
            "size_bytes": image.size_bytes,
            "files": image.files,
            "source_name": image.source_name,
            "ingested_at": image.created_at.isoformat(),
            "properties": image.properties,
            "observations": about("image", image.id),
        },
    }


def dataset_record(dataset: Dataset) -> dict[str, Any]:
    return {
        "short_name": dataset.short_name,
        "title": dataset.title,
        "version": dataset.version,
        "licence": dataset.licence,
        "description": dataset.description,
        "policy": dataset.policy,
    }


def observation_record(observation: Observation) -> dict[str, Any]:
    return {
        "kind": observation.kind,
        "code": observation.code,
        "scheme": observation.scheme,
        "meaning": observation.meaning,
        "text": observation.text,
    }


def case_summary(case: Case) -> dict[str, Any]:
    images = [
        image.public_id
        for specimen in case.specimens
        for block in specimen.blocks
        for slide in block.slides
        for image in slide.images
    ]
    return {
        "pseudonym": case.pseudonym,
        "species": case.species,
        "specimens": len(case.specimens),
        "slides": images,
    }


def case_record(case: Case, observations: list[Observation]) -> dict[str, Any]:
    """A case with its specimens, blocks and slides (by id), and the observations on them."""

    def about(column: str, identifier: int) -> list[dict[str, Any]]:
        return [observation_record(o) for o in observations if getattr(o, column) == identifier]

    return {
        "pseudonym": case.pseudonym,
        "species": case.species,
        "observations": about("case_id", case.id),
        "specimens": [
            {
                "identifier": specimen.identifier,
                "anatomical_site": specimen.anatomical_site,
                "sampling": specimen.sampling,
                "observations": about("specimen_id", specimen.id),
                "blocks": [
                    {
                        "identifier": block.identifier,
                        "observations": about("block_id", block.id),
                        "slides": [
                            {
                                "identifier": slide.identifier,
                                "stain": slide.stain_compound,
                                "images": [image.public_id for image in slide.images],
                            }
                            for slide in block.slides
                        ],
                    }
                    for block in specimen.blocks
                ],
            }
            for specimen in case.specimens
        ],
    }
