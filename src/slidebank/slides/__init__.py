"""Reading whole-slide images. Knows nothing of the catalogue or the web.

Public surface: :func:`open_slide`, :class:`SlideReader`, :class:`SlideInfo`, :class:`Level`.
"""

from slidebank.slides.model import AssociatedImageInfo, Level, RawTile, SlideInfo
from slidebank.slides.reader import SlideReader
from slidebank.slides.registry import BACKENDS, open_slide

__all__ = [
    "BACKENDS",
    "AssociatedImageInfo",
    "Level",
    "RawTile",
    "SlideInfo",
    "SlideReader",
    "open_slide",
]
