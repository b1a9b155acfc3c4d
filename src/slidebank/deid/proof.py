"""Checks that a stored slide holds nothing identifying: no identifying value from its source
in any byte of any stored file, and no label or overview instance."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from slidebank.deid.convert import LABEL_TYPES, OVERVIEW_TYPES
from slidebank.deid.identifiers import IdentifyingValue
from slidebank.deid.scan import Finding, ValueScanner


@dataclass
class Verification:
    files: int = 0
    bytes_scanned: int = 0
    findings: list[Finding] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)
    """SHA-256 of each file scanned, by name."""

    @property
    def passed(self) -> bool:
        return not self.findings

    def as_json(self) -> dict[str, object]:
        return {
            "files": self.files,
            "bytes_scanned": self.bytes_scanned,
            "passed": self.passed,
            "findings": [finding.as_json() for finding in self.findings],
        }


def verify_files(
    files: Sequence[tuple[str, Path]],
    values: Sequence[IdentifyingValue],
    *,
    overview_allowed: bool = False,
) -> Verification:
    """Scan ``files`` (name shown in findings, path) for ``values`` and for forbidden images."""
    scanner = ValueScanner(values)
    forbidden = LABEL_TYPES | (set() if overview_allowed else OVERVIEW_TYPES)
    result = Verification()
    for name, path in files:
        result.files += 1
        result.bytes_scanned += path.stat().st_size
        findings, checksum = scanner.scan(path, name)
        result.findings.extend(findings)
        result.checksums[name] = checksum
        kinds = _image_types(path)
        if kinds is None:
            if name.endswith(".dcm"):
                result.findings.append(Finding(name, 0, "not a readable DICOM file", "-"))
            continue
        for kind in sorted(kinds & forbidden):
            result.findings.append(Finding(name, 0, f"ImageType {kind} instance", "-"))
    return result


def _image_types(path: Path) -> set[str] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ImageType"])
    except Exception:  # not DICOM: the byte scan above still covered it
        return None
    return {str(value).upper() for value in dataset.get("ImageType", [])}
