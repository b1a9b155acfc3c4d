"""Nuclei found on a slide by colour alone, for the demo's sample annotations.

Nuclei stained by hematoxylin are blue against DAB's brown and the pale background:
pixels of tissue that are blue in CIELAB (b* below 2; tried against colour deconvolution,
which also took dark DAB), opened to split touching blobs, and each blob of a nucleus's
size becomes a polygon traced along its edge. Crude next to a trained model, but computed
from the slide's real pixels in seconds, so the demo's viewer, exports and agreement have
real shapes to show without a model download.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from slidebank.errors import InvalidInput
from slidebank.geometry import Point, Size
from slidebank.slides.reader import SlideReader

TILE = 2048
MIN_AREA, MAX_AREA = 60, 3000  # px² at level 0: blobs outside are debris or clumps
BLUE_B = 2.0  # CIELAB b* below which a pixel counts as hematoxylin's blue
DARKER_L = 85.0  # and L* below which it is stained at all
BACKGROUND = 220  # mean RGB above which a pixel is glass


def find_nuclei(reader: SlideReader, tile: int = TILE) -> Iterator[dict[str, Any]]:
    """GeoJSON features (QuPath detections of class "Nucleus") in level-0 pixels, tile by
    tile; a nucleus cut by a tile's edge is left out rather than counted twice."""
    try:
        import skimage.color
        import skimage.measure
        import skimage.morphology
    except ImportError as exc:  # pragma: no cover - the demo extra installs it
        raise InvalidInput(
            "sample nuclei need scikit-image (pip install 'slidebank[demo]')"
        ) from exc
    # scikit-image's functions carry no type hints.
    color: Any = skimage.color
    measure: Any = skimage.measure
    morphology: Any = skimage.morphology
    width, height = reader.info.dimensions
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            size = Size(min(tile, width - left), min(tile, height - top))
            rgb = np.asarray(reader.read_region(Point(left, top), 0, size).convert("RGB"))
            tissue = rgb.mean(axis=2) < BACKGROUND
            if not tissue.any():
                continue
            lab = color.rgb2lab(rgb)
            blue = tissue & (lab[..., 2] < BLUE_B) & (lab[..., 0] < DARKER_L)
            labels = measure.label(morphology.opening(blue, morphology.disk(2)))
            for blob in measure.regionprops(labels):
                if not MIN_AREA <= blob.area <= MAX_AREA:
                    continue
                y0, x0, y1, x1 = blob.bbox
                if y0 == 0 or x0 == 0 or y1 == size.height or x1 == size.width:
                    continue
                outline = measure.find_contours(np.pad(blob.image, 1).astype(np.uint8), 0.5)
                if not outline:
                    continue
                ring = measure.approximate_polygon(max(outline, key=len), tolerance=0.7)
                if len(ring) < 4:
                    continue
                coordinates = [
                    [round(left + x0 + col - 1, 1), round(top + y0 + row - 1, 1)]
                    for row, col in ring
                ]
                yield {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [coordinates]},
                    "properties": {
                        "objectType": "detection",
                        "classification": {"name": "Nucleus", "color": [40, 60, 200]},
                        "measurements": {"Area px2": float(blob.area)},
                    },
                }
