"""Use case: make sample slides (for the demo, tests and benchmarks)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

from slidebank.samples import SvsSpec, demo_tissue, tissue_from_slide, write_svs
from slidebank.services.repository import Repository
from slidebank.slides.registry import open_slide

DEMO_FILE = "demo-colon-tma-fhl2.svs"


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
            "description": (
                "A generated tissue microarray whose cores are the colon IHC image that "
                "scikit-image ships (FHL2 revealed with DAB, hematoxylin counterstain)."
            ),
        },
        "slides": [
            {
                "file": DEMO_FILE,
                "case": {"id": "DEMO-001", "species": "Homo sapiens"},
                "specimen": {
                    "id": "A",
                    "anatomical_site": "colon",
                    "sampling": "tissue microarray cores",
                    "observations": [
                        {"kind": "description", "text": "Colonic glands with FHL2 expression"}
                    ],
                },
                "block": {"id": "TMA-1"},
                "slide": {
                    "id": "TMA-1-1",
                    "staining": {"compound": "DAB", "target": "FHL2", "method": "IHC"},
                },
            }
        ],
    }
    path.write_text(json.dumps(record, indent=2))
    return path


DEMO_NUCLEI_SET = "Nuclei (demo detector)"


def demo_annotations(repository: Repository, slide_id: str) -> int:
    """The demo slide's sample annotations: nuclei found by colour on its pixels, imported
    as an automatic set through the same import users run (once: 0 when already there)."""
    from slidebank.access.policy import COMMAND_LINE
    from slidebank.samples.nuclei import find_nuclei
    from slidebank.services import annotating

    existing = {s["name"] for s in annotating.list_sets(repository, COMMAND_LINE, slide_id)}
    if DEMO_NUCLEI_SET in existing:
        return 0
    reader = open_slide(demo_slides(repository.settings.home) / DEMO_FILE)
    try:
        features = list(find_nuclei(reader))
    finally:
        reader.close()
    document = json.dumps({"type": "FeatureCollection", "features": features}).encode()
    report = annotating.import_annotations(
        repository,
        COMMAND_LINE,
        slide_id,
        io.BytesIO(document),
        "demo-nuclei.geojson",
        set_name=DEMO_NUCLEI_SET,
        kind="automatic",
        author="slidebank demo: hematoxylin threshold (scikit-image)",
    )
    return report.imported
