"""Reading untrusted annotation XML: the safety rules the XML formats (ASAP, ImageScope)
share, kept in one place so that a fix to one is a fix to all.

An annotation file comes from a user or another tool and is untrusted. XML lets such a file
ask much of its parser: a document type declaration can define entities that expand
exponentially (the "billion laughs" bomb) or that pull in local files and URLs (external
entities); a file can be many gigabytes, or nested without end. So every XML reader here:

* parses with defusedxml, with document type declarations refused outright (so there is no
  entity expansion and no external reference to judge); every refusal, and every parse
  error, becomes :class:`~slidebank.errors.InvalidInput` naming the file;
* streams with ``iterparse`` and drops each element once it has been read, so memory holds
  one branch of the tree whatever the size of the file;
* stops at a bound on bytes read (:attr:`ImportLimits.max_bytes`) and on nesting depth, as
  it reads rather than after;
* reads coordinates as plain decimal numbers only: ``float()`` alone would also take
  ``nan``, ``inf`` and ``1_000``, which no annotation tool means.

Also here, because both formats have them alike: the root element's name from a file's
first bytes (for sniffing, before any parsing), a quoted excerpt of text for messages, how
a list of vertices becomes a ring or a rectangle, and the one rule their writers need so
that this module reads back what they write (characters XML 1.0 cannot carry are replaced).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO, NoReturn, TypeAlias
from xml.sax.saxutils import quoteattr

from defusedxml import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)
from defusedxml.ElementTree import ParseError, iterparse
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from slidebank.errors import InvalidInput

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

XmlEvent: TypeAlias = tuple[str, "Element", int, str | None]
"""``(event, element, depth, parent tag)``: ``event`` is ``"start"`` or ``"end"``, ``depth``
the element's own (the root is 1) at either event, the parent tag None for the root."""

INTEGER = re.compile(r"[+-]?\d+")
"""A whole number as an attribute holds it (an order, a colour): int() alone would take
underscores too."""
_READ_CHUNK = 64 * 1024
# A plain decimal number, as annotation tools write them; NaN, infinities and underscores,
# which float() would take, are not.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# The same with a decimal comma allowed (some tools wrote numbers in their locale's spelling).
_NUMBER_OR_COMMA = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?")
_NOT_FINITE = {"nan", "inf", "infinity"}
# XML 1.0 cannot carry these characters at all, escaped or not (nor can UTF-8 carry lone
# surrogates); a value holding one is written with U+FFFD in its place.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
# The root element's name after what may come before it: a byte order mark, the XML
# declaration, comments, processing instructions and a document type declaration (which
# the parser will refuse, but the file is still recognised as the format it claims to be).
_ROOT_ELEMENT = re.compile(
    rb"(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*\?>\s*)?"
    rb"(?:(?:<!--.*?-->|<\?.*?\?>)\s*)*"
    rb"(?:<!DOCTYPE[^>\[]*(?:\[.*?\])?\s*>\s*(?:(?:<!--.*?-->|<\?.*?\?>)\s*)*)?"
    rb"<([A-Za-z_][\w.:-]*)",
    re.DOTALL,
)


class BoundedReader:
    """The source as expat reads it, refusing to go past ``limit`` bytes.

    The limit is enforced on the bytes read, not on the file's size: a pipe or an upload
    has no size to ask, and a file may grow while it is read."""

    def __init__(self, source: BinaryIO, limit: int, filename: str) -> None:
        self._source = source
        self._limit = limit
        self._filename = filename
        self._count = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            # A read of no stated size takes a chunk: never the whole rest of the file.
            size = _READ_CHUNK
        # One byte past the limit is enough to know it is exceeded.
        data = self._source.read(max(0, min(size, self._limit - self._count + 1)))
        self._count += len(data)
        if self._count > self._limit:
            raise InvalidInput(f"{self._filename}: larger than the limit of {self._limit} bytes")
        return data


def _events(source: BoundedReader, filename: str) -> Iterator[tuple[str, Element]]:
    """Start and end events of a well-formed, DTD-free document; parse failures named."""
    try:
        yield from iterparse(source, events=("start", "end"), forbid_dtd=True)
    except ParseError as error:
        raise InvalidInput(f"{filename}: not well-formed XML: {error}") from error
    except DTDForbidden as error:
        raise InvalidInput(
            f"{filename}: XML document type declarations are refused (they carry entity "
            "expansion and external references)"
        ) from error
    # With forbid_dtd no entity can be declared (a DTD is refused before any is read): these
    # are a second line, should a document get past it.
    except EntitiesForbidden as error:
        raise InvalidInput(f"{filename}: XML entity declarations are refused") from error
    except ExternalReferenceForbidden as error:
        raise InvalidInput(f"{filename}: external XML references are refused") from error
    except DefusedXmlException as error:
        raise InvalidInput(f"{filename}: refused XML construct: {error}") from error


def elements(
    source: BinaryIO,
    filename: str,
    max_bytes: int,
    *,
    root: str,
    kind: str,
    max_depth: int,
) -> Iterator[XmlEvent]:
    """The start and end events of the document in ``source``, read within ``max_bytes``,
    as :data:`XmlEvent`.

    The root element must be ``<root>`` (else the file is refused as "not an ``kind``
    annotation file") and nothing may nest deeper than ``max_depth``: both are refused at
    the start of the offending element, before it costs memory. Once the caller has taken
    an element's end event the element is removed from its parent, so the tree never holds
    more than the branch being read: a caller must take what it needs from an element at
    its end event, not later.
    """
    stack: list[Element] = []
    for event, element in _events(BoundedReader(source, max_bytes, filename), filename):
        if event == "start":
            parent = stack[-1].tag if stack else None
            stack.append(element)
            depth = len(stack)
            if depth == 1:
                if element.tag != root:
                    raise InvalidInput(
                        f"{filename}: the root element is <{element.tag}>, not <{root}>: "
                        f"not an {kind} annotation file"
                    )
            elif depth > max_depth:
                raise InvalidInput(f"{filename}: elements nested deeper than {max_depth}")
            yield event, element, depth, parent
            continue
        stack.pop()
        yield event, element, len(stack) + 1, stack[-1].tag if stack else None
        # The element has been read: dropping it keeps the tree at one branch.
        if stack:
            stack[-1].remove(element)


def utf8_head(head: bytes) -> bytes:
    """The first bytes of a document, re-encoded as UTF-8 when they are UTF-16 (with a
    byte order mark), so that byte patterns can look for markup in either."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        # The head may end inside a character: the broken tail is dropped.
        return head.decode("utf-16", errors="ignore").encode("utf-8")
    return head


def root_name(head: bytes) -> str | None:
    """The root element's name, from the first bytes of a document; None when they do not
    look like XML."""
    match = _ROOT_ELEMENT.match(utf8_head(head))
    return match.group(1).decode("ascii") if match else None


def quoted(text: str, limit: int = 60) -> str:
    """``text`` for a message: quoted, and cut short when long (a file may hold a name of
    megabytes, which a message must not repeat)."""
    return "'" + (text if len(text) <= limit else text[: limit - 1] + "…") + "'"


def plain_number(text: str | None, *, decimal_comma: bool = False) -> float | None:
    """``text`` as a finite number, or None to let :func:`checked_number` say what is wrong.

    The fast path for the common case, called for every coordinate: it builds no message
    and needs no ``what`` or ``fail``."""
    pattern = _NUMBER_OR_COMMA if decimal_comma else _NUMBER
    if text is None or not pattern.fullmatch(text := text.strip()):
        return None
    value = float(text.replace(",", ".") if decimal_comma else text)
    # A well-spelled number can still overflow to infinity (1e999).
    return value if math.isfinite(value) else None


def checked_number(
    text: str | None, what: str, fail: Callable[[str], NoReturn], *, decimal_comma: bool = False
) -> float:
    """``text`` (the attribute ``what``) as a finite number; otherwise ``fail`` is called
    with what is wrong with it, and the caller's ``fail`` says where."""
    if text is None:
        fail(f"{what} is missing")
    stripped = text.strip()
    if not (_NUMBER_OR_COMMA if decimal_comma else _NUMBER).fullmatch(stripped):
        if stripped.lower().lstrip("+-") in _NOT_FINITE:
            fail(f"{what} is not a finite number: {quoted(text)}")
        fail(f"{what} is not a number: {quoted(text)}")
    value = float(stripped.replace(",", ".") if decimal_comma else stripped)
    if not math.isfinite(value):
        fail(f"{what} is not a finite number: {quoted(text)}")
    return value


def open_ring(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The ring without a repeated closing vertex (ASAP and ImageScope write rings open;
    files from some other tools close them)."""
    return points[:-1] if len(points) > 1 and points[0] == points[-1] else points


def ring_polygon(
    ring: list[tuple[float, float]], fail: Callable[[str], NoReturn], name: str
) -> Polygon:
    """The polygon of an open ring (see :func:`open_ring`). Fewer than 3 vertices is refused
    in the caller's words: "``name`` needs at least 3 vertices, this one has 2"."""
    if len(ring) < 3:
        fail(f"{name} needs at least 3 vertices, this one has {len(ring)}")
    return Polygon(ring)


def corner_rectangle(
    points: list[tuple[float, float]], fail: Callable[[str], NoReturn], name: str, unit: str
) -> BaseGeometry:
    """A rectangle as both formats give one: its corners in order (a closing vertex may be
    repeated), or two opposite corners, whose box it is. Fewer than that is refused in the
    caller's words: "``name`` needs its corners, this one has 1 ``unit``"."""
    ring = open_ring(points)
    if len(ring) == 2:
        (x0, y0), (x1, y1) = ring
        return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    if len(ring) < 3:
        fail(f"{name} needs its corners, this one has {len(ring)} {unit}")
    return Polygon(ring)


def attribute(value: str) -> str:
    """An attribute value for a writer, quoted and escaped, with the characters XML cannot
    hold replaced (expat would refuse the file otherwise, and so would this module)."""
    return quoteattr(_NOT_XML.sub("\ufffd", value))
