"""Generate a large, realistic Aperio SVS slide for benchmarks.

A thin command-line wrapper over :mod:`slidebank.samples`: level 0 is the stored JPEG tiles
of a real tiled slide (CMU-1-Small-Region by default) repeated to the requested size, so
compression and file structure are a scanner's. Example::

    python benchmarks/make_slide.py OUT.svs --width 100000 --height 80000 --reuse
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import openslide
from PIL import Image

from slidebank.samples import SvsSpec, Tissue, tissue_from_slide, write_svs
from slidebank.samples.tissue import demo_tissue

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TISSUE = (
    PROJECT_ROOT.parent / "shared" / "testdata" / "slides" / "aperio" / "CMU-1-Small-Region.svs"
)
DEMO_TILE_SIZE = 240
# Lower levels, re-encoded from the downsampled pattern, hold more detail per pixel than
# level 0: with CMU-1 tiles they add about 22% (measured at 25,000 x 20,000 px).
PYRAMID_OVERHEAD = 1.22


@dataclass(frozen=True)
class SlideResult:
    path: Path
    width: int
    height: int
    size_bytes: int
    seconds: float
    reused: bool
    tissue: str


def load_tissue(source: Path | None) -> tuple[Tissue, str]:
    """Tissue from ``source`` (or the default real slide); the bundled IHC image if absent."""
    path = source if source is not None else DEFAULT_TISSUE
    if path.is_file():
        return tissue_from_slide(path), str(path)
    if source is not None:
        raise SystemExit(f"error: tissue slide {source} does not exist")
    return demo_tissue(DEMO_TILE_SIZE), "scikit-image immunohistochemistry (demo_tissue)"


def bytes_per_pixel(tissue: Tissue, quality: int = SvsSpec.quality) -> float:
    """Level-0 bytes per pixel the writer will produce with this tissue."""
    tile = tissue.tile_size
    if tissue.raw_tiles is not None:
        sizes = [len(data) for row in tissue.raw_tiles for data in row]
        return statistics.fmean(sizes) / (tile * tile)
    buffer = io.BytesIO()
    Image.fromarray(tissue.pixels[:tile, :tile]).save(buffer, format="JPEG", quality=quality)
    return len(buffer.getvalue()) / (tile * tile)


def estimate_bytes(tissue: Tissue, width: int, height: int) -> int:
    """About how large a ``width`` x ``height`` slide of this tissue will be on disk."""
    tile = tissue.tile_size
    padded = -(-width // tile) * tile * (-(-height // tile) * tile)
    return int(padded * bytes_per_pixel(tissue) * PYRAMID_OVERHEAD)


def slide_dimensions(path: Path) -> tuple[int, int] | None:
    """Level-0 size as OpenSlide reads it, or None if the file is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with openslide.OpenSlide(str(path)) as slide:
            width, height = slide.dimensions
    except openslide.OpenSlideError:
        return None
    return int(width), int(height)


def _progress_printer(total: int, started: float) -> Callable[[int], None]:
    written = 0
    next_report = 0.1

    def report(count: int) -> None:
        nonlocal written, next_report
        written += count
        if total and written / total >= next_report:
            elapsed = time.perf_counter() - started
            print(
                f"  ... {written / 1e9:.2f} GB written ({elapsed:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            next_report += 0.1

    return report


def make_slide(
    target: Path,
    width: int,
    height: int,
    tissue_source: Path | None = None,
    reuse: bool = False,
    quiet: bool = False,
) -> SlideResult:
    """Write (or, with ``reuse``, keep an existing correctly-sized) slide at ``target``."""
    if reuse and slide_dimensions(target) == (width, height):
        return SlideResult(target, width, height, target.stat().st_size, 0.0, True, "as before")
    tissue, tissue_name = load_tissue(tissue_source)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    progress = None if quiet else _progress_printer(estimate_bytes(tissue, width, height), started)
    write_svs(target, SvsSpec(width, height), tissue, progress)
    seconds = time.perf_counter() - started
    return SlideResult(target, width, height, target.stat().st_size, seconds, False, tissue_name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="SVS file to write")
    parser.add_argument("--width", type=int, default=100_000, help="level-0 width in pixels")
    parser.add_argument("--height", type=int, default=80_000, help="level-0 height in pixels")
    parser.add_argument(
        "--tissue",
        type=Path,
        default=None,
        help=f"real tiled JPEG slide whose tiles are repeated [default: {DEFAULT_TISSUE}, "
        "or scikit-image's IHC image if that is absent]",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep OUT if it exists and OpenSlide reads it with the requested dimensions",
    )
    args = parser.parse_args(argv)
    if args.width < 1 or args.height < 1:
        parser.error("--width and --height must be positive")
    result = make_slide(args.out, args.width, args.height, args.tissue, args.reuse)
    verb = "reused" if result.reused else "wrote"
    print(
        f"{verb} {result.path}: {result.width}x{result.height} px, "
        f"{result.size_bytes:,} bytes ({result.size_bytes / 1e9:.2f} GB, "
        f"{result.size_bytes / 2**30:.2f} GiB) in {result.seconds:.1f} s "
        f"[tissue: {result.tissue}]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
