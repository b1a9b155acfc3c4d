from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from slidebank.errors import InvalidInput, NotFound, StorageError
from slidebank.storage import LocalBlobStore, copy_and_hash


def test_copy_and_hash_matches_hashlib_for_awkward_sizes(tmp_path: Path) -> None:
    for size in (0, 1, 65_535, 65_536 * 3 + 17):
        source = tmp_path / f"in-{size}"
        source.write_bytes(os.urandom(size))
        target = tmp_path / f"out-{size}"
        digest, copied = copy_and_hash(source, target, chunk_bytes=65_536)
        assert copied == size
        assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
        assert target.read_bytes() == source.read_bytes()


def test_copy_refuses_to_overwrite(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.write_bytes(b"x")
    target = tmp_path / "out"
    target.write_bytes(b"existing")
    with pytest.raises(StorageError, match="out: cannot create"):
        copy_and_hash(source, target)
    assert target.read_bytes() == b"existing"


def test_copy_reports_progress_in_bytes(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.write_bytes(b"a" * 200_000)
    seen: list[int] = []
    copy_and_hash(source, tmp_path / "out", chunk_bytes=65_536, progress=seen.append)
    assert sum(seen) == 200_000


def test_commit_is_atomic_and_idempotent(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    key = "a" * 64
    with store.stage() as staging:
        staging.content_path("slide.svs").write_bytes(b"content")
        staging.thumbnail_path.write_bytes(b"jpeg")
        assert not store.exists(key)
        store.prepare(staging)
        assert store.commit(staging, key) is True
    assert (store.content_dir(key) / "slide.svs").read_bytes() == b"content"
    assert store.thumbnail_path(key).read_bytes() == b"jpeg"
    assert list(store.iter_keys()) == [key]
    assert list(store.staging_root.iterdir()) == []
    with store.stage() as staging:
        staging.content_path("slide.svs").write_bytes(b"content")
        assert store.commit(staging, key) is False  # already there: nothing changes
    assert list(store.iter_keys()) == [key]
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(NotFound):
        store.content_dir(key)


def test_uncommitted_staging_is_removed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(RuntimeError), store.stage() as staging:
        staging.content_path("a/b.dat").write_bytes(b"half")
        raise RuntimeError("step failed")
    assert list(store.staging_root.iterdir()) == []
    assert list(store.iter_keys()) == []


def test_unsafe_names_and_keys_are_refused(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    with store.stage() as staging, pytest.raises(InvalidInput, match="not a safe relative name"):
        staging.content_path("../escape")
    with pytest.raises(InvalidInput, match="not a content key"):
        store.object_dir("../../etc")


def test_staging_of_a_killed_writer_is_swept_but_a_live_one_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root)
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from slidebank.storage import LocalBlobStore
        store = LocalBlobStore(Path({str(root)!r}))
        with store.stage() as staging:
            staging.content_path("slide.svs").write_bytes(b"partial")
            print("staged", flush=True)
            time.sleep(60)
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "staged"
    assert store.sweep_staging() == 0  # its writer is alive and holds the lock
    assert len(list(store.staging_root.iterdir())) == 1
    (entry,) = store.staging_root.iterdir()
    _age(entry)
    assert store.sweep_staging() == 0  # old, but its writer is alive
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert len(store.stale_staging()) == 1
    assert store.sweep_staging() == 1
    assert list(store.staging_root.iterdir()) == []


def _age(path: Path, seconds: float = 3600) -> None:
    """Make a staging folder look old: young ones are never swept."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def test_a_young_unlocked_staging_folder_is_kept(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    young = store.staging_root / "just-made"
    young.mkdir()  # as a writer leaves it for an instant, before it takes its lock
    assert store.sweep_staging() == 0
    _age(young)
    assert store.sweep_staging() == 1


def test_a_failed_write_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """The file-size limit makes writes fail with EFBIG part way, like a full disk."""
    source = tmp_path / "in"
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    script = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from slidebank.errors import StorageError
        from slidebank.storage import copy_and_hash
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))
        try:
            copy_and_hash(Path({str(source)!r}), Path({str(tmp_path / "out")!r}), 65536)
        except StorageError as exc:
            print("refused:", exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout
    assert "out: write failed (File too large)" in result.stdout
