"""Use case: check that catalogue and blob store agree (and optionally re-hash content)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from slidebank.catalog.tables import Image
from slidebank.errors import NotFound
from slidebank.services.repository import Repository


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
    """Compare catalogue rows with stored objects; ``repair`` removes orphans and stale staging."""
    store = repository.store
    report = CheckReport()
    report.stale_staging = store.sweep_staging() if repair else len(store.stale_staging())
    with repository.catalogue.reading() as session:
        rows = session.execute(select(Image.public_id, Image.storage_key, Image.files)).all()
    referenced = set()
    for public_id, key, files in rows:
        report.images += 1
        referenced.add(key)
        try:
            content = store.content_dir(key)
        except NotFound:
            report.missing.append(public_id)
            continue
        for stored in files:
            path = content / stored["name"]
            if not path.is_file() or path.stat().st_size != stored["size"]:
                report.missing.append(public_id)
                break
            if rehash and _sha256(path) != stored["sha256"]:
                report.corrupt.append(public_id)
                break
    report.orphans = [key for key in store.iter_keys() if key not in referenced]
    if repair:
        for key in report.orphans:
            store.delete(key)
    return report


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
