"""Use case: check that catalogue and blob store agree (and optionally re-hash content)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from slidebank.catalog.tables import Image
from slidebank.errors import NotFound
from slidebank.services.repository import Repository
from slidebank.storage import BlobStore


@dataclass
class CheckReport:
    images: int = 0
    missing: list[str] = field(default_factory=list)
    """Public ids whose stored content is missing or incomplete."""
    corrupt: list[str] = field(default_factory=list)
    """Public ids whose stored bytes no longer match their checksums."""
    orphans: list[str] = field(default_factory=list)
    """Stored objects no catalogue row points to (left by a crash before registration)."""
    stale_staging: int = 0

    @property
    def consistent(self) -> bool:
        return not (self.missing or self.corrupt or self.orphans or self.stale_staging)


def check_repository(
    repository: Repository, rehash: bool = False, repair: bool = False
) -> CheckReport:
    """Compare catalogue rows with stored objects; ``repair`` removes orphans and stale staging.

    Safe while ingests run: orphans are found and removed under the store's registration
    lock, against the catalogue as it is then, so content being registered is never taken.
    """
    store = repository.store
    report = CheckReport()
    with repository.catalogue.reading() as session:
        rows = session.execute(select(Image.public_id, Image.storage_key, Image.files)).all()
    for public_id, key, files in rows:
        report.images += 1
        problem = _content_problem(store, key, files, rehash)
        if problem == "missing":
            report.missing.append(public_id)
        elif problem == "corrupt":
            report.corrupt.append(public_id)
    with store.registration_lock():
        with repository.catalogue.reading() as session:
            referenced = set(session.scalars(select(Image.storage_key)))
        report.orphans = [key for key in store.iter_keys() if key not in referenced]
        if repair:
            for key in report.orphans:
                store.delete(key)
    report.stale_staging = store.sweep_staging() if repair else len(store.stale_staging())
    return report


def _content_problem(
    store: BlobStore, key: str, files: list[dict[str, Any]], rehash: bool
) -> str | None:
    try:
        content = store.content_dir(key)
    except NotFound:
        return "missing"
    for stored in files:
        path = content / stored["name"]
        if not path.is_file() or path.stat().st_size != stored["size"]:
            return "missing"
        if rehash and _sha256(path) != stored["sha256"]:
            return "corrupt"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
