"""Sidecar metadata (CSV or JSON) describing the slides of an ingest, matched by file name.

The format is documented in the README ("Sidecar metadata"). Every error names the sidecar,
the row or record, and the field.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slidebank.catalog.entries import DatasetEntry, ObservationEntry, SlideEntry
from slidebank.errors import InvalidInput

CSV_COLUMNS = (
    "file",
    "case",
    "species",
    "specimen",
    "anatomical_site",
    "sampling",
    "block",
    "slide",
    "stain_compound",
    "stain_target",
    "stain_method",
    "diagnosis_text",
    "diagnosis_code",
    "diagnosis_scheme",
    "diagnosis_meaning",
    "finding",
    "description",
)
Text = str | None
SidecarKind = Literal["csv", "json"]

# Free-text fields of a slide entry besides observations: the entry's attribute, its CSV
# column (the same name) and its JSON path.
_DESCRIPTIVE_FIELDS = {
    "species": "case.species",
    "anatomical_site": "specimen.anatomical_site",
    "sampling": "specimen.sampling",
    "stain_compound": "slide.staining.compound",
    "stain_target": "slide.staining.target",
    "stain_method": "slide.staining.method",
}
_OBSERVATION_PARTS = ("text", "meaning", "code", "scheme")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, str_max_length=4096)


class ObservationModel(_Strict):
    kind: Literal["diagnosis", "finding", "description"]
    code: Text = None
    scheme: Text = None
    meaning: Text = None
    text: Text = None


class CaseModel(_Strict):
    id: str = Field(min_length=1, max_length=128)
    species: Text = None
    observations: list[ObservationModel] = Field(default_factory=list, max_length=1000)


class SpecimenModel(_Strict):
    id: str = Field(min_length=1, max_length=128)
    anatomical_site: Text = None
    sampling: Text = None
    observations: list[ObservationModel] = Field(default_factory=list, max_length=1000)


class BlockModel(_Strict):
    id: str = Field(min_length=1, max_length=128)


class StainingModel(_Strict):
    compound: Text = None
    target: Text = None
    method: Text = None


class SlideModel(_Strict):
    id: Text = None
    staining: StainingModel = Field(default_factory=StainingModel)
    observations: list[ObservationModel] = Field(default_factory=list, max_length=1000)


class RecordModel(_Strict):
    file: str = Field(min_length=1, max_length=1024)
    case: CaseModel | None = None
    specimen: SpecimenModel | None = None
    block: BlockModel | None = None
    slide: SlideModel = Field(default_factory=SlideModel)


class DatasetModel(_Strict):
    title: Text = None
    version: Text = None
    licence: Text = None
    description: Text = None


class SidecarModel(_Strict):
    dataset: DatasetModel | None = None
    slides: list[RecordModel] = Field(max_length=1_000_000)


@dataclass
class Sidecar:
    """Parsed sidecar: entries by file name, and optional dataset fields."""

    path: Path
    entries: dict[str, SlideEntry] = field(default_factory=dict)
    dataset: DatasetModel | None = None
    used: dict[str, str] = field(default_factory=dict)
    """Entry name → the slide it was given to."""
    kind: SidecarKind = "json"

    def entry_for(self, source: str, *names: str) -> SlideEntry | None:
        """The entry for the slide ``source``, found under one of its ``names``.

        Entries are matched by file name, so two slides with the same name in different
        folders would silently share one; the second is refused instead.
        """
        for name in names:
            if name in self.entries:
                first = self.used.setdefault(name, source)
                if first != source:
                    raise InvalidInput(
                        f"{self.path}: entry {name!r} matches two slides ({first} and "
                        f"{source}); ingest them separately or give the files unique names"
                    )
                return self.entries[name]
        return None

    def unused(self) -> list[str]:
        return sorted(set(self.entries) - set(self.used))

    def text_fields(self, entry: SlideEntry | None) -> list[tuple[str, str]]:
        """Every text the sidecar gives for one slide, besides its identifiers (case,
        specimen, block, slide, which ingest replaces by pseudonyms): the dataset's fields,
        the descriptive fields and every part of every observation. Each comes with its
        field's name as the sidecar spells it (CSV column, or JSON path as in the errors of
        ``load_sidecar``); these texts are stored as written."""
        fields: list[tuple[str, str]] = []
        if self.dataset is not None:
            for name in ("title", "version", "licence", "description"):
                value = getattr(self.dataset, name)
                if value:
                    fields.append((f"dataset.{name}", value))
        if entry is None:
            return fields
        csv_names = self.kind == "csv"
        for name, json_path in _DESCRIPTIVE_FIELDS.items():
            value = getattr(entry, name)
            if value:
                fields.append((name if csv_names else json_path, value))
        levels = (
            ("case", entry.case_observations),
            ("specimen", entry.specimen_observations),
            ("slide", entry.slide_observations),
        )
        for level, observations in levels:
            for index, observation in enumerate(observations):
                for part in _OBSERVATION_PARTS:
                    value = getattr(observation, part)
                    if not value:
                        continue
                    if not csv_names:
                        name = f"{level}.observations.{index}.{part}"
                    elif observation.kind == "diagnosis":
                        name = f"diagnosis_{part}"
                    else:
                        name = observation.kind  # the 'finding' or 'description' column
                    fields.append((name, value))
        return fields

    def dataset_entry(self, short_name: str) -> DatasetEntry:
        given = self.dataset or DatasetModel()
        return DatasetEntry(
            short_name=short_name,
            title=given.title,
            version=given.version,
            licence=given.licence,
            description=given.description,
        )


def load_sidecar(path: Path, max_bytes: int) -> Sidecar:
    """Read a CSV or JSON sidecar (by content: JSON starts with ``{``)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InvalidInput(f"{path}: sidecar is {size:,} bytes; the limit is {max_bytes:,}")
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: sidecar is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read sidecar ({exc.strerror or exc})") from exc
    if text.lstrip().startswith("{"):
        return _from_json(path, text)
    return _from_csv(path, text)


def _from_json(path: Path, text: str) -> Sidecar:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}") from exc
    try:
        model = SidecarModel.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {_first_error(exc)}") from exc
    sidecar = Sidecar(path=path, dataset=model.dataset, kind="json")
    for index, record in enumerate(model.slides):
        _add(sidecar, record.file, _entry_from_record(record), f"record {index + 1}")
    return sidecar


def _from_csv(path: Path, text: str) -> Sidecar:
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "file" not in columns:
        raise InvalidInput(f"{path}: CSV sidecar needs a 'file' column (found: {columns})")
    unknown = sorted(set(columns) - set(CSV_COLUMNS))
    if unknown:
        raise InvalidInput(
            f"{path}: unknown CSV column(s) {', '.join(unknown)}; known: {', '.join(CSV_COLUMNS)}"
        )
    sidecar = Sidecar(path=path, kind="csv")
    for line, row in enumerate(reader, start=2):
        values = {key.strip(): (value or "").strip() or None for key, value in row.items() if key}
        if None in row:
            raise InvalidInput(f"{path}: line {line} has more fields than the header")
        file_name = values.get("file")
        if not file_name:
            raise InvalidInput(f"{path}: line {line}: field 'file' is empty")
        if any(len(value) > 4096 for value in values.values() if value):
            raise InvalidInput(f"{path}: line {line}: a field is longer than 4096 characters")
        _add(sidecar, file_name, _entry_from_row(values, f"{path}: line {line}"), f"line {line}")
    return sidecar


def _add(sidecar: Sidecar, file_name: str, entry: SlideEntry, where: str) -> None:
    name = Path(file_name).name
    if name in sidecar.entries:
        raise InvalidInput(f"{sidecar.path}: {where}: file {name!r} is described twice")
    sidecar.entries[name] = entry


def _entry_from_row(values: dict[str, Any], where: str) -> SlideEntry:
    diagnosis = None
    if any(values.get(f"diagnosis_{part}") for part in ("text", "code", "meaning")):
        if values.get("diagnosis_code") and not values.get("diagnosis_scheme"):
            raise InvalidInput(f"{where}: field 'diagnosis_scheme' is needed with a code")
        diagnosis = ObservationEntry(
            kind="diagnosis",
            code=values.get("diagnosis_code"),
            scheme=values.get("diagnosis_scheme"),
            meaning=values.get("diagnosis_meaning"),
            text=values.get("diagnosis_text"),
        )
    slide_observations = tuple(
        ObservationEntry(kind=kind, text=values[kind])  # type: ignore[arg-type]
        for kind in ("finding", "description")
        if values.get(kind)
    )
    has_case = values.get("case") is not None
    if not has_case and (values.get("specimen") or values.get("block")):
        raise InvalidInput(f"{where}: field 'case' is needed when specimen or block is given")
    specimen_observations = (diagnosis,) if diagnosis and has_case else ()
    if diagnosis and not has_case:
        slide_observations = (diagnosis, *slide_observations)
    return SlideEntry(
        case=values.get("case"),
        species=values.get("species"),
        specimen=values.get("specimen"),
        anatomical_site=values.get("anatomical_site"),
        sampling=values.get("sampling"),
        block=values.get("block"),
        slide=values.get("slide"),
        stain_compound=values.get("stain_compound"),
        stain_target=values.get("stain_target"),
        stain_method=values.get("stain_method"),
        specimen_observations=specimen_observations,
        slide_observations=slide_observations,
    )


def _entry_from_record(record: RecordModel) -> SlideEntry:
    def observations(items: list[ObservationModel]) -> tuple[ObservationEntry, ...]:
        return tuple(ObservationEntry(**item.model_dump()) for item in items)

    return SlideEntry(
        case=record.case.id if record.case else None,
        species=record.case.species if record.case else None,
        specimen=record.specimen.id if record.specimen else None,
        anatomical_site=record.specimen.anatomical_site if record.specimen else None,
        sampling=record.specimen.sampling if record.specimen else None,
        block=record.block.id if record.block else None,
        slide=record.slide.id,
        stain_compound=record.slide.staining.compound,
        stain_target=record.slide.staining.target,
        stain_method=record.slide.staining.method,
        case_observations=observations(record.case.observations) if record.case else (),
        specimen_observations=(
            observations(record.specimen.observations) if record.specimen else ()
        ),
        slide_observations=observations(record.slide.observations),
    )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    return f"field {location}: {error['msg']}"
