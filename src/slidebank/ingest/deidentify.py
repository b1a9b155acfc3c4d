"""De-identify step: convert the source into de-identified DICOM in staging, check every
written byte against the source's identifying values, and keep the report and the sealed
values beside the slide. A failed check fails the ingest: nothing is stored.

Before any of that (before the slide is even hashed), ``check_sidecar_text`` refuses a slide
whose sidecar text repeats one of those values: the text is stored as written."""

from __future__ import annotations

import dataclasses
import secrets
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom

from slidebank.catalog.entries import SlideEntry, StoredFile
from slidebank.config import Settings
from slidebank.deid import identifiers
from slidebank.deid.convert import Conversion, ConversionOptions, convert, replace_in_headers
from slidebank.deid.identifiers import IdentifyingValue
from slidebank.deid.profile import Pseudonyms, profile_actions
from slidebank.deid.proof import verify_files
from slidebank.deid.pseudonyms import Pseudonymizer
from slidebank.deid.report import DeidReport
from slidebank.deid.sealed import SEALED_NAME, seal
from slidebank.errors import InvalidInput
from slidebank.ingest.discovery import SlideSource
from slidebank.slides.reader import SlideReader
from slidebank.slides.sniff import is_dicom
from slidebank.storage import Staging

__all__ = [
    "Converted",
    "Deidentified",
    "check_sidecar_text",
    "convert",
    "convert_source",
    "deidentify",
    "pseudonyms_for",
    "source_values",
]

# Sidecar identifiers looked for in sidecar text only when they hold a digit: one made of
# letters alone ('liver', 'colon-left') names the part, and the same word in the text (an
# anatomical site 'Liver', a finding 'liver necrosis') is vocabulary. Case identifiers are
# always looked for.
_PART_IDENTIFIERS = ("sidecar specimen", "sidecar block", "sidecar slide")


@dataclass(frozen=True)
class Deidentified:
    entry: SlideEntry | None
    """The sidecar entry with its identifiers replaced by pseudonyms."""
    files: tuple[StoredFile, ...]
    names: Pseudonyms
    report: DeidReport


@dataclass(frozen=True)
class Converted:
    """A conversion in staging, before its proof."""

    conversion: Conversion
    scanned: list[IdentifyingValue]
    """The spellings of the source's identifying values that the proof looks for."""
    stand_ins: dict[str, str] = dataclasses.field(default_factory=dict)
    """Stand-in written for a pseudonym not known yet -> which one ("case" or "slide")."""


def convert_source(
    source: SlideSource,
    reader: SlideReader,
    staging: Staging,
    settings: Settings,
    key: bytes,
    entry: SlideEntry | None,
    checksum: str | None,
    found: list[IdentifyingValue] | None = None,
) -> Converted:
    """Convert the source into de-identified DICOM in ``staging.content``.

    With ``checksum`` None (it is being computed meanwhile), a pseudonym derived from it
    (a slide without a sidecar case or slide identifier is named by its content) is written
    as a stand-in that ``deidentify`` replaces. Only for sources that are not DICOM: their
    converted headers hold no date of the source, so no date is shifted by the case's
    pseudonym either."""
    if checksum is None and any(is_dicom(path) for path in source.files):
        raise ValueError(f"{source.display}: a DICOM source is converted after it is hashed")
    pseudonymizer = Pseudonymizer(key)
    if found is None:
        found = source_values(source, reader, entry)
    names, stand_ins = _pseudonyms(pseudonymizer, settings, entry, checksum)
    scanned = identifiers.spellings(found)
    options = ConversionOptions(
        known_values=tuple(value.value for value in scanned),
        keep_overview=settings.keep_overview,
        jpeg_quality=settings.transcode_quality,
    )
    conversion = convert(source.files, staging.content, names, pseudonymizer, options)
    return Converted(conversion, scanned, stand_ins)


def deidentify(
    source: SlideSource,
    reader: SlideReader,
    staging: Staging,
    settings: Settings,
    key: bytes,
    entry: SlideEntry | None,
    checksum: str,
    found: list[IdentifyingValue] | None = None,
    converted: Converted | None = None,
) -> Deidentified:
    """``found``: ``source_values(source, reader, entry)`` when the caller has them already;
    ``converted``: ``convert_source``'s result when the conversion ran already."""
    pseudonymizer = Pseudonymizer(key)
    if found is None:
        found = source_values(source, reader, entry)
    if converted is None:
        converted = convert_source(source, reader, staging, settings, key, entry, checksum, found)
    names = pseudonyms_for(pseudonymizer, settings, entry, checksum)
    stored = sorted(staging.content.iterdir())
    if converted.stand_ins:
        replace_in_headers(
            converted.conversion.files,
            {stand_in: getattr(names, kind) for stand_in, kind in converted.stand_ins.items()},
        )
    # A stand-in left anywhere would fail the proof like an identifying value.
    left_over = [IdentifyingValue("pseudonym stand-in", value) for value in converted.stand_ins]
    verification = verify_files(
        [(path.name, path) for path in stored],
        [*converted.scanned, *left_over],
        overview_allowed=settings.keep_overview,
    )
    if not verification.passed:
        first = verification.findings[0]
        raise InvalidInput(
            f"{source.display}: de-identification check failed: {first.field} found in the "
            f"converted file {first.file} at byte {first.offset} "
            f"({len(verification.findings)} finding(s)); nothing was stored"
        )
    scanned = converted.scanned
    report = DeidReport(
        source_format=reader.info.format,
        conversion=converted.conversion,
        vendor_fields=[v.field for v in found if v.field not in ("file name", "folder name")],
        file_names=len(source.files),
        date_policy=settings.dates,
        pseudonyms={"case": names.case, "slide": names.slide},
        values_scanned=len(scanned),
        too_short=identifiers.too_short(found),
        verification=verification,
    )
    report.write(staging.deid_dir)
    seal(staging.deid_dir / SEALED_NAME, scanned, key, checksum)
    files = tuple(
        StoredFile(
            name=path.name,
            original=path.name,
            sha256=verification.checksums[path.name],
            size=path.stat().st_size,
        )
        for path in stored
    )
    return Deidentified(_pseudonymous_entry(pseudonymizer, entry, names), files, names, report)


def source_values(
    source: SlideSource, reader: SlideReader, entry: SlideEntry | None
) -> list[IdentifyingValue]:
    """Everything identifying the source carries, and the identifiers its sidecar gives."""
    found = identifiers.from_file_names(source.files)
    found += identifiers.from_properties(reader.info.properties)
    dicom_files = [path for path in source.files if is_dicom(path)]
    if dicom_files:
        targeted = {int(tag) for tag in profile_actions()}
        found += identifiers.from_dicom((_header(path) for path in dicom_files), targeted)
    if entry is not None:
        for name in ("case", "specimen", "block", "slide"):
            value = getattr(entry, name)
            if value:
                found.append(IdentifyingValue(f"sidecar {name}", value))
    return found


def check_sidecar_text(
    fields: Iterable[tuple[str, str]], found: Iterable[IdentifyingValue], sidecar: Path
) -> None:
    """Refuse a slide whose sidecar text repeats one of its identifying values.

    ``fields`` are the sidecar's texts for the slide, by field name (``Sidecar.text_fields``:
    observations, descriptive fields, dataset fields), which are stored and served as
    written; ``found`` are the slide's identifying values (``source_values``: file names,
    vendor fields, DICOM attributes, the sidecar's case, specimen, block and slide). Each
    value is looked for in the spellings the byte check uses (``identifiers.spellings``:
    dates and times spelled every way, values under 5 characters left out), in any case,
    after Unicode compatibility folding. A match raises ``InvalidInput`` naming the field
    and the kind of value (never the value), before anything is stored. The steward's text
    is refused, not rewritten.

    Applies to the ``dicom`` stored form only: with ``original`` the repository keeps the
    source and the sidecar as given (de-identified elsewhere: the vendor fields stay in the
    catalogue and the files, the sidecar's identifiers are stored as written), so repeating
    them in the text would reveal nothing the record does not hold already.
    """
    looked_for = [
        (_folded(value.value), value.field)
        for value in identifiers.spellings(
            value
            for value in found
            if value.field not in _PART_IDENTIFIERS or any(c.isdigit() for c in value.value)
        )
    ]
    hits: dict[str, set[str]] = {}
    for name, text in fields:
        folded = _folded(text)
        for needle, kind in looked_for:
            if needle and needle in folded:
                hits.setdefault(name, set()).add(_kind_of(kind))
    if hits:
        described = "; ".join(
            f"field {name!r} holds {' and '.join(sorted(kinds))}" for name, kinds in hits.items()
        )
        raise InvalidInput(
            f"{sidecar}: sidecar text repeats an identifying value of the slide ({described}); "
            "sidecar text is stored as written, so the slide was refused and nothing was stored"
        )


def _folded(text: str) -> str:
    """Compatibility-folded (full-width letters, ligatures), without invisible format
    characters (zero-width spaces and joiners), case-folded."""
    normal = unicodedata.normalize("NFKC", text)
    return "".join(c for c in normal if unicodedata.category(c) != "Cf").casefold()


def _kind_of(field: str) -> str:
    """What a value is, in words, without the value."""
    if field.startswith("sidecar "):
        return f"the sidecar's {field.removeprefix('sidecar ')} identifier"
    if field in ("file name", "folder name"):
        return f"the source's {field}"
    return f"the source's {field} field"


def pseudonyms_for(
    pseudonymizer: Pseudonymizer, settings: Settings, entry: SlideEntry | None, checksum: str
) -> Pseudonyms:
    """The same case always gets the same pseudonym in one repository; a slide without a
    case is a case of its own (by content)."""
    names, _ = _pseudonyms(pseudonymizer, settings, entry, checksum)
    return names


# A stand-in's code is 12 of these, drawn at random: base32, which spells every pseudonym,
# has none of them, so no pseudonym written beside a stand-in is taken for one. (Another
# header value equal to a stand-in would be replaced too: one chance in 4^12 per value.)
STAND_IN_DIGITS = "0189"


def _pseudonyms(
    pseudonymizer: Pseudonymizer, settings: Settings, entry: SlideEntry | None, checksum: str | None
) -> tuple[Pseudonyms, dict[str, str]]:
    """``pseudonyms_for``, and with ``checksum`` None (not known yet) a name the content
    decides is a stand-in of a pseudonym's length instead: the stand-ins are returned with
    which name each stands for ("case" or "slide")."""
    stand_ins: dict[str, str] = {}

    def source_of(given: str | None) -> str | None:
        if given:
            return given
        return f"content:{checksum}" if checksum is not None else None

    def named(kind: str, source: str | None) -> str:
        if source is not None:
            return pseudonymizer.pseudonym(kind, source)
        stand_in = f"{kind[:1].upper()}-" + "".join(
            secrets.choice(STAND_IN_DIGITS) for _ in range(12)
        )
        stand_ins[stand_in] = kind
        return stand_in

    case_source = source_of(entry.case if entry is not None else None)
    case = named("case", case_source)
    slide = named("slide", source_of(entry.slide if entry is not None else None))
    # A stand-in case has no shift: only sources that are not DICOM are converted before
    # their checksum is known, and their converted headers hold no date of theirs.
    shift = None
    if settings.dates == "shift" and case_source is not None:
        shift = pseudonymizer.date_shift(case_source)
    return Pseudonyms(patient=case, case=case, slide=slide, date_shift=shift), stand_ins


def _pseudonymous_entry(
    pseudonymizer: Pseudonymizer, entry: SlideEntry | None, names: Pseudonyms
) -> SlideEntry | None:
    if entry is None:
        return None
    return dataclasses.replace(
        entry,
        case=names.case if entry.case else None,
        slide=names.slide if entry.slide else None,
        specimen=pseudonymizer.pseudonym("specimen", entry.specimen) if entry.specimen else None,
        block=pseudonymizer.pseudonym("block", entry.block) if entry.block else None,
    )


def _header(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True)
