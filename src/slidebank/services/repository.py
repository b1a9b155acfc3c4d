"""The repository: a folder with the blob store and (by default) the SQLite catalogue."""

from __future__ import annotations

from dataclasses import dataclass

from slidebank.catalog.database import Catalogue
from slidebank.config import Settings
from slidebank.errors import StorageError
from slidebank.storage import BlobStore, LocalBlobStore


@dataclass
class Repository:
    settings: Settings
    catalogue: Catalogue
    store: BlobStore

    def close(self) -> None:
        self.catalogue.dispose()


def open_repository(settings: Settings) -> Repository:
    """Open (creating if needed) the repository the settings name, migrated to the newest schema."""
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{settings.home}: cannot create repository folder ({exc})") from exc
    store = LocalBlobStore(settings.home / "blobs")
    catalogue = Catalogue(settings.catalogue_url)
    # The store's lock serialises processes of this repository creating its SQLite schema
    # at once; PostgreSQL migrations also take an advisory lock of their own.
    with store.registration_lock():
        catalogue.migrate()
    return Repository(settings=settings, catalogue=catalogue, store=store)
