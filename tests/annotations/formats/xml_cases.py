"""What the tests of the XML annotation formats (ASAP, ImageScope) share: reading a document
whole, the hostile documents every XML reader must refuse, and a large read and write
measured for peak memory. Each format's tests build the documents in its own layout and
keep their own assertions; only the machinery is here."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from slidebank.annotations.formats.base import (
    AnnotationReader,
    AnnotationWriter,
    ExportContext,
    ImportLimits,
    LabelStyle,
    Parsed,
)
from slidebank.annotations.model import Annotation
from slidebank.errors import InvalidInput


class ReadAll(Protocol):
    """What :func:`reading` gives: a document's items, read whole."""

    def __call__(
        self,
        data: bytes,
        filename: str = "test.xml",
        limits: ImportLimits | None = None,
        classes: dict[str, LabelStyle] | None = None,
    ) -> list[Parsed]: ...


def reading(reader: AnnotationReader) -> ReadAll:
    """A function that reads a whole document with ``reader``: default limits and a fresh
    class map unless given (pass ``classes`` to see what the file said about its classes)."""

    def read(
        data: bytes,
        filename: str = "test.xml",
        limits: ImportLimits | None = None,
        classes: dict[str, LabelStyle] | None = None,
    ) -> list[Parsed]:
        found = {} if classes is None else classes
        return list(reader.read(io.BytesIO(data), filename, limits or ImportLimits(), found))

    return read


def refusal(read: ReadAll, data: bytes, filename: str, limits: ImportLimits | None = None) -> str:
    """The message of the :class:`InvalidInput` that reading ``data`` must raise."""
    with pytest.raises(InvalidInput) as caught:
        read(data, filename, limits)
    return str(caught.value)


# --- hostile XML ------------------------------------------------------------------------

# Four levels of ten: small enough that a reader which expanded it would still finish (and
# fail the test) rather than exhaust memory; the real bomb only adds levels.
_BILLION_LAUGHS = """
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
"""


def _with_doctype(document: bytes, doctype: str) -> bytes:
    """``document`` with ``doctype`` where XML allows it: after the XML declaration, if any."""
    declaration = document.index(b"?>") + 2 if document.startswith(b"<?xml") else 0
    return document[:declaration] + b"\n" + doctype.encode() + document[declaration:]


def hostile_documents(root: str, naming: Callable[[str], bytes]) -> dict[str, bytes]:
    """Documents of a format that carry a document type declaration, by test id: an entity
    expansion bomb, an external entity (a local file) and an external DTD (a URL).

    ``naming(reference)`` is a valid document of the format with ``reference``, an entity
    reference, as the name of an annotation (or layer): where a reader that expanded it
    would put what it expanded to. ``root`` is the document's root element."""
    return {
        "bomb": _with_doctype(naming("&lol9;"), f"<!DOCTYPE {root} [{_BILLION_LAUGHS}]>"),
        "entity": _with_doctype(
            naming("&secret;"), f'<!DOCTYPE {root} [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
        ),
        "dtd": _with_doctype(
            naming(""), f'<!DOCTYPE {root} SYSTEM "http://example.invalid/evil.dtd">'
        ),
    }


# --- bounded memory ---------------------------------------------------------------------

MEMORY_BOUND = 100e6
"""Peak bytes (as tracemalloc counts them) that reading or writing a large file may cost."""


@dataclass(frozen=True)
class Traced:
    count: int
    """Items the reader gave."""
    last: Parsed | None
    read_peak: int
    """Peak bytes allocated (tracemalloc) while reading."""
    write_peak: int
    """The same while writing."""


def read_and_write_traced(
    path: Path,
    text: Iterable[str],
    reader: AnnotationReader,
    writer: AnnotationWriter,
    items: Iterable[Annotation],
    what: str,
) -> Traced:
    """Writes ``text`` to ``path`` and reads it back with ``reader`` (keeping only a count
    and the last item), then writes ``items`` with ``writer`` beside it, measuring the peak
    memory of the read and of the write. ``text`` and ``items`` are best generators, so
    that the test does not hold what the reader and writer must not. ``what`` describes
    the file in the line printed for ``pytest -s``."""
    with path.open("w", encoding="utf-8") as file:
        file.writelines(text)
    tracemalloc.start()
    try:
        count = 0
        last: Parsed | None = None
        with path.open("rb") as source:
            for item in reader.read(source, path.name, ImportLimits(), {}):
                count += 1
                last = item
        _, read_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with path.with_name(f"out-{path.name}").open("wb") as out:
            writer.write(items, out, ExportContext("set", 10, 10))
        _, write_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(
        f"{what}, {path.stat().st_size / 1e6:.1f} MB: read peak {read_peak / 1e6:.2f} MB, "
        f"write peak {write_peak / 1e6:.2f} MB"
    )
    return Traced(count, last, read_peak, write_peak)
