"""De-identification use cases: verify stored slides against their sealed identifying values,
and read a slide's de-identification report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slidebank.access.policy import Action, Principal, require, require_for_slide
from slidebank.access.principals import gate_of
from slidebank.catalog import queries
from slidebank.deid.identifiers import IdentifyingValue
from slidebank.deid.proof import Verification, verify_files
from slidebank.deid.pseudonyms import repository_key
from slidebank.deid.report import read_report
from slidebank.deid.sealed import SEALED_NAME, unseal
from slidebank.errors import NotFound, SlidebankError
from slidebank.services.repository import Repository


@dataclass(frozen=True)
class SlideCheck:
    id: str
    verification: Verification | None
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None and self.verification is not None and self.verification.passed

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "passed": self.passed,
            "problem": self.problem,
            **(self.verification.as_json() if self.verification else {}),
        }


def verify_slides(
    repository: Repository,
    principal: Principal,
    ids: list[str] | None,
    progress: Callable[[str], None] | None = None,
) -> list[SlideCheck]:
    """Check every stored byte of the slides named (all when ``ids`` is None)."""
    with repository.catalogue.reading() as session:
        images = queries.images_named(session, ids)
        for image in images:
            require(principal, Action.CURATE, gate_of(image.slide.dataset))
        targets = [(image.public_id, image.storage_key) for image in images]
    key = repository_key(repository.settings)
    checks = []
    for public_id, storage_key in targets:
        if progress is not None:
            progress(public_id)
        checks.append(_verify_one(repository, key, public_id, storage_key))
    return checks


def sealed_values(
    repository: Repository, key: bytes, storage_key: str
) -> list[IdentifyingValue] | None:
    """The identifying values sealed beside a stored slide, what every later check of its
    bytes scans for; None for a slide stored as it came (no de-identification report)."""
    deid = repository.store.deid_dir(storage_key)
    if read_report(deid) is None:
        return None
    return unseal(deid / SEALED_NAME, key, storage_key)


def _verify_one(repository: Repository, key: bytes, public_id: str, storage_key: str) -> SlideCheck:
    store = repository.store
    deid = store.deid_dir(storage_key)
    try:
        values = sealed_values(repository, key, storage_key)
        if values is None:
            return SlideCheck(public_id, None, "stored as it came: no de-identification report")
        content = store.content_dir(storage_key)
    except SlidebankError as exc:
        return SlideCheck(public_id, None, str(exc))
    files = [(path.name, path) for path in sorted(content.rglob("*")) if path.is_file()]
    files.append(("deid/report.json", deid / "report.json"))
    thumbnail = store.thumbnail_path(storage_key)
    if thumbnail.is_file():
        files.append(("thumbnail.jpg", thumbnail))
    verification = verify_files(files, values, overview_allowed=repository.settings.keep_overview)
    return SlideCheck(public_id, verification)


@dataclass(frozen=True)
class SlideReport:
    """A slide's de-identification report and the dataset it belongs to (whose read tally
    the web layer adds to)."""

    dataset: str
    report: dict[str, Any]


def deid_report(repository: Repository, principal: Principal, public_id: str) -> dict[str, Any]:
    """The stored de-identification report of a slide (what was removed, never the values)."""
    return report_of(repository, principal, public_id).report


def report_of(repository: Repository, principal: Principal, public_id: str) -> SlideReport:
    """:func:`deid_report` with the slide's dataset. A slide the principal may not know of is
    refused in the words used for one that does not exist."""
    with repository.catalogue.reading() as session:
        image = queries.image_by_public_id(session, public_id)
        dataset = image.slide.dataset
        require_for_slide(principal, Action.READ_METADATA, gate_of(dataset), public_id)
        storage_key, name = image.storage_key, dataset.short_name
    report = read_report(repository.store.deid_dir(storage_key))
    if report is None:
        raise NotFound(
            f"slide {public_id} was stored as it came: it has no de-identification report"
        )
    return SlideReport(name, report)
