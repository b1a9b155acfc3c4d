"""Finding slides under the paths a user gives, and grouping multi-file slides as one.

Grouping is by content: DICOM instances by study and series UID; an MRXS index by its
``[GENERAL]`` section and the data folder beside it; a VMS index by the files it names.
"""

from __future__ import annotations

import configparser
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from slidebank.errors import InvalidInput, without_location
from slidebank.slides.sniff import is_tiff, kind_of, read_header

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
MAX_INDEX_BYTES = 1024 * 1024
VMS_FILE_KEYS = ("imagefile", "mapfile", "optimisationfile", "macroimage")


@dataclass(frozen=True)
class SlideSource:
    """The files of one slide. ``files[0]`` is the one a reader opens first."""

    files: tuple[Path, ...]
    names: tuple[str, ...]
    """Relative name each file keeps inside the stored slide (parallel to ``files``)."""
    display: str
    names_matter: bool = False
    """True where files refer to each other by name (MRXS, VMS), so names are content."""

    @property
    def size(self) -> int:
        return sum(path.stat().st_size for path in self.files)


@dataclass(frozen=True)
class Problem:
    """A path that could not be turned into a slide source, and why."""

    path: str
    reason: str


@dataclass
class Discovery:
    sources: list[SlideSource] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)


def discover(paths: list[Path]) -> Discovery:
    """Slide sources under ``paths`` (files and folders, recursively).

    Files from every path are grouped together, so the instances of one DICOM slide given
    as separate arguments (``slidebank ingest dir/*.dcm``) still make one slide.
    """
    found = Discovery()
    files: dict[Path, None] = {}  # ordered set: the same file through two paths counts once
    explicit: set[Path] = set()
    folders: list[Path] = []
    for path in paths:
        try:
            path.stat()
        except FileNotFoundError:
            reason = "symlink points nowhere" if path.is_symlink() else "no such file or folder"
            found.problems.append(Problem(str(path), reason))
            continue
        except OSError as exc:
            found.problems.append(Problem(str(path), _os_reason(exc)))
            continue
        if path.is_dir():
            folders.append(path)
            files.update(dict.fromkeys(_walk(path, found)))
        elif not os.access(path, os.R_OK):
            found.problems.append(Problem(str(path), "cannot read file (permission denied)"))
        else:
            explicit.add(path)
            files[path] = None
    _group(list(files), found, explicit)
    for folder in folders:
        if not any(f.is_relative_to(folder) for s in found.sources for f in s.files):
            found.problems.append(Problem(str(folder), "no slides found in this folder"))
    return found


def _walk(root: Path, found: Discovery) -> list[Path]:
    """Regular files below ``root``, following folder symlinks once and reporting loops."""
    files: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path, ancestors: tuple[tuple[int, int], ...]) -> None:
        try:
            status = folder.stat()
        except OSError as exc:
            found.problems.append(Problem(str(folder), _os_reason(exc)))
            return
        identity = (status.st_dev, status.st_ino)
        if identity in ancestors:
            found.problems.append(
                Problem(str(folder), "symlink loop: this folder links back to one above it")
            )
            return
        if identity in seen:
            return
        seen.add(identity)
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as exc:
            found.problems.append(Problem(str(folder), _os_reason(exc)))
            return
        for entry in entries:
            entry_path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
                is_file = entry.is_file(follow_symlinks=True)
            except OSError as exc:
                found.problems.append(Problem(str(entry_path), _os_reason(exc)))
                continue
            if is_dir:
                visit(entry_path, (*ancestors, identity))
            elif is_file:
                files.append(entry_path)
            elif entry.is_symlink():
                try:
                    entry_path.stat()
                except OSError as exc:
                    found.problems.append(Problem(str(entry_path), _os_reason(exc)))

    visit(root, ())
    return files


def _group(files: list[Path], found: Discovery, explicit: set[Path]) -> None:
    """Turn files into slide sources: DICOM by series, MRXS and VMS with their parts."""
    dicom: dict[tuple[str, str], list[Path]] = defaultdict(list)
    consumed: set[Path] = set()
    singles: list[Path] = []
    kinds: dict[Path, str] = {}
    for path in files:
        try:
            kinds[path] = kind_of(read_header(path))
        except InvalidInput as exc:
            found.problems.append(Problem(str(path), without_location(str(exc), path)))
            continue
    for path, kind in kinds.items():
        if kind == "ini":
            parts = _index_parts(path)
            if parts is not None:
                found.sources.append(parts)
                consumed.update(parts.files)
    for path, kind in kinds.items():
        if path in consumed:
            continue
        if kind == "dicom":
            key = _dicom_series(path)
            if key is None:
                reason = "DICOM file is not a whole-slide image instance"
                (found.problems if path in explicit else found.skipped).append(
                    Problem(str(path), reason)
                )
            else:
                dicom[key].append(path)
        elif is_tiff(kind) or path in explicit:
            singles.append(path)
        else:
            found.skipped.append(Problem(str(path), f"not a slide ({kind} content)"))
    for path in singles:
        found.sources.append(SlideSource((path,), (_single_name(path),), str(path)))
    for members in dicom.values():
        members.sort()
        names = tuple(f"instance-{index:04d}.dcm" for index in range(len(members)))
        display = str(members[0].parent) if len(members) > 1 else str(members[0])
        found.sources.append(SlideSource(tuple(members), names, display))


def _single_name(path: Path) -> str:
    suffix = path.suffix.lower()
    clean = suffix if suffix[1:].isalnum() and len(suffix) <= 8 else ""
    return f"slide{clean}"


def _dicom_series(path: Path) -> tuple[str, str] | None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            # pydicom warns about every off-standard value; the reader reports what matters.
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(
                path,
                stop_before_pixels=True,
                specific_tags=["SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"],
            )
            # Values are converted when read, so a malformed one raises here, not above.
            if str(header.get("SOPClassUID", "")) != WSI_SOP_CLASS:
                return None
            return str(header.get("StudyInstanceUID", "")), str(header.get("SeriesInstanceUID", ""))
    except (InvalidDicomError, OSError, ValueError, KeyError, EOFError):
        return None


def _index_parts(path: Path) -> SlideSource | None:
    """An MRXS or VMS index file with the files it needs, or None if it is neither."""
    if path.stat().st_size > MAX_INDEX_BYTES:
        return None
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(path.read_text(encoding="utf-8-sig", errors="replace"))
    except configparser.Error:
        return None
    if parser.has_section("GENERAL"):
        data_dir = path.with_suffix("")
        if not (data_dir / "Slidedat.ini").is_file():
            return None
        parts = sorted(p for p in data_dir.rglob("*") if p.is_file())
        names = ["slide.mrxs", *(f"slide/{p.relative_to(data_dir).as_posix()}" for p in parts)]
        return SlideSource((path, *parts), tuple(names), str(path), names_matter=True)
    if parser.has_section("Virtual Microscope Specimen"):
        section = parser["Virtual Microscope Specimen"]
        referenced = []
        for key, value in section.items():
            if key.split("(")[0].strip() in VMS_FILE_KEYS and value:
                candidate = path.parent / value.strip()
                if candidate.is_file() and candidate.parent == path.parent:
                    referenced.append(candidate)
        if not referenced:
            return None
        parts = sorted(set(referenced))
        vms_names = ("slide.vms", *(p.name for p in parts))
        return SlideSource((path, *parts), vms_names, str(path), names_matter=True)
    return None


def _os_reason(exc: OSError) -> str:
    if exc.errno == 40:  # ELOOP
        return "symlink loop"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)
