"""Describe step: the scan's facts, from the reader, in the catalogue's shape."""

from __future__ import annotations

from slidebank.catalog.entries import ScanEntry, StoredFile
from slidebank.slides.reader import SlideReader

MAX_PROPERTY_CHARS = 4096


def describe(
    reader: SlideReader, checksum: str, files: tuple[StoredFile, ...], source_name: str
) -> ScanEntry:
    info = reader.info
    return ScanEntry(
        format=info.format,
        vendor=info.vendor,
        backend=info.backend,
        width=info.dimensions.width,
        height=info.dimensions.height,
        levels=[
            {
                "width": level.size.width,
                "height": level.size.height,
                "downsample": level.downsample,
                "tile_width": level.tile_size.width if level.tile_size else None,
                "tile_height": level.tile_size.height if level.tile_size else None,
            }
            for level in info.levels
        ],
        mpp_x=info.mpp.x if info.mpp else None,
        mpp_y=info.mpp.y if info.mpp else None,
        objective_power=info.objective_power,
        associated=[
            {"name": image.name, "width": image.size.width, "height": image.size.height}
            for image in info.associated
        ],
        # Vendor properties can hold long free text; keep the catalogue row bounded.
        properties={key: value[:MAX_PROPERTY_CHARS] for key, value in info.properties.items()},
        checksum=checksum,
        storage_key=checksum,
        files=files,
        source_name=source_name,
    )
