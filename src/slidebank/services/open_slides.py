"""Slides held open for serving: opened once, shared by requests, bounded by count and memory.

Opening a slide costs a catalogue query and milliseconds of file parsing, far more than
serving one stored tile, so handles are kept. The cache is bounded by the number of open
slides and by an estimate of the memory each holds; the least recently used is closed first,
but never while a request still reads from it (it is closed when its last user lets go).
Decoded pixels go to one shared tile cache, so their memory is bounded once for all slides.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from slidebank.catalog import queries
from slidebank.services.repository import Repository
from slidebank.slides import SlideReader, open_slide
from slidebank.slides.cache import DecodedTileCache
from slidebank.tiles.deepzoom import DeepZoom
from slidebank.tiles.rendering import assembles_from_stored_tiles


@dataclass(eq=False)
class ServedSlide:
    """An open slide and what serving needs to know about it without asking the catalogue."""

    public_id: str
    content_tag: str
    """Names what is stored, for entity tags: a digest of the stored files' SHA-256, not the
    source's checksum (which would let anyone holding the scanner file find its slide)."""
    dataset_id: int
    reader: SlideReader
    deepzoom: DeepZoom
    weight: int
    quick_levels: frozenset[int] = frozenset()
    """DeepZoom levels whose tiles are stored tiles, whole or DCT-scaled (cheap to render)."""
    stored_levels: int = 1
    users: int = field(default=0, repr=False)
    retired: bool = field(default=False, repr=False)


def content_tag(file_digests: list[str]) -> str:
    """24 hex digits that change whenever a stored file does (``slidebank pyramid`` adds
    files: their tiles may then come from other levels)."""
    return hashlib.sha256(" ".join(file_digests).encode()).hexdigest()[:24]


class OpenSlides:
    def __init__(
        self,
        repository: Repository,
        max_open: int,
        max_bytes: int,
        decoded_cache_bytes: int,
    ) -> None:
        self.repository = repository
        self.max_open = max_open
        self.max_bytes = max_bytes
        self.decoded = DecodedTileCache(decoded_cache_bytes)
        self._slides: OrderedDict[str, ServedSlide] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # One opener at a time per slide, so a burst of requests opens it once.
        self._opening: dict[str, threading.Lock] = {}

    def cached(self, public_id: str) -> ServedSlide | None:
        """The slide if it is open, acquired for the caller (no I/O); else None."""
        with self._lock:
            slide = self._slides.get(public_id)
            if slide is None:
                return None
            self._slides.move_to_end(public_id)
            slide.users += 1
            return slide

    def dataset_of(self, public_id: str) -> int:
        """The slide's dataset id, from the open slide or one catalogue lookup (no opening)."""
        with self._lock:
            slide = self._slides.get(public_id)
        if slide is not None:
            return slide.dataset_id
        with self.repository.catalogue.reading() as session:
            return queries.dataset_id_of_image(session, public_id)

    def acquire(self, public_id: str) -> ServedSlide:
        """The slide, opened if needed, acquired for the caller; NotFound if unknown."""
        slide = self.cached(public_id)
        if slide is not None:
            return slide
        with self._lock:
            opener = self._opening.setdefault(public_id, threading.Lock())
        with opener:
            slide = self.cached(public_id)
            if slide is not None:
                return slide
            try:
                slide = self._open(public_id)
            finally:
                with self._lock:
                    self._opening.pop(public_id, None)
            with self._lock:
                slide.users += 1
                self._slides[public_id] = slide
                self._bytes += slide.weight
                retired = self._evict()
            for old in retired:
                old.reader.close()
            return slide

    def release(self, slide: ServedSlide) -> None:
        with self._lock:
            slide.users -= 1
            close = slide.retired and slide.users == 0
        if close:
            slide.reader.close()

    @contextmanager
    def using(self, public_id: str) -> Iterator[ServedSlide]:
        slide = self.acquire(public_id)
        try:
            yield slide
        finally:
            self.release(slide)

    @property
    def open_count(self) -> int:
        return len(self._slides)

    @property
    def open_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        """Close every open slide; those still in use close on their last release."""
        with self._lock:
            idle = []
            for slide in self._slides.values():
                slide.retired = True
                if slide.users == 0:
                    idle.append(slide)
            self._slides.clear()
            self._bytes = 0
        for slide in idle:
            slide.reader.close()

    def _open(self, public_id: str) -> ServedSlide:
        with self.repository.catalogue.reading() as session:
            image = queries.image_by_public_id(session, public_id)
            key = image.storage_key
            dataset_id = image.slide.dataset_id
            names = [stored["name"] for stored in image.files]
            tag = content_tag([stored["sha256"] for stored in image.files])
            backend = image.backend
        content = self.repository.store.content_dir(key)
        reader = open_slide(
            tuple(content / name for name in names), backend=backend, cache=self.decoded
        )
        try:
            zoom = DeepZoom.for_slide(reader.info)
            quick = frozenset(
                level
                for level in range(zoom.level_count)
                if assembles_from_stored_tiles(reader, zoom.scale(level))
            )
        except BaseException:
            reader.close()
            raise
        return ServedSlide(
            public_id=public_id,
            content_tag=tag,
            dataset_id=dataset_id,
            reader=reader,
            deepzoom=zoom,
            weight=reader.memory_estimate(),
            quick_levels=quick,
            stored_levels=len(reader.info.levels),
        )

    def _evict(self) -> list[ServedSlide]:
        """Drop least recently used slides over the bounds; those unused are returned for
        closing outside the lock, the others close on their last release."""
        closing = []
        while len(self._slides) > 1 and (
            len(self._slides) > self.max_open or self._bytes > self.max_bytes
        ):
            _, oldest = self._slides.popitem(last=False)
            self._bytes -= oldest.weight
            oldest.retired = True
            if oldest.users == 0:
                closing.append(oldest)
        return closing
