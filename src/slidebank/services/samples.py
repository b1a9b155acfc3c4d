"""Use case: make sample slides (for the demo, tests and benchmarks)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from slidebank.samples import SvsSpec, tissue_from_slide, write_svs
from slidebank.samples.tissue import demo_tissue

DEMO_FILE = "demo-ihc-breast.svs"


def make_sample_slide(
    target: Path,
    width: int,
    height: int,
    tissue_source: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    tissue = tissue_from_slide(tissue_source) if tissue_source else demo_tissue(256)
    return write_svs(target, SvsSpec(width, height), tissue, progress)


def demo_slides(home: Path) -> Path:
    """The demo slide, generated once into ``home/samples``."""
    folder = home / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / DEMO_FILE
    if not target.exists():
        make_sample_slide(target, 8192, 6144)
    return folder


def demo_sidecar(home: Path) -> Path:
    """Sidecar metadata for the demo slide, so the catalogue shows the whole hierarchy."""
    path = home / "samples-metadata.json"
    record = {
        "dataset": {
            "title": "Slidebank demo",
            "version": "1",
            "licence": "CC0-1.0",
            "description": "A generated slide made of the IHC image that scikit-image ships.",
        },
        "slides": [
            {
                "file": DEMO_FILE,
                "case": {"id": "DEMO-001", "species": "Homo sapiens"},
                "specimen": {
                    "id": "A",
                    "anatomical_site": "breast",
                    "sampling": "excision",
                    "observations": [
                        {
                            "kind": "diagnosis",
                            "code": "413448000",
                            "scheme": "SCT",
                            "meaning": "Invasive ductal carcinoma of breast",
                        }
                    ],
                },
                "block": {"id": "A1"},
                "slide": {
                    "id": "A1-1",
                    "staining": {"compound": "DAB", "target": "Ki-67", "method": "IHC"},
                },
            }
        ],
    }
    path.write_text(json.dumps(record, indent=2))
    return path
