"""Hash and copy a file in one read pass, on two threads, in bounded memory."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from slidebank.errors import InvalidInput, StorageError

BUFFERS = 4  # peak memory is BUFFERS x chunk size, whatever the file size


def copy_and_hash(
    source: Path,
    target: Path,
    chunk_bytes: int = 8 * 1024 * 1024,
    progress: Callable[[int], None] | None = None,
) -> tuple[str, int]:
    """Copy ``source`` to a new file ``target``, fsync it, and return (sha256 hex, size).

    The calling thread reads and hashes; a second thread writes. hashlib and file I/O release
    the GIL, so hashing one chunk overlaps writing the previous one.
    """
    digest = hashlib.sha256()
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(BUFFERS):
        free.put(bytearray(chunk_bytes))
    filled: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
    write_error: list[OSError] = []

    try:
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    except OSError as exc:
        raise StorageError(f"{target}: cannot create ({exc.strerror or exc})") from exc

    def writer() -> None:
        # Every buffer goes back to `free`, even after a failed write, so the reading thread
        # never waits forever; it sees `write_error` and stops.
        while (item := filled.get()) is not None:
            buffer, length = item
            if not write_error:
                try:
                    view = memoryview(buffer)[:length]
                    while view:
                        view = view[os.write(out, view) :]
                except OSError as exc:
                    write_error.append(exc)
            free.put(buffer)
        if not write_error:
            try:
                os.fsync(out)
            except OSError as exc:
                write_error.append(exc)

    thread = threading.Thread(target=writer, name="slidebank-copy-writer", daemon=True)
    thread.start()
    size = 0
    try:
        try:
            handle = source.open("rb", buffering=0)
        except OSError as exc:
            raise InvalidInput(f"{source}: cannot read ({exc.strerror or exc})") from exc
        with handle:
            while not write_error:
                buffer = free.get()
                try:
                    length = handle.readinto(buffer)  # type: ignore[attr-defined]
                except OSError as exc:
                    raise InvalidInput(f"{source}: read failed ({exc.strerror or exc})") from exc
                if not length:
                    free.put(buffer)
                    break
                digest.update(memoryview(buffer)[:length])
                filled.put((buffer, length))
                size += length
                if progress is not None:
                    progress(length)
    finally:
        filled.put(None)
        thread.join()
        os.close(out)
    if write_error:
        error = write_error[0]
        raise StorageError(f"{target}: write failed ({error.strerror or error})") from error
    return digest.hexdigest(), size


def hash_file(
    source: Path,
    chunk_bytes: int = 8 * 1024 * 1024,
    progress: Callable[[int], None] | None = None,
) -> tuple[str, int]:
    """SHA-256 and size of ``source`` without copying it (when only a derived form is kept)."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(chunk_bytes)
    try:
        handle = source.open("rb", buffering=0)
    except OSError as exc:
        raise InvalidInput(f"{source}: cannot read ({exc.strerror or exc})") from exc
    with handle:
        while True:
            try:
                length = handle.readinto(buffer)  # type: ignore[attr-defined]
            except OSError as exc:
                raise InvalidInput(f"{source}: read failed ({exc.strerror or exc})") from exc
            if not length:
                break
            digest.update(memoryview(buffer)[:length])
            size += length
            if progress is not None:
                progress(length)
    return digest.hexdigest(), size
