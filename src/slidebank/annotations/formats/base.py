"""What every annotation format module provides, and the limits on what it reads.

A reader turns an untrusted file into :class:`Parsed` items, streaming (a file of a million
cells is never held whole), and raises :class:`~slidebank.errors.InvalidInput` naming the
file and the feature when the structure is wrong. It does not judge geometry validity or
slide bounds: ``annotations.checking`` does that for every format alike. A writer streams
annotations out in its format.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from slidebank.annotations.model import Annotation


@dataclass(frozen=True)
class ImportLimits:
    """Bounds on what one import may hold; every reader enforces them as it reads."""

    max_bytes: int = 4 * 1024**3
    max_annotations: int = 5_000_000
    max_vertices: int = 1_000_000
    """Vertices of one annotation."""
    max_text: int = 65_536
    """Characters of one name, class or property value."""


@dataclass(frozen=True)
class LabelStyle:
    """How a class is shown and coded, as a format carries it."""

    color: str | None = None
    """``#rrggbb``."""
    code: str | None = None
    """A coded concept, e.g. ``SCT:4421005``."""


@dataclass(frozen=True)
class Parsed:
    annotation: Annotation
    where: str
    """Names the item in the file for messages, e.g. ``feature 12 ('Neutrophils 1')``."""


@dataclass(frozen=True)
class Piece:
    """Whole items of a file, cut out of it without decoding them: what a parallel import
    hands to another process (``PieceReader``)."""

    first_index: int
    """The first item's position in the file (for messages that name it)."""
    count: int
    """How many items the cut found (the decoder checks)."""
    body: bytes


class AnnotationReader(Protocol):
    name: str
    """The format's name on the command line and in the API (``qupath``, ``asap``, …)."""

    def sniff(self, head: bytes) -> bool:
        """Whether a file starting with ``head`` (its first 64 KiB) is in this format."""
        ...

    def read(
        self,
        source: BinaryIO,
        filename: str,
        limits: ImportLimits,
        classes: dict[str, LabelStyle],
    ) -> Iterator[Parsed]:
        """The file's annotations in file order. Classes met are added to ``classes`` with
        what the file says about them."""
        ...


@runtime_checkable
class PieceReader(AnnotationReader, Protocol):
    """A reader whose files can be cut into pieces cheaply, each decoded on its own, so that
    a big import decodes in several processes. ``read`` gives what ``read_piece`` gives
    for each of ``pieces`` in turn."""

    def pieces(self, source: BinaryIO, filename: str, limits: ImportLimits) -> Iterator[Piece]:
        """The file cut into pieces, in file order; structure errors and the count limit
        are raised here."""
        ...

    def read_piece(
        self,
        piece: Piece,
        filename: str,
        limits: ImportLimits,
        classes: dict[str, LabelStyle],
    ) -> list[Parsed]:
        """The annotations of one piece, as ``read`` gives them."""
        ...


@dataclass(frozen=True)
class ExportContext:
    set_name: str
    slide_width: int
    slide_height: int
    mpp: float | None = None
    classes: Mapping[str, LabelStyle] = field(default_factory=dict)
    source_dicom: Path | None = None
    """The stored DICOM instance of the slide's largest level, for formats that reference
    their image (DICOM annotations)."""


class AnnotationWriter(Protocol):
    name: str
    media_type: str
    suffix: str

    def write(self, items: Iterable[Annotation], out: BinaryIO, context: ExportContext) -> None:
        """Writes ``items`` (in order) to ``out`` as one file."""
        ...


def colour_hex(red: int, green: int, blue: int) -> str:
    return f"#{red & 255:02x}{green & 255:02x}{blue & 255:02x}"
