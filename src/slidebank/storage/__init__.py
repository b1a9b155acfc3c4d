"""Blob store: slide content kept under its content address (SHA-256)."""

from slidebank.storage.blobs import BlobStore, LocalBlobStore, StagedFile, Staging
from slidebank.storage.copying import copy_and_hash, hash_file

__all__ = ["BlobStore", "LocalBlobStore", "StagedFile", "Staging", "copy_and_hash", "hash_file"]
