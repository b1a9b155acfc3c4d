"""Completing stored pyramids: the power-of-two levels a slide lacks, added once as DICOM
instances of its series so that viewers' tiles at every level pass through (``tiles.pyramid``).

Stewards run it (``slidebank pyramid``); it is a step of its own, not part of the ingest,
because it decodes the finest stored level once (tens of seconds for a large slide), while
the ingest passes tiles through. Nothing is half-added: the new instances are written and
checked in staging (the de-identification proof runs on them as on any stored file), moved
into the slide's content under the registration lock, and listed in the catalogue (files,
levels, DICOMweb index, audit) in one transaction. Instance UIDs follow from the content and
the level, so a run killed between the move and the commit is repaired by the next run,
which writes the same files again.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from slidebank.access import audit
from slidebank.access.policy import Action, Principal, require
from slidebank.access.principals import gate_of
from slidebank.catalog import dicom_queries, queries
from slidebank.deid.proof import verify_files
from slidebank.deid.pseudonyms import repository_key
from slidebank.errors import InvalidInput
from slidebank.ingest.describe import describe
from slidebank.ingest.dicom_index import describe_files
from slidebank.services import deidentification
from slidebank.services.repository import Repository
from slidebank.slides import open_slide
from slidebank.storage.copying import hash_file
from slidebank.tiles import pyramid


@dataclass(frozen=True)
class Completed:
    """What completing one slide's pyramid did."""

    id: str
    added: list[dict[str, Any]] = field(default_factory=list)
    """One entry per level added: downsample, width, height, frames, bytes, file."""
    seconds: float = 0.0
    skipped: str | None = None
    """Why nothing was added (nothing missing, or not a DICOM slide)."""

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Target:
    public_id: str
    storage_key: str
    dataset_id: int
    files: tuple[str, ...]
    backend: str
    stored_form: str


def complete_pyramids(
    repository: Repository,
    principal: Principal,
    ids: list[str] | None,
    *,
    workers: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[Completed]:
    """Add the missing power-of-two levels of the slides named (all when ``ids`` is None).
    ``progress(slide, tiles done, tiles in all)`` is called as tiles are written."""
    with repository.catalogue.reading() as session:
        images = queries.images_named(session, ids)
        for image in images:
            require(principal, Action.CURATE, gate_of(image.slide.dataset))
        targets = [
            _Target(
                image.public_id,
                image.storage_key,
                image.slide.dataset_id,
                tuple(stored["name"] for stored in image.files),
                image.backend,
                image.format,
            )
            for image in images
        ]
    threads = workers or os.cpu_count() or 1
    return [_complete(repository, principal, target, threads, progress) for target in targets]


def _complete(
    repository: Repository,
    principal: Principal,
    target: _Target,
    workers: int,
    progress: Callable[[str, int, int], None] | None,
) -> Completed:
    started = time.perf_counter()
    if target.stored_form != "dicom":
        return Completed(target.public_id, skipped="not stored as DICOM WSI: no levels added")
    store = repository.store
    content = store.content_dir(target.storage_key)
    paths = tuple(content / name for name in target.files)
    quality = repository.settings.jpeg_quality
    with open_slide(paths, backend=target.backend) as reader:
        missing = pyramid.missing_levels(reader.info)
        if not missing:
            return Completed(target.public_id, skipped="every power-of-two level is stored")
        headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
        template = _level_zero(headers, reader.info.dimensions.width, content)
        if template.get("DimensionOrganizationType") != "TILED_FULL":
            # Sparse tiles (some DICOM sources) have no grid to halve; skip, so --all goes on.
            return Completed(target.public_id, skipped="level 0 is not TILED_FULL: no levels added")
        last_number = max(int(header.get("InstanceNumber") or 0) for header in headers)
        total = sum(level.frames for level in missing)
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(target.public_id, done, total)

        with store.stage() as staging:
            written: list[tuple[pyramid.MissingLevel, Path]] = []
            for index, level in enumerate(missing):
                uid = pyramid.instance_uid(target.storage_key, level.downsample)
                path = staging.content_path(f"{uid}.dcm")
                pyramid.write_level(
                    template,
                    path,
                    level,
                    pyramid.rendered_tiles(reader, level, quality, workers),
                    uid=uid,
                    instance_number=last_number + index + 1,
                    quality=quality,
                    progress=advance,
                )
                written.append((level, path))
            checksums = _checked(repository, target, [path for _, path in written])
            with store.registration_lock():
                store.add_content(target.storage_key, staging)  # written and fsynced above
                added = _register(repository, principal, target, written, checksums)
    return Completed(target.public_id, added, round(time.perf_counter() - started, 3))


def _level_zero(headers: Sequence[pydicom.Dataset], width: int, content: Path) -> pydicom.Dataset:
    """The header of the full-resolution level's instance (the new levels' template)."""
    for header in headers:
        image_type = [str(value) for value in header.get("ImageType", [])]
        volume = len(image_type) > 2 and image_type[2] == "VOLUME"
        if volume and int(header.get("TotalPixelMatrixColumns", 0)) == width:
            return header
    raise InvalidInput(f"{content}: no full-resolution VOLUME instance")


def _checked(repository: Repository, target: _Target, paths: list[Path]) -> dict[str, str]:
    """The new files' SHA-256, after the de-identification check (when the slide has one):
    a finding stores nothing."""
    key = repository_key(repository.settings)
    values = deidentification.sealed_values(repository, key, target.storage_key)
    if values is None:
        return {path.name: hash_file(path)[0] for path in paths}
    verification = verify_files(
        [(path.name, path) for path in paths],
        values,
        overview_allowed=repository.settings.keep_overview,
    )
    if not verification.passed:
        first = verification.findings[0]
        raise InvalidInput(
            f"{target.public_id}: de-identification check failed on a new level: {first.field} "
            f"in {first.file} at byte {first.offset}; nothing was added"
        )
    return dict(verification.checksums)


def _register(
    repository: Repository,
    principal: Principal,
    target: _Target,
    written: list[tuple[pyramid.MissingLevel, Path]],
    checksums: dict[str, str],
) -> list[dict[str, Any]]:
    content = repository.store.content_dir(target.storage_key)
    names = [path.name for _, path in written]
    added = [
        {
            "downsample": level.downsample,
            "width": level.size.width,
            "height": level.size.height,
            "frames": level.frames,
            "bytes": (content / path.name).stat().st_size,
            "file": path.name,
        }
        for level, path in written
    ]
    with repository.catalogue.transaction() as session:
        image = queries.image_by_public_id(session, target.public_id)
        known = {stored["name"] for stored in image.files}
        new_files: list[dict[str, Any]] = [
            {
                "name": name,
                "original": name,
                "sha256": checksums[name],
                "size": (content / name).stat().st_size,
            }
            for name in names
            if name not in known
        ]
        files = [*image.files, *new_files]
        with open_slide(
            tuple(content / stored["name"] for stored in files), backend=target.backend
        ) as reader:
            levels = describe(reader, image.checksum, (), image.source_name).levels
        image.files = files
        image.levels = levels
        image.level_count = len(levels)
        image.size_bytes = int(image.size_bytes) + sum(f["size"] for f in new_files)
        dicom_queries.add_instances(
            session, image, describe_files(content, [f["name"] for f in new_files])
        )
        audit.append(
            session,
            principal,
            "pyramid.complete",
            dataset_id=target.dataset_id,
            target=target.public_id,
            detail={"levels": [entry["downsample"] for entry in added]},
        )
    return added
