"""wsidicom backend: DICOM WSI as a folder or a set of instance files (with or without .dcm)."""

from __future__ import annotations

import os
import threading
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import pydicom
from PIL import Image

from slidebank.errors import CorruptSlide, NotFound
from slidebank.geometry import Mpp, Point, Size
from slidebank.slides.dicom_frames import FrameTable, frame_table
from slidebank.slides.model import AssociatedImageInfo, Level, RawTile, SlideInfo
from slidebank.slides.reader import SlideReader
from slidebank.slides.sniff import is_dicom

# DICOM transfer syntaxes whose frames are standalone streams a browser or decoder takes.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "image/jpeg",  # JPEG extended
    "1.2.840.10008.1.2.4.90": "image/jp2",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "image/jp2",  # JPEG 2000
}


class WsiDicomReader(SlideReader):
    """Reads a DICOM VL Whole Slide Microscopy Image made of one or more instance files."""

    name = "wsidicom"

    def __init__(self, files: tuple[Path, ...]) -> None:
        super().__init__(files)
        from wsidicom import WsiDicom

        try:
            with warnings.catch_warnings():
                # pydicom warns about each off-standard value; failures are reported below.
                warnings.simplefilter("ignore")
                self._wsi = WsiDicom.open(list(files))
        # wsidicom's errors share no base class beyond Exception, and malformed files also
        # surface as ValueError, KeyError or AttributeError from pydicom underneath.
        except Exception as exc:
            raise CorruptSlide(
                f"{files[0].parent}: not a readable DICOM whole-slide image ({exc})"
            ) from exc
        self._levels = list(self._wsi.levels)
        self._frames_lock = threading.Lock()
        self._raw_sources: dict[int, tuple[str | None, tuple[int, FrameTable, int] | None]] = {}
        self._open_fds: list[int] = []
        self._uid_paths: dict[str, Path] | None = None
        if not self._levels:
            self._wsi.close()
            raise CorruptSlide(f"{files[0].parent}: DICOM files hold no pyramid level")

    @classmethod
    def probe(cls, files: tuple[Path, ...]) -> bool:
        try:
            import wsidicom  # noqa: F401
        except ImportError:
            return False
        return all(is_dicom(path) for path in files)

    @cached_property
    def info(self) -> SlideInfo:
        base = self._levels[0]
        levels = tuple(
            Level(
                Size(level.size.width, level.size.height),
                base.size.width / level.size.width,
                Size(level.tile_size.width, level.tile_size.height),
            )
            for level in self._levels
        )
        mpp = Mpp(float(base.mpp.width), float(base.mpp.height)) if base.mpp else None
        associated: list[AssociatedImageInfo] = []
        for name, reader in (("label", self._wsi.read_label), ("macro", self._wsi.read_overview)):
            try:
                image = reader()
            except Exception:  # noqa: S112 - wsidicom raises various errors for "absent"
                continue
            associated.append(AssociatedImageInfo(name, Size(*image.size)))
        thumbnail = self._thumbnail_size()
        if thumbnail is not None:
            associated.append(AssociatedImageInfo("thumbnail", thumbnail))
        return SlideInfo(
            format="dicom",
            vendor=self._manufacturer(),
            levels=levels,
            mpp=mpp,
            objective_power=self._objective_power(),
            associated=tuple(associated),
            properties=self._properties(),
            backend=self.name,
        )

    def _manufacturer(self) -> str | None:
        equipment = self._wsi.metadata.equipment
        return str(equipment.manufacturer) if equipment and equipment.manufacturer else None

    def _objective_power(self) -> float | None:
        dataset = self._base_dataset
        for optical in dataset.get("OpticalPathSequence", []) or []:
            value = optical.get("ObjectiveLensPower")
            if value:
                return float(value)
        return None

    @cached_property
    def _base_dataset(self) -> Any:
        """The pydicom dataset of the base level's first instance."""
        # WsiDataset is a pydicom Dataset (wsidicom >= 0.21 dropped ``as_dataset``).
        return self._levels[0].default_instance.dataset

    def _properties(self) -> dict[str, str]:
        base = self._levels[0]
        image_data: Any = base.default_instance.image_data
        dataset = self._base_dataset
        props: dict[str, str] = {
            "dicom.transfer-syntax": str(image_data.transfer_syntax),
            "dicom.photometric-interpretation": str(image_data.photometric_interpretation),
            "dicom.samples-per-pixel": str(image_data.samples_per_pixel),
            "dicom.optical-paths": ",".join(str(p) for p in base.optical_paths),
            "dicom.focal-planes": ",".join(str(z) for z in base.focal_planes),
        }
        for keyword in ("Manufacturer", "ManufacturerModelName", "SoftwareVersions"):
            value = dataset.get(keyword)
            if value not in (None, ""):
                props[f"dicom.{keyword}"] = str(value)
        return props

    def read_region(self, location: Point, level: int, size: Size) -> Image.Image:
        self._check_region(location, level, size)
        lvl = self.info.levels[level]
        x0 = round(location.x / lvl.downsample)
        y0 = round(location.y / lvl.downsample)
        # wsidicom refuses regions that cross the level's edge; OpenSlide's contract (which
        # this interface keeps) is to return them, blank outside the image.
        left, top = max(x0, 0), max(y0, 0)
        right = min(x0 + size.width, lvl.size.width)
        bottom = min(y0 + size.height, lvl.size.height)
        if right <= left or bottom <= top:
            return Image.new("RGB", (size.width, size.height), (255, 255, 255))
        try:
            region = self._wsi.read_region(
                (left, top), self._levels[level].level, (right - left, bottom - top)
            )
        except Exception as exc:
            raise CorruptSlide(
                f"{self.files[0].parent}: cannot read {size.width}x{size.height} at "
                f"{tuple(location)}, level {level}: {exc}"
            ) from exc
        # A copy even when it is RGB already: for a region inside one tile, wsidicom hands
        # out the decoded tile that its cache keeps, and callers may draw on what they get.
        rgb: Image.Image = region.convert("RGB")
        if rgb.size == (size.width, size.height):
            return rgb  # inside the level: no blank margin (and no second full-size image)
        canvas = Image.new("RGB", (size.width, size.height), (255, 255, 255))
        canvas.paste(rgb, (left - x0, top - y0))
        return canvas

    def _thumbnail_size(self) -> Size | None:
        """The largest THUMBNAIL instance of the pyramid (a scanner's own), if any."""
        thumbnails: Any = getattr(self._wsi.pyramid, "thumbnails", None)
        sizes = [Size(t.size.width, t.size.height) for t in (thumbnails or [])]
        return max(sizes, key=lambda size: size.area) if sizes else None

    def associated_image(self, name: str) -> Image.Image:
        thumbnail = self._thumbnail_size()
        readers = {
            "label": self._wsi.read_label,
            "macro": self._wsi.read_overview,
            "thumbnail": lambda: self._wsi.read_thumbnail(
                (thumbnail.width, thumbnail.height) if thumbnail else 512
            ),
        }
        if name not in readers or name not in self.info.associated_names:
            raise NotFound(f"{self.files[0].parent}: no associated image {name!r}")
        image: Image.Image = readers[name]()
        return image.convert("RGB")  # type: ignore[no-any-return]

    def read_tile(self, level: int, column: int, row: int) -> Image.Image:
        self._check_tile(level, column, row)
        try:
            tile: Image.Image = self._wsi.read_tile(self._levels[level].level, (column, row))
        except Exception as exc:
            raise CorruptSlide(
                f"{self.files[0].parent}: tile ({column}, {row}) at level {level}: {exc}"
            ) from exc
        return tile.convert("RGB")

    def read_raw_tile(self, level: int, column: int, row: int) -> RawTile | None:
        self._check_tile(level, column, row)
        media_type, frames = self._raw_source(level)
        if media_type is None:
            return None
        try:
            if frames is not None:
                fd, table, columns = frames
                data = table.read(fd, row * columns + column)
            else:
                data = self._wsi.read_encoded_tile(self._levels[level].level, (column, row))
        except Exception as exc:
            raise CorruptSlide(
                f"{self.files[0].parent}: tile ({column}, {row}) at level {level}: {exc}"
            ) from exc
        if media_type == "image/jpeg" and data.endswith(b"\xff\xd9\x00"):
            # DICOM pads odd-length frames to even with one zero byte after EOI; the JPEG
            # stream itself is what the scanner wrote.
            data = data[:-1]
        return RawTile(data=bytes(data), media_type=media_type)

    def _raw_source(self, level: int) -> tuple[str | None, tuple[int, FrameTable, int] | None]:
        """A level's media type as stored, and the open file, frame table and tile columns
        of a level stored as one TILED_FULL instance with one frame per tile (else None),
        found once: this is on the path of every passthrough tile, which reads it without
        the lock.

        Frames are then read with one ``pread`` each, as stored: wsidicom's
        ``read_encoded_tile`` decodes, crops and re-encodes tiles at the right and bottom
        edges, which would neither be passthrough nor fast."""
        found = self._raw_sources.get(level)
        if found is not None:
            return found
        with self._frames_lock:
            found = self._raw_sources.get(level)
            if found is None:
                image_data: Any = self._levels[level].default_instance.image_data
                media_type = FRAME_MEDIA_TYPES.get(str(image_data.transfer_syntax))
                found = self._raw_sources[level] = (media_type, self._frame_table_of(level))
            return found

    def has_every_tile(self, level: int) -> bool:
        return self._raw_source(level)[1] is not None

    def _frame_table_of(self, level: int) -> tuple[int, FrameTable, int] | None:
        instance: Any = self._levels[level].default_instance
        dataset = instance.dataset
        grid = self.info.levels[level].grid
        if grid is None or len(instance.datasets) != 1:
            return None
        if dataset.get("DimensionOrganizationType", "TILED_FULL") != "TILED_FULL":
            return None
        if int(dataset.get("NumberOfFrames") or 1) != grid.area:
            return None
        path = self._paths_by_uid().get(str(dataset.SOPInstanceUID))
        if path is None:
            return None
        table = frame_table(path)
        if len(table) != grid.area:
            return None
        fd = os.open(path, os.O_RDONLY)
        self._open_fds.append(fd)
        return fd, table, grid.width

    def _paths_by_uid(self) -> dict[str, Path]:
        if self._uid_paths is None:
            found = {}
            for path in self.files:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    header = pydicom.dcmread(
                        path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]
                    )
                found[str(header.SOPInstanceUID)] = path
            self._uid_paths = found
        return self._uid_paths

    def close(self) -> None:
        with self._frames_lock:
            for fd in self._open_fds:
                os.close(fd)
            self._open_fds.clear()
            self._raw_sources.clear()
        self._wsi.close()
