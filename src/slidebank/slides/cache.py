"""One bounded cache of decoded tiles, shared by every slide opened with it.

Each OpenSlide handle otherwise keeps a private cache (32 MiB by default), so a server holding
a hundred open slides could hold gigabytes of pixels; one shared cache bounds the total.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any


class DecodedTileCache:
    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes

    @cached_property
    def openslide(self) -> Any:
        import openslide

        return openslide.OpenSlideCache(self.capacity_bytes)
