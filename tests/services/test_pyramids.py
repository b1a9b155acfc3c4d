"""`slidebank pyramid`: the missing power-of-two levels stored once as DICOM instances, the
tiles served from them byte for byte what was rendered before, and nothing half-added."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from wsidicom import WsiDicom

from slidebank.access.policy import COMMAND_LINE
from slidebank.catalog import queries
from slidebank.catalog.access_tables import AuditEvent
from slidebank.catalog.dicom_tables import DicomInstance
from slidebank.config import Settings
from slidebank.errors import InvalidInput
from slidebank.geometry import Size
from slidebank.services import deidentification, ingesting, pyramids, serving
from slidebank.services.open_slides import OpenSlides
from slidebank.services.repository import Repository, open_repository
from slidebank.slides.reader import SlideReader
from slidebank.storage.blobs import LocalBlobStore
from slidebank.tiles import pyramid
from slidebank.tiles.deepzoom import DeepZoom
from tests.test_cli import run


@pytest.fixture
def cmu_id(repository: Repository, cmu_small: Path) -> str:
    report = ingesting.ingest_paths(repository, [cmu_small], "pyramids", None)
    public_id = report.outcomes[0].id
    assert public_id is not None
    return public_id


Tile = tuple[int, int, int]


def _deepzoom_tiles(repository: Repository, public_id: str) -> tuple[dict[Tile, bytes], set[Tile]]:
    """Every whole (interior) tile of every DeepZoom level as served, and those of them that
    were passed through from storage."""
    slides = OpenSlides(repository, max_open=2, max_bytes=1 << 30, decoded_cache_bytes=1 << 20)
    options = serving.ServingOptions.from_settings(repository.settings)
    found, stored = {}, set()
    try:
        with slides.using(public_id) as slide:
            zoom = slide.deepzoom
            for level in range(zoom.level_count):
                size, t = zoom.level_sizes[level], zoom.tile_size
                for row in range(size.height // t):
                    for column in range(size.width // t):
                        where = zoom.stored_tile(level, column, row)
                        picture = serving.stored_deepzoom_tile(slide, where) if where else None
                        if picture is None:
                            picture = serving.rendered_deepzoom_tile(
                                slide, level, column, row, "jpeg", options
                            )
                        else:
                            stored.add((level, column, row))
                        found[(level, column, row)] = picture.data
    finally:
        slides.close()
    return found, stored


@dataclass(frozen=True)
class _Stored:
    files: list[str]
    levels: list[float]
    level_count: int
    size_bytes: int
    instances: int
    audited: int
    key: str


def _image(repository: Repository, public_id: str) -> _Stored:
    with repository.catalogue.reading() as session:
        image = queries.image_by_public_id(session, public_id)
        instances = session.scalar(
            select(func.count())
            .select_from(DicomInstance)
            .where(DicomInstance.image_id == image.id)
        )
        audited = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "pyramid.complete", AuditEvent.target == public_id)
        )
        return _Stored(
            files=[f["name"] for f in image.files],
            levels=[round(level["downsample"], 2) for level in image.levels],
            level_count=image.level_count,
            size_bytes=image.size_bytes,
            instances=int(instances or 0),
            audited=int(audited or 0),
            key=image.storage_key,
        )


def test_missing_levels_are_stored_and_serve_the_bytes_rendered_before(
    repository: Repository, cmu_id: str
) -> None:
    before = _image(repository, cmu_id)
    rendered, passthrough_before = _deepzoom_tiles(repository, cmu_id)
    assert before.levels == [1.0]

    done = pyramids.complete_pyramids(repository, COMMAND_LINE, [cmu_id], workers=2)

    assert [entry["downsample"] for entry in done[0].added] == [2, 4, 8]
    after = _image(repository, cmu_id)
    assert after.levels == [1.0, 2.0, 4.0, 7.99] and after.level_count == 4
    new_files = [name for name in after.files if name not in before.files]
    assert len(new_files) == 3
    assert after.instances == before.instances + 3
    assert after.size_bytes == before.size_bytes + sum(entry["bytes"] for entry in done[0].added)
    assert after.audited == 1

    # Every whole tile of the added levels now passes through, and is the very JPEG the
    # server rendered for that URL before.
    served, passthrough_after = _deepzoom_tiles(repository, cmu_id)
    gained = passthrough_after - passthrough_before
    zoom = DeepZoom(Size(2220, 2967), 240)
    at_added_scales = {tile for tile in rendered if zoom.scale(tile[0]) in (2, 4, 8)}
    assert gained == at_added_scales and len(gained) == 4 * 6 + 2 * 3 + 1
    assert {tile: served[tile] for tile in gained} == {tile: rendered[tile] for tile in gained}

    # A standard reader sees one pyramid of four levels; its pixels match level 0 shrunk.
    content = repository.store.content_dir(after.key)
    with WsiDicom.open([content / name for name in after.files]) as wsi:
        assert len(wsi.levels) == 4
        half = np.asarray(wsi.read_region((0, 0), 1, (480, 480)).convert("RGB"), dtype=float)
        full = np.asarray(wsi.read_region((0, 0), 0, (960, 960)).convert("RGB"), dtype=float)
    shrunk = full.reshape(480, 2, 480, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - shrunk).mean() < 6

    # The proof covers the new files; a second run finds nothing to add.
    check = deidentification.verify_slides(repository, COMMAND_LINE, [cmu_id])[0]
    assert check.passed and check.verification is not None and check.verification.files >= 5
    again = pyramids.complete_pyramids(repository, COMMAND_LINE, [cmu_id])
    assert again[0].added == [] and again[0].skipped == "every power-of-two level is stored"


def test_a_failure_while_writing_adds_nothing(
    repository: Repository, cmu_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _image(repository, cmu_id)
    content = repository.store.content_dir(before.key)
    files_before = sorted(p.name for p in content.iterdir())
    real = pyramid.rendered_tiles

    def failing(
        reader: SlideReader, level: pyramid.MissingLevel, quality: int, workers: int
    ) -> Iterator[bytes]:
        for count, tile in enumerate(real(reader, level, quality, workers)):
            if count == 20:
                raise InvalidInput("disk full (simulated)")
            yield tile

    monkeypatch.setattr(pyramid, "rendered_tiles", failing)
    with pytest.raises(InvalidInput, match="simulated"):
        pyramids.complete_pyramids(repository, COMMAND_LINE, [cmu_id])
    assert _image(repository, cmu_id) == before
    assert sorted(p.name for p in content.iterdir()) == files_before
    store = repository.store
    assert isinstance(store, LocalBlobStore)
    assert not any(store.staging_root.iterdir())


def test_a_run_killed_between_move_and_commit_is_repaired_by_the_next(
    repository: Repository, cmu_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _image(repository, cmu_id)
    content = repository.store.content_dir(before.key)

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # as if the process died before the catalogue commit

    monkeypatch.setattr(pyramids, "_register", killed)
    with pytest.raises(KeyboardInterrupt):
        pyramids.complete_pyramids(repository, COMMAND_LINE, [cmu_id])
    moved = sorted(p.name for p in content.iterdir() if p.name not in before.files)
    assert len(moved) == 3  # in the content folder, but listed nowhere: never read
    assert _image(repository, cmu_id) == before
    monkeypatch.undo()

    done = pyramids.complete_pyramids(repository, COMMAND_LINE, [cmu_id])
    after = _image(repository, cmu_id)
    assert sorted(entry["file"] for entry in done[0].added) == moved  # the same files, replaced
    assert sorted(after.files) == sorted([*before.files, *moved])
    assert after.instances == before.instances + 3


def test_slides_stored_as_they_came_are_left_alone(tmp_path: Path, cmu_small: Path) -> None:
    repository = open_repository(Settings(home=tmp_path / "home", stored_form="original"))
    try:
        public_id = (
            ingesting.ingest_paths(repository, [cmu_small], "originals", None).outcomes[0].id
        )
        done = pyramids.complete_pyramids(repository, COMMAND_LINE, [str(public_id)])
        assert done[0].added == [] and done[0].skipped is not None
        assert "not stored as DICOM" in done[0].skipped
    finally:
        repository.close()


def test_cli_adds_levels_and_reports_json(tmp_path: Path, cmu_small: Path) -> None:
    home = tmp_path / "home"
    public_id = json.loads(run("ingest", cmu_small, "--json", home=home).stdout)["id"]
    result = run("pyramid", public_id, "--json", home=home)
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    assert [level["downsample"] for level in entry["added"]] == [2, 4, 8]
    text = run("pyramid", "--all", home=home)
    assert text.returncode == 0 and "every power-of-two level is stored" in text.stdout
    assert run("pyramid", home=home).returncode != 0  # neither ids nor --all
    unknown = run("pyramid", "sb-doesnotexist", home=home)
    assert unknown.returncode != 0 and "sb-doesnotexist" in unknown.stderr
