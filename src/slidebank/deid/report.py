"""The de-identification report stored with each slide: what was removed or replaced, and
how the result was checked. It names fields, never their values."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidebank.deid.convert import Conversion
from slidebank.deid.proof import Verification

REPORT_NAME = "report.json"


@dataclass
class DeidReport:
    source_format: str
    conversion: Conversion
    vendor_fields: list[str]
    """Identifying vendor fields of the source, none of which were carried over."""
    file_names: int
    date_policy: str
    pseudonyms: dict[str, str]
    values_scanned: int
    too_short: list[str]
    verification: Verification
    checked_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def as_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "stored_form": "DICOM VL Whole Slide Microscopy Image",
            "source_format": self.source_format,
            "method": self.conversion.method,
            "images_left_out": self.conversion.excluded,
            "dicom_profile": self.conversion.profile.as_json(),
            "vendor_fields_not_carried": sorted(set(self.vendor_fields)),
            "file_names_replaced": self.file_names,
            "dates": self.date_policy,
            "pseudonyms": self.pseudonyms,
            "check": {
                "checked_at": self.checked_at,
                "identifying_values": self.values_scanned,
                "too_short_to_scan": self.too_short,
                **self.verification.as_json(),
            },
        }

    def write(self, folder: Path) -> Path:
        path = folder / REPORT_NAME
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")
        return path


def read_report(folder: Path) -> dict[str, Any] | None:
    path = folder / REPORT_NAME
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
