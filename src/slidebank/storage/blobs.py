"""Content-addressed storage of slides.

A slide (one or more files) is staged in a private folder, then moved into place under its
content key with one ``rename``: readers see a slide whole or not at all. A staging folder
holds an exclusive lock for as long as its writer lives, so a folder left by a killed
process is recognised (its lock is free) and swept away by the next writer.

Layout under the store's root::

    objects/ab/<key>/content/...   the slide's files, under neutral names
    objects/ab/<key>/thumbnail.jpg
    objects/ab/<key>/deid/         de-identification report, sealed identifying values
    objects/ab/<key>/original/     the source files, only when originals are kept
    staging/<random>/              work in progress, each with a .lock file
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from slidebank.errors import InvalidInput, NotFound, StorageError

KEY_PATTERN = re.compile(r"^[0-9a-f]{64}$")
LOCK_NAME = ".lock"
REGISTRATION_LOCK = ".registration.lock"
# A staging folder this young is never swept: its writer may not have locked it yet.
YOUNG_SECONDS = 60


@dataclass(frozen=True)
class StagedFile:
    """A file written into staging: its path inside the slide, checksum and size."""

    name: str
    sha256: str
    size: int


class Staging:
    """A private folder a writer fills before committing it under a key."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self.content = path / "content"
        self.content.mkdir()

    def content_path(self, name: str) -> Path:
        """Where a slide file named ``name`` (a relative path) goes; its folders are made."""
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise InvalidInput(f"{name}: not a safe relative name inside a slide")
        target = self.content / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def original_path(self, name: str) -> Path:
        """Where a kept original file goes: beside the content, never served."""
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise InvalidInput(f"{name}: not a safe relative name inside a slide")
        target = self.path / "original" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    @property
    def thumbnail_path(self) -> Path:
        return self.path / "thumbnail.jpg"

    @property
    def deid_dir(self) -> Path:
        """The de-identification report and the sealed identifying values."""
        path = self.path / "deid"
        path.mkdir(exist_ok=True)
        return path

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


class BlobStore(Protocol):
    """What ingest and readers need from slide storage (local disk now, object stores later)."""

    def stage(self) -> contextlib.AbstractContextManager[Staging]: ...

    def prepare(self, staging: Staging) -> None: ...

    def commit(self, staging: Staging, key: str) -> bool: ...

    def registration_lock(self) -> contextlib.AbstractContextManager[None]: ...

    def exists(self, key: str) -> bool: ...

    def content_dir(self, key: str) -> Path: ...

    def thumbnail_path(self, key: str) -> Path: ...

    def deid_dir(self, key: str) -> Path: ...

    def delete(self, key: str) -> None: ...

    def add_content(self, key: str, staging: Staging) -> None: ...

    def iter_keys(self) -> Iterator[str]: ...

    def sweep_staging(self) -> int: ...

    def stale_staging(self) -> list[Path]: ...


class LocalBlobStore:
    """Blob store on a local (or mounted) file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.staging_root = root / "staging"
        for folder in (self.objects, self.staging_root):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"{folder}: cannot create ({exc.strerror or exc})") from exc

    def object_dir(self, key: str) -> Path:
        if not KEY_PATTERN.match(key):
            raise InvalidInput(f"{key!r} is not a content key (64 lowercase hex digits)")
        return self.objects / key[:2] / key

    def content_dir(self, key: str) -> Path:
        path = self.object_dir(key) / "content"
        if not path.is_dir():
            raise NotFound(f"slide content {key} is not in the store")
        return path

    def thumbnail_path(self, key: str) -> Path:
        return self.object_dir(key) / "thumbnail.jpg"

    def deid_dir(self, key: str) -> Path:
        return self.object_dir(key) / "deid"

    def exists(self, key: str) -> bool:
        return self.object_dir(key).is_dir()

    @contextlib.contextmanager
    def stage(self) -> Iterator[Staging]:
        """A fresh staging folder, removed on exit unless it was committed."""
        path = self.staging_root / secrets.token_hex(8)
        path.mkdir()
        lock_fd = os.open(path / LOCK_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        staging = Staging(path, lock_fd)
        try:
            yield staging
        finally:
            staging.release()
            shutil.rmtree(path, ignore_errors=True)

    def prepare(self, staging: Staging) -> None:
        """Make the staged files durable (slow; done before taking the registration lock)."""
        _fsync_tree(staging.path)

    def commit(self, staging: Staging, key: str) -> bool:
        """Move the prepared slide into place under ``key`` with one rename.

        Returns False, and changes nothing, when the object is already there: content is
        addressed by hash, so an existing object has these very bytes (a crash after the
        rename and before the catalogue commit leaves one for the retry to adopt).
        """
        final = self.object_dir(key)
        if final.is_dir():
            return False
        prefix = final.parent
        if not prefix.is_dir():
            prefix.mkdir(exist_ok=True)
            _fsync_dir(self.objects)
        (staging.path / LOCK_NAME).unlink()
        try:
            staging.path.rename(final)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False
            raise StorageError(f"{final}: cannot move slide into place ({exc})") from exc
        _fsync_dir(prefix)
        staging.path.mkdir()  # so that the staging context's cleanup has a folder to remove
        return True

    @contextlib.contextmanager
    def registration_lock(self) -> Iterator[None]:
        """Exclusive across processes, for commit-and-register and for removing orphans.

        Held for one rename and one short catalogue transaction, so that a failed ingest may
        remove the object it just created, and a repair may remove unreferenced objects,
        without racing another ingest that registers the same content.
        """
        fd = os.open(self.root / REGISTRATION_LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def add_content(self, key: str, staging: Staging) -> None:
        """Move the files staged in ``staging.content`` (written and fsynced by their writer,
        as for ``prepare``) into the stored object ``key``: derived files such as added
        pyramid levels, one rename each. Callers hold the registration lock and list the
        files in the catalogue afterwards: a file moved but not yet listed is never read, and
        the same file written again replaces it."""
        content = self.content_dir(key)
        for path in sorted(p for p in staging.content.iterdir() if p.is_file()):
            path.replace(content / path.name)
        _fsync_dir(content)

    def delete(self, key: str) -> None:
        """Remove an object: renamed aside first so a crash never leaves half of one."""
        final = self.object_dir(key)
        if not final.is_dir():
            return
        doomed = self.staging_root / f"deleting-{key}-{secrets.token_hex(4)}"
        final.rename(doomed)
        _fsync_dir(final.parent)
        shutil.rmtree(doomed, ignore_errors=True)

    def iter_keys(self) -> Iterator[str]:
        for prefix in sorted(self.objects.iterdir()):
            if prefix.is_dir():
                for entry in sorted(prefix.iterdir()):
                    if KEY_PATTERN.match(entry.name):
                        yield entry.name

    def stale_staging(self) -> list[Path]:
        """Staging folders whose writer is gone (killed, or crashed)."""
        return [entry for entry in sorted(self.staging_root.iterdir()) if _writer_gone(entry)]

    def sweep_staging(self) -> int:
        """Remove staging folders whose writer is gone; returns how many were removed."""
        stale = self.stale_staging()
        for entry in stale:
            shutil.rmtree(entry, ignore_errors=True)
        return len(stale)


def _writer_gone(entry: Path) -> bool:
    if entry.name.startswith("deleting-"):
        return True
    try:
        if time.time() - entry.stat().st_mtime < YOUNG_SECONDS:
            return False
    except FileNotFoundError:
        return False
    try:
        fd = os.open(entry / LOCK_NAME, os.O_WRONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _fsync_tree(root: Path) -> None:
    """fsync every folder under ``root`` (files were fsynced as they were written)."""
    for folder, _, _ in os.walk(root):
        _fsync_dir(Path(folder))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
