"""What a file is, from its first bytes. Used to pick a backend and to explain refusals."""

from __future__ import annotations

from pathlib import Path

from slidebank.errors import InvalidInput

HEADER_BYTES = 512

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "bigtiff"),
    (b"MM\x00+", "bigtiff"),
    (b"\x89PNG\r\n\x1a\n", "png image"),
    (b"\xff\xd8\xff", "jpeg image"),
    (b"GIF8", "gif image"),
    (b"BM", "bmp image"),
    (b"%PDF", "pdf document"),
    (b"PK\x03\x04", "zip archive"),
    (b"\x1f\x8b", "gzip archive"),
    (b"\x00\x00\x00\x0cjP  ", "jpeg 2000 image"),
)


def read_header(path: Path) -> bytes:
    """The first bytes of a file, with a clear error when it cannot be read."""
    try:
        with path.open("rb") as handle:
            return handle.read(HEADER_BYTES)
    except PermissionError as exc:
        raise InvalidInput(f"{path}: cannot read file (permission denied)") from exc
    except IsADirectoryError as exc:
        raise InvalidInput(f"{path}: is a folder, not a file") from exc
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read file ({exc.strerror or exc})") from exc


def kind_of(header: bytes) -> str:
    """A short name for the content: tiff, bigtiff, dicom, ini, png image, text, empty..."""
    if not header:
        return "empty"
    if len(header) >= 132 and header[128:132] == b"DICM":
        return "dicom"
    for magic, kind in _MAGIC:
        if header.startswith(magic):
            return kind
    if header.lstrip(b"\xef\xbb\xbf \r\n\t").startswith(b"["):
        return "ini"
    if _is_text(header):
        return "text"
    return "unknown binary"


def is_dicom(path: Path) -> bool:
    try:
        return kind_of(read_header(path)) == "dicom"
    except InvalidInput:
        return False


def is_tiff(kind: str) -> bool:
    return kind in ("tiff", "bigtiff")


def _is_text(header: bytes) -> bool:
    try:
        header.decode("utf-8")
    except UnicodeDecodeError:
        # The header may cut a multi-byte character in two; allow for that at the very end.
        try:
            header[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return not any(byte < 9 or 13 < byte < 32 for byte in header if byte != 27)
