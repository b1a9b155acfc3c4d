"""Which power-of-two levels a slide lacks, and the DICOM instance a level is written as."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import simplejpeg
from pydicom import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.uid import JPEGBaseline8Bit, VLWholeSlideMicroscopyImageStorage, generate_uid

from slidebank.errors import InvalidInput
from slidebank.geometry import Size
from slidebank.slides.model import Level, SlideInfo
from slidebank.tiles.pyramid import MissingLevel, instance_uid, missing_levels, write_level


def _info(width: int, height: int, downsamples: list[float], tile: Size | None) -> SlideInfo:
    levels = tuple(Level(Size(round(width / d), round(height / d)), d, tile) for d in downsamples)
    return SlideInfo(
        format="dicom",
        vendor=None,
        backend="wsidicom",
        levels=levels,
        mpp=None,
        objective_power=None,
        properties={},
        associated=(),
    )


def test_levels_4x_apart_lack_every_other_power_of_two_down_to_one_tile() -> None:
    info = _info(100_000, 80_000, [1, 4.0003, 16, 64, 256.4], Size(240, 240))
    found = missing_levels(info)
    assert [level.downsample for level in found] == [2, 8, 32, 128]
    half = found[0]
    # Sized as DeepZoom sizes its levels (rounded up), in the stored tiles' size.
    assert half.size == Size(50_000, 40_000)
    assert half.grid == Size(209, 167) and half.frames == 209 * 167
    # 1/512 is 196 x 157 px: one tile, rendered on request, not stored.
    assert all(level.size.width > 240 or level.size.height > 240 for level in found)


def test_a_single_level_slide_lacks_all_until_one_tile() -> None:
    info = _info(2220, 2967, [1], Size(240, 240))
    assert [(lv.downsample, lv.size) for lv in missing_levels(info)] == [
        (2, Size(1110, 1484)),
        (4, Size(555, 742)),
        (8, Size(278, 371)),
    ]


def test_complete_pyramids_and_untiled_or_oblong_tiles_lack_nothing() -> None:
    assert missing_levels(_info(2000, 1000, [1, 2, 4], Size(256, 256))) == []
    assert missing_levels(_info(2000, 1000, [1], None)) == []
    assert missing_levels(_info(2000, 1000, [1], Size(256, 128))) == []


def _template(path: Path, columns: int, rows: int, tile: int) -> None:
    """A level-0 VL Whole Slide Microscopy header, as the ingest writes them (the parts the
    writer reads and changes)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VLWholeSlideMicroscopyImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = VLWholeSlideMicroscopyImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = columns, rows
    ds.Columns = ds.Rows = tile
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 8, 8, 7
    ds.PixelRepresentation, ds.PlanarConfiguration = 0, 0
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.NumberOfFrames = 1
    measures = Dataset()
    measures.PixelSpacing = ["0.00025", "0.0005"]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def test_a_written_level_is_the_dicom_pydicom_would_write(tmp_path: Path) -> None:
    template = tmp_path / "level0.dcm"
    _template(template, 1000, 700, 256)
    level = MissingLevel(2, Size(500, 350), Size(256, 256))
    rng = np.random.default_rng(7)
    tiles = [
        simplejpeg.encode_jpeg(
            rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), quality=80, colorsubsampling="420"
        )
        for _ in range(level.frames)
    ]
    uid = instance_uid("ab" * 32, 2)
    assert uid == instance_uid("ab" * 32, 2) != instance_uid("ab" * 32, 4)
    target = tmp_path / "level2.dcm"
    write_level(
        pydicom.dcmread(template, stop_before_pixels=True),
        target,
        level,
        iter(tiles),
        uid=uid,
        instance_number=7,
        quality=80,
    )

    written = pydicom.dcmread(target)
    assert written.SOPInstanceUID == written.file_meta.MediaStorageSOPInstanceUID == uid
    assert (written.TotalPixelMatrixColumns, written.TotalPixelMatrixRows) == (500, 350)
    assert written.NumberOfFrames == 4 and written.InstanceNumber == 7
    assert list(written.ImageType) == ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    assert written.PhotometricInterpretation == "YBR_FULL_422"  # quality 80: chroma halved
    spacing = written.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == [0.0005, 0.001]
    padded = [t + b"\x00" if len(t) % 2 else t for t in tiles]
    assert list(generate_frames(written.PixelData, number_of_frames=4)) == padded
    # Byte for byte what pydicom writes for the same dataset with its own encapsulation.
    reference = pydicom.dcmread(target, stop_before_pixels=True)
    pixels, offsets, lengths = encapsulate_extended(padded)
    reference.PixelData, reference.ExtendedOffsetTable = pixels, offsets
    reference.ExtendedOffsetTableLengths = lengths
    reference["PixelData"].VR = "OB"
    reference.save_as(tmp_path / "reference.dcm", enforce_file_format=True)
    assert target.read_bytes() == (tmp_path / "reference.dcm").read_bytes()
    assert not list(tmp_path.glob("*.frames"))  # the spool is gone


def test_a_short_tile_stream_writes_nothing(tmp_path: Path) -> None:
    template = tmp_path / "level0.dcm"
    _template(template, 1000, 700, 256)
    level = MissingLevel(2, Size(500, 350), Size(256, 256))
    with pytest.raises(InvalidInput, match="4 tiles expected, 1 rendered"):
        write_level(
            pydicom.dcmread(template, stop_before_pixels=True),
            tmp_path / "out.dcm",
            level,
            iter([b"\xff\xd8\xff\xd9"]),
            uid="1.2",
            instance_number=2,
            quality=80,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["level0.dcm"]
