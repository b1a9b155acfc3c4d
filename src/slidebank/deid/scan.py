"""The byte-level proof: look for identifying values in every byte of stored files.

Hyperscan matches dozens of patterns in one pass at memory speed; each value is looked for
as ASCII (case-insensitive), UTF-16 little- and big-endian. Streams carry matches across
chunk boundaries.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from slidebank.deid.identifiers import IdentifyingValue
from slidebank.deid.profile import WRITTEN_DUMMIES

CHUNK_BYTES = 8 * 1024 * 1024
ENCODINGS = ("ascii", "utf-16-le", "utf-16-be")


@dataclass(frozen=True)
class Finding:
    """An identifying value found in a stored file (the value itself is not repeated)."""

    file: str
    offset: int
    field: str
    encoding: str

    def as_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "offset": self.offset,
            "field": self.field,
            "encoding": self.encoding,
        }


BOUNDED_DIGITS = 7
# Before a time of day (HHMMSS) in a DICOM DT: a date of 1900-2099 (YYYYMMDD).
DT_DATE = rb"(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"


def _short_number(value: str) -> bool:
    return value.isdigit() and len(value) <= BOUNDED_DIGITS


def _clock(value: str) -> bool:
    """A time of day with colons (09:59, 09:59:15)."""
    return re.fullmatch(r"[0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?", value) is not None


def _time_digits(value: str) -> bool:
    """A time of day as DICOM writes it (HHMMSS)."""
    return (
        len(value) == 6
        and value.isdigit()
        and int(value[:2]) < 24
        and int(value[2:4]) < 60
        and int(value[4:]) < 60
    )


def _bound(value: str) -> bytes | None:
    """The bytes that must stand before and after an ASCII value for it to count: a short
    number or a time is found on its own, not inside a longer run of digits (or of digits
    and colons)."""
    if _short_number(value):
        return b"[^0-9]"
    if _clock(value):
        return b"[^0-9:]"
    return None


def _written_by_us(value: str) -> bool:
    """Whether the scan would find ``value`` in the dummies the profile writes into every
    stored slide (19000101, 000000, REMOVED…): a source de-identified before holds them as
    its values, and finding them proves nothing but fails every such ingest. A bounded
    value counts only as a whole run of digits of a dummy, as the scan would find it."""
    if _bound(value) is not None:
        return any(value in re.findall(r"[0-9:]+", dummy) for dummy in WRITTEN_DUMMIES)
    return any(value.casefold() in dummy.casefold() for dummy in WRITTEN_DUMMIES)


class ValueScanner:
    """Compiled once for a set of values; scans any number of files."""

    def __init__(self, values: Sequence[IdentifyingValue]) -> None:
        import hyperscan

        self._hyperscan = hyperscan
        self._patterns: list[tuple[IdentifyingValue, str]] = []
        expressions = []
        for value in values:
            if _written_by_us(value.value):
                continue
            for encoding in ENCODINGS:
                try:
                    raw = value.value.encode(encoding)
                except UnicodeEncodeError:
                    raw = value.value.encode("utf-8") if encoding == "ascii" else b""
                if not raw:
                    continue
                # Hex escapes make every byte a literal, whatever it is.
                literal = b"".join(b"\\x%02x" % byte for byte in raw)
                bound = _bound(value.value) if encoding == "ascii" else None
                if bound is not None:
                    # A time (095915, 09:59) or a serial number is found on its own, not
                    # inside a longer run of digits: random UIDs (2.25.<39 digits>) hold
                    # every six-digit string now and then. Dates (8 digits) stay unbounded,
                    # so a date-time run (20091229095915) is still found by its date.
                    literal = bound + literal + bound
                expressions.append(literal)
                self._patterns.append((value, encoding))
                if encoding == "ascii" and _time_digits(value.value):
                    # The time of day inside a DICOM DT whatever its date: a DT whose date
                    # was shifted or replaced still gives the source's time away.
                    expressions.append(DT_DATE + literal[len(bound or b"") :])
                    self._patterns.append((value, encoding))
        self._database = None
        if expressions:
            database = hyperscan.Database(mode=hyperscan.HS_MODE_STREAM)
            flags = [hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_CASELESS] * len(expressions)
            database.compile(
                expressions=expressions,
                ids=list(range(len(expressions))),
                elements=len(expressions),
                flags=flags,
            )
            self._database = database

    def scan(self, path: Path, name: str) -> tuple[list[Finding], str]:
        """Findings in one file, and its SHA-256 (computed in the same read pass).

        Hashing is the slowest of the three (about 1.3 GB/s, against about 3 GB/s for
        hyperscan and more for reading from the page cache), so it runs on a second thread,
        one chunk behind, while this one reads and scans: on two cores the pass costs the
        hashing alone. hashlib, hyperscan and file reads all release the GIL.
        """
        findings: list[Finding] = []
        digest = hashlib.sha256()

        def matched(index: int, start: int, end: int, flags: int, context: object) -> None:
            value, encoding = self._patterns[index]
            length = (
                len(value.value.encode("utf-16-le"))
                if encoding != "ascii"
                else len(value.value.encode("utf-8"))
            )
            if encoding == "ascii" and _bound(value.value) is not None:
                length += 1  # the bounding byte after the value
            findings.append(Finding(name, end - length, value.field, encoding))

        with contextlib.ExitStack() as stack:
            source = stack.enter_context(path.open("rb", buffering=0))
            stream = None
            if self._database is not None:
                stream = stack.enter_context(self._database.stream(match_event_handler=matched))
            hasher = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="scan-hash"))
            hashing: Future[None] | None = None
            try:
                while chunk := source.read(CHUNK_BYTES):
                    if hashing is not None:
                        hashing.result()  # one chunk in flight: updates stay in order
                    hashing = hasher.submit(digest.update, chunk)
                    if stream is not None:
                        stream.scan(chunk)
            finally:
                if hashing is not None:
                    hashing.result()
        return findings, digest.hexdigest()
