"""Open slides for serving: opened once, bounded by count and memory, never closed in use."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from slidebank.errors import NotFound
from slidebank.geometry import Point, Size
from slidebank.services import ingesting
from slidebank.services.open_slides import OpenSlides
from slidebank.services.repository import Repository
from slidebank.services.samples import make_sample_slide


@pytest.fixture
def three_slides(repository: Repository, tmp_path: Path) -> list[str]:
    paths = [make_sample_slide(tmp_path / f"s{i}.svs", 1000 + 256 * i, 800) for i in range(3)]
    report = ingesting.ingest_paths(repository, paths, "three", None)
    return [outcome.id for outcome in report.outcomes if outcome.id]


def test_a_slide_is_opened_once_and_shared(repository: Repository, three_slides: list[str]) -> None:
    slides = OpenSlides(repository, max_open=8, max_bytes=1 << 30, decoded_cache_bytes=1 << 20)
    assert slides.cached(three_slides[0]) is None
    first = slides.acquire(three_slides[0])
    second = slides.acquire(three_slides[0])
    assert first is second and first.users == 2
    slides.release(first)
    slides.release(second)
    assert slides.open_count == 1
    slides.close()


def test_count_bound_closes_the_least_recently_used(
    repository: Repository, three_slides: list[str]
) -> None:
    slides = OpenSlides(repository, max_open=2, max_bytes=1 << 30, decoded_cache_bytes=1 << 20)
    for public_id in three_slides:
        with slides.using(public_id):
            pass
    assert slides.open_count == 2
    assert slides.cached(three_slides[0]) is None  # the oldest went
    kept = slides.cached(three_slides[2])
    assert kept is not None
    slides.release(kept)
    slides.close()


def test_memory_bound_holds(repository: Repository, three_slides: list[str]) -> None:
    slides = OpenSlides(repository, max_open=100, max_bytes=1, decoded_cache_bytes=1 << 20)
    for public_id in three_slides:
        with slides.using(public_id) as slide:
            assert slide.weight > 0
    assert slides.open_count == 1  # over the budget, only the newest stays
    assert slides.open_bytes == slide.weight
    slides.close()


def test_an_evicted_slide_in_use_keeps_reading_until_released(
    repository: Repository, three_slides: list[str]
) -> None:
    slides = OpenSlides(repository, max_open=1, max_bytes=1 << 30, decoded_cache_bytes=1 << 20)
    held = slides.acquire(three_slides[0])
    with slides.using(three_slides[1]):
        pass
    assert held.retired
    image = held.reader.read_region(Point(0, 0), 0, Size(64, 64))  # still open
    assert image.size == (64, 64)
    slides.release(held)
    slides.close()


def test_closing_waits_for_slides_in_use(repository: Repository, three_slides: list[str]) -> None:
    slides = OpenSlides(repository, max_open=8, max_bytes=1 << 30, decoded_cache_bytes=1 << 20)
    held = slides.acquire(three_slides[0])
    slides.close()
    assert held.retired and slides.open_count == 0
    assert held.reader.read_region(Point(0, 0), 0, Size(8, 8)).size == (8, 8)
    slides.release(held)  # the last user closes it


def test_concurrent_first_requests_open_the_slide_once(
    repository: Repository, three_slides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    slides = OpenSlides(repository, max_open=8, max_bytes=1 << 30, decoded_cache_bytes=1 << 20)
    opened: list[str] = []
    real_open = slides._open

    def counting_open(public_id: str) -> object:
        opened.append(public_id)
        return real_open(public_id)

    monkeypatch.setattr(slides, "_open", counting_open)
    barrier = threading.Barrier(8)

    def request() -> None:
        barrier.wait()
        with slides.using(three_slides[0]):
            pass

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert opened == [three_slides[0]]
    slides.close()


def test_unknown_slide_is_not_found(repository: Repository) -> None:
    slides = OpenSlides(repository, max_open=8, max_bytes=1 << 30, decoded_cache_bytes=1 << 20)
    with pytest.raises(NotFound, match="sb-unknown"):
        slides.acquire("sb-unknown")
    assert slides.open_count == 0
