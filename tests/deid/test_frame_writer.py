"""The batched pixel-data writer against wsidicom's own, on a real SVS: the same frames in
the same items at the same offsets, and an Extended Offset Table whose lengths are the
standard's."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import generate_frames, get_frame
from pydicom.uid import JPEGBaseline8Bit

from slidebank.deid import convert
from slidebank.deid.frame_writer import BatchPixelDataWriter, BatchPyramidFileWriter


def _write_pyramid(source: Path, target: Path, *, batched: bool) -> list[pydicom.Dataset]:
    from wsidicom.file.file_writer import PyramidFileWriter
    from wsidicom.file.io import OffsetTableType
    from wsidicom.metadata import CallableUidGenerator

    # Imported as the ingest imports it: wsidicomizer makes pydicom strict for the whole
    # process on import, which would change how later tests in this worker read DICOM.
    with convert._pydicom_validation_kept():
        from wsidicomizer import WsiDicomizer

    writer = BatchPyramidFileWriter if batched else PyramidFileWriter
    target.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with WsiDicomizer.open(source, include_confidential=False) as wsi:
            paths = writer(
                pyramid=wsi.pyramids[0],
                output_path=target,
                uid_generator=CallableUidGenerator(),
                max_threads=1,
                offset_table=OffsetTableType.EXTENDED,
                add_missing_levels=False,
                chunk_size=32,
            ).write()
    datasets = [pydicom.dcmread(str(path)) for path in paths]
    return sorted(datasets, key=lambda dataset: -int(dataset.TotalPixelMatrixColumns))


def test_frames_go_into_the_items_and_offsets_wsidicom_writes(
    tmp_path: Path, cmu_small: Path
) -> None:
    ours = _write_pyramid(cmu_small, tmp_path / "batched", batched=True)
    theirs = _write_pyramid(cmu_small, tmp_path / "wsidicom", batched=False)
    assert len(ours) == len(theirs) >= 1
    for mine, reference in zip(ours, theirs, strict=True):
        count = int(mine.NumberOfFrames)
        assert count == int(reference.NumberOfFrames) > 1
        assert mine.PixelData == reference.PixelData
        assert mine.ExtendedOffsetTable == reference.ExtendedOffsetTable
        frames = list(generate_frames(mine.PixelData, number_of_frames=count))
        # The lengths are each frame's item value length (PS3.5 A.4), so a reader that
        # takes them gets the frame and nothing of the next item.
        tables = (mine.ExtendedOffsetTable, mine.ExtendedOffsetTableLengths)
        for index in (0, 1, count // 2, count - 1):
            frame = get_frame(mine.PixelData, index, extended_offsets=tables)
            assert frame == frames[index]
            assert frame.startswith(b"\xff\xd8") and frame.rstrip(b"\x00").endswith(b"\xff\xd9")


def test_each_frame_is_one_item_of_even_length() -> None:
    from wsidicom.file.io import OffsetTableType
    from wsidicom.file.io.wsidicom_io import WsiDicomIO

    stream = WsiDicomIO(io.BytesIO(), transfer_syntax=JPEGBaseline8Bit)
    writer = BatchPixelDataWriter(stream, OffsetTableType.EXTENDED, JPEGBaseline8Bit)
    positions: list[int] = [7]
    stream.write(b"x" * 10)
    assert writer.write_frames([b"abc", b"defg", b""], positions) == 3
    assert positions == [7, 10, 22, 34]
    written = stream.stream.getvalue()[10:]  # type: ignore[attr-defined]
    assert written == (
        b"\xfe\xff\x00\xe0\x04\x00\x00\x00abc\x00"
        b"\xfe\xff\x00\xe0\x04\x00\x00\x00defg"
        b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
    )


def test_frames_out_of_order_are_refused_before_the_table_is_written() -> None:
    from wsidicom.file.io.wsidicom_io import WsiDicomIO

    from slidebank.deid.frame_writer import BlockEotWriter

    stream = WsiDicomIO(io.BytesIO(), transfer_syntax=JPEGBaseline8Bit)
    table = BlockEotWriter(stream)
    table.reserve(2)
    before = stream.stream.getvalue()  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="out of order"):
        table.write(100, [300, 200], 400)
    assert stream.stream.getvalue() == before  # type: ignore[attr-defined]
