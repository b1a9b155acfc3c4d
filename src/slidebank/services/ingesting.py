"""Use case: ingest paths into the repository."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from slidebank.catalog import queries
from slidebank.catalog.entries import DatasetEntry
from slidebank.ingest.discovery import Discovery, Problem, SlideSource, discover
from slidebank.ingest.pipeline import IngestContext, Outcome, ingest_source
from slidebank.ingest.sidecar import load_sidecar
from slidebank.services.repository import Repository


@dataclass
class IngestReport:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    unused_sidecar_entries: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(outcome.status == "failed" for outcome in self.outcomes)


class IngestProgress(Protocol):
    """Hooks for a progress display."""

    def planned(self, sources: list[SlideSource]) -> None: ...

    def copied(self, count: int) -> None: ...

    def finished(self, outcome: Outcome) -> None:
        """One of the planned slide sources is done."""


class NoProgress:
    """Progress hooks that show nothing."""

    def planned(self, sources: list[SlideSource]) -> None:
        pass

    def copied(self, count: int) -> None:
        pass

    def finished(self, outcome: Outcome) -> None:
        pass


def ingest_paths(
    repository: Repository,
    paths: list[Path],
    dataset: str = "default",
    sidecar_path: Path | None = None,
    progress: IngestProgress | None = None,
) -> IngestReport:
    """Find the slides under ``paths`` and ingest each; failures do not stop the run."""
    progress = progress or NoProgress()
    queries.check_short_name(dataset)
    settings = repository.settings
    sidecar = load_sidecar(sidecar_path, settings.max_sidecar_bytes) if sidecar_path else None
    repository.store.sweep_staging()
    found: Discovery = discover(paths)
    report = IngestReport(skipped=found.skipped)
    for problem in found.problems:
        outcome = Outcome(problem.path, "failed", reason=problem.reason)
        report.outcomes.append(outcome)
    dataset_entry = sidecar.dataset_entry(dataset) if sidecar else DatasetEntry(dataset)
    context = IngestContext(
        settings=settings,
        catalogue=repository.catalogue,
        store=repository.store,
        dataset=dataset_entry,
        sidecar=sidecar,
    )
    progress.planned(found.sources)
    copied: Callable[[int], None] = progress.copied
    for source in found.sources:
        outcome = ingest_source(context, source, copied)
        report.outcomes.append(outcome)
        progress.finished(outcome)
    if sidecar is not None:
        report.unused_sidecar_entries = sidecar.unused()
    return report
