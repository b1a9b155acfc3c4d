"""DICOMweb's media types: which stored form an ``Accept`` header allows for frames, and
multipart/related bodies written (responses) and read (STOW-RS requests, from a file)."""

from __future__ import annotations

import functools
import itertools
import mmap
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from starlette.exceptions import HTTPException

from slidebank.errors import InvalidInput

EXPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
OCTET_STREAM = "application/octet-stream"
DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
# The media type of frames stored in each transfer syntax (PS3.18 table 8.7.3-5).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}
# The most parts (instances) one STOW-RS request may carry. Each part becomes a file and a
# header read, so a small body of empty parts would otherwise cost thousands of each; a
# slide's pyramid is tens of instances, a study a few hundred.
MAX_STOW_PARTS = 1000


def frame_media_type(transfer_syntax: str) -> str:
    return FRAME_MEDIA_TYPES.get(transfer_syntax, OCTET_STREAM)


@dataclass(frozen=True)
class FrameForm:
    """How frames are answered: their media type and transfer syntax, in parts or bare."""

    media_type: str
    transfer_syntax: str
    multipart: bool = True


def _ranges(accept: str) -> list[tuple[str, dict[str, str], float]]:
    ranges = []
    for item in accept.split(","):
        main, *params = (part.strip() for part in item.split(";"))
        if not main:
            continue
        values: dict[str, str] = {}
        for param in params:
            name, _, value = param.partition("=")
            values[name.strip().lower()] = value.strip().strip('"')
        try:
            q = float(values.pop("q", "1"))
        except ValueError:
            q = 0.0
        ranges.append((main.lower(), values, q))
    return sorted(ranges, key=lambda r: -r[2])


def frame_form(accept: str | None, transfer_syntax: str) -> FrameForm:
    """``choose_frame_form``, remembered: clients send the same few Accept headers again
    and again, and parsing one costs more than reading a frame."""
    found = _negotiated(accept, transfer_syntax)
    if isinstance(found, str):
        raise HTTPException(406, found)
    return found


@functools.lru_cache(maxsize=256)
def _negotiated(accept: str | None, transfer_syntax: str) -> FrameForm | str:
    """The form, or why none is acceptable."""
    try:
        return choose_frame_form(accept, transfer_syntax)
    except HTTPException as exc:
        return str(exc.detail)


def choose_frame_form(accept: str | None, transfer_syntax: str) -> FrameForm:
    """The first form ``accept`` allows of frames stored in ``transfer_syntax``; stored bytes
    are never transcoded, so anything else is 406 Not Acceptable."""
    stored = frame_media_type(transfer_syntax)
    for main, params, q in _ranges(accept or "*/*"):
        if q <= 0:
            continue
        multipart = main == "multipart/related"
        wanted = ALIASES.get(params.get("type", "*/*").lower(), params.get("type", "*/*").lower())
        if not multipart:
            wanted = "*/*" if main in ("*/*", "multipart/*") else ALIASES.get(main, main)
        syntax = params.get("transfer-syntax")
        if syntax not in (None, "*", transfer_syntax):
            continue
        if wanted in ("*/*", stored) or (wanted == "image/*" and stored.startswith("image/")):
            return FrameForm(stored, transfer_syntax, multipart or main in ("*/*", "multipart/*"))
        if wanted == OCTET_STREAM and (syntax is not None or stored == OCTET_STREAM):
            return FrameForm(OCTET_STREAM, transfer_syntax, multipart)
    raise HTTPException(
        406,
        f"frames are stored as {stored} (transfer syntax {transfer_syntax}) and served only so; "
        f'ask for multipart/related; type="{stored}"',
    )


def new_boundary() -> str:
    return secrets.token_hex(16)


def multipart_type(media_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    syntax = f"; transfer-syntax={transfer_syntax}" if transfer_syntax else ""
    return f'multipart/related; type="{media_type}"{syntax}; boundary={boundary}'


def part_header(boundary: str, media_type: str, transfer_syntax: str | None = None) -> bytes:
    syntax = f"; transfer-syntax={transfer_syntax}" if transfer_syntax else ""
    return f"--{boundary}\r\nContent-Type: {media_type}{syntax}\r\n\r\n".encode("latin-1")


def multipart_body(
    parts: list[bytes], boundary: str, media_type: str, transfer_syntax: str | None = None
) -> bytes:
    header = part_header(boundary, media_type, transfer_syntax)
    chunks: list[bytes] = []
    for part in parts:
        chunks += [header, part, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode("latin-1"))
    return b"".join(chunks)


def frames_body(
    parts: list[bytes], form: FrameForm, boundary: str | None = None
) -> tuple[bytes, str]:
    """The body and Content-Type of frames answered in ``form``: one multipart/related part
    per frame, or the frame bare."""
    if not form.multipart:
        (part,) = parts
        return part, form.media_type
    boundary = boundary or new_boundary()
    return (
        multipart_body(parts, boundary, form.media_type, form.transfer_syntax),
        multipart_type(form.media_type, boundary, form.transfer_syntax),
    )


def posted_boundary(content_type: str | None) -> str:
    """The boundary of a STOW-RS request body; 415 unless multipart/related of DICOM."""
    main, *params = (part.strip() for part in (content_type or "").split(";"))
    values = {}
    for param in params:
        name, _, value = param.partition("=")
        values[name.strip().lower()] = value.strip().strip('"')
    kind = values.get("type", "").lower()
    if main.lower() != "multipart/related" or kind not in ("", DICOM):
        raise HTTPException(
            415, 'post multipart/related; type="application/dicom" (one instance per part)'
        )
    if not values.get("boundary"):
        raise InvalidInput("the Content-Type has no multipart boundary")
    return values["boundary"]


def split_parts(
    body: Path, boundary: str, folder: Path, max_parts: int = MAX_STOW_PARTS
) -> list[Path]:
    """Write each part of the multipart body in file ``body`` to a file in ``folder``; 413
    (nothing written) when there are more than ``max_parts``."""
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    written: list[Path] = []
    if body.stat().st_size == 0:
        raise InvalidInput("the request has no parts")
    with body.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        # Counted before anything is written; one past the limit is enough to refuse.
        spans = list(itertools.islice(_part_spans(data, delimiter), max_parts + 1))
        if len(spans) > max_parts:
            raise HTTPException(
                413, f"a STOW-RS request may carry at most {max_parts} parts (one instance each)"
            )
        for start, end in spans:
            head_end = data.find(b"\r\n\r\n", start, end)
            if head_end < 0:
                raise InvalidInput(f"part {len(written) + 1} has no header end")
            target = folder / f"part-{len(written):05d}.dcm"
            with target.open("wb") as out:
                out.write(data[head_end + 4 : end])
            written.append(target)
    if not written:
        raise InvalidInput("the request has no parts")
    return written


def _part_spans(data: mmap.mmap, delimiter: bytes) -> Iterator[tuple[int, int]]:
    opening = delimiter[2:]
    position = 0 if data[: len(opening)] == opening else data.find(delimiter)
    if position < 0:
        return
    position += len(opening) if position == 0 else len(delimiter)
    while True:
        if data[position : position + 2] == b"--":
            return  # the close delimiter
        end = data.find(delimiter, position)
        if end < 0:
            raise InvalidInput("the multipart body is not closed")
        yield position, end
        position = end + len(delimiter)
