"""Big imports decoded in worker processes while the calling process writes.

Why processes: decoding a million cells (JSON, geometry, checks, WKB) is Python work that
holds the GIL, and so is binding each row for SQLite; in one interpreter the two run one
after the other (about 40,000 cells/s; threading them made it slower). Here the calling
process only cuts the file into pieces (``PieceReader.pieces``: a vectorised scan, no
decoding), numbers the prepared rows and writes them; each worker decodes a piece, checks
it (``annotations.checking``) and computes its row form (``stored_rows.prepare``).

Results are taken in file order, so numbering, classes, counts and the first error are
those of reading the file in one process. Workers are started fresh for each import
(``spawn``: a server's threads and open connections are not copied into them) and stopped
when it ends, fails or is abandoned.
"""

from __future__ import annotations

import gc
import multiprocessing
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import BinaryIO

from slidebank.annotations.checking import CheckReport, Outside, checked
from slidebank.annotations.formats.base import ImportLimits, LabelStyle, Piece, PieceReader
from slidebank.annotations.formats.registry import READERS
from slidebank.annotations.stored_rows import PreparedBatch, prepare
from slidebank.errors import SlidebankError

PIECES_IN_FLIGHT = 3
"""Pieces queued per worker: enough that none waits while the writer takes a result, few
enough that memory stays bounded (a piece is about 1 MB of JSON)."""


@dataclass(frozen=True)
class ImportJob:
    """What every piece of one import is read and checked against."""

    reader: str
    """The format's name in ``formats.registry.READERS``."""
    filename: str
    limits: ImportLimits
    width: int
    height: int
    outside: Outside


@dataclass(frozen=True)
class _PreparedPiece:
    batch: PreparedBatch
    classes: dict[str, LabelStyle]
    report: CheckReport


_job: ImportJob | None = None  # the import a worker process serves, set when it starts


def _start_worker(job: ImportJob) -> None:
    global _job
    _job = job
    # Ctrl-C at the command line reaches the whole process group: the importing process
    # stops the import and its workers; a traceback from each worker would be noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The worker makes millions of short-lived dicts and lists, none in a cycle; the
    # collector would walk them again and again (as in the calling process, it waits).
    gc.disable()


def _prepare_piece(piece: Piece) -> _PreparedPiece:
    job = _job
    if job is None:
        raise RuntimeError("an import worker was started without its job")
    reader = READERS[job.reader]
    if not isinstance(reader, PieceReader):
        raise RuntimeError(f"format {job.reader!r} cannot be read in pieces")
    classes: dict[str, LabelStyle] = {}
    report = CheckReport()
    parsed = reader.read_piece(piece, job.filename, job.limits, classes)
    kept = list(
        checked(
            iter(parsed),
            job.filename,
            job.width,
            job.height,
            outside=job.outside,
            report=report,
        )
    )
    return _PreparedPiece(prepare(kept), classes, report)


def prepared_in_workers(
    reader: PieceReader,
    source: BinaryIO,
    job: ImportJob,
    workers: int,
    classes: dict[str, LabelStyle],
    report: CheckReport,
) -> Iterator[PreparedBatch]:
    """The file's annotations, checked and in row form, in file order. Classes met are
    added to ``classes`` and the checks' counts to ``report``, as a reading in one process
    would."""
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(job,),
    )
    pending: deque[Future[_PreparedPiece]] = deque()
    pieces = reader.pieces(source, job.filename, job.limits)
    try:
        while True:
            try:
                piece = next(pieces, None)
            except SlidebankError:
                # A structure error further on: an earlier piece's own error comes first,
                # as when the file is read in one process.
                for earlier in pending:
                    _result(earlier, job)
                raise
            if piece is None:
                break
            pending.append(pool.submit(_prepare_piece, piece))
            if len(pending) >= PIECES_IN_FLIGHT * workers:
                yield _merged(_result(pending.popleft(), job), classes, report)
        while pending:
            yield _merged(_result(pending.popleft(), job), classes, report)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _result(future: Future[_PreparedPiece], job: ImportJob) -> _PreparedPiece:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise SlidebankError(
            f"{job.filename}: an import worker process stopped before finishing (out of "
            "memory?); nothing was imported"
        ) from exc


def _merged(
    prepared: _PreparedPiece, classes: dict[str, LabelStyle], report: CheckReport
) -> PreparedBatch:
    for name, style in prepared.classes.items():
        # As one reader would keep them: the first mention, coloured by the first colour.
        if name not in classes or (classes[name].color is None and style.color is not None):
            classes[name] = style
    report.add(prepared.report)
    return prepared.batch
