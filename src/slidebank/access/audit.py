"""The audit trail: append-only rows chained by SHA-256, and reads of data tallied per minute.

Each row's ``hash`` covers its own fields and the previous row's hash, so editing or deleting
a row breaks every hash after it; ``verify`` recomputes the chain. ``audit_head`` holds the
last sequence number and hash, and appending updates it first: that row lock (PostgreSQL) or
the write lock (SQLite) makes appenders take turns, so the chain never forks. Deleting the
newest rows *and* rewriting the head is only caught against a head recorded elsewhere:
``slidebank audit verify`` prints the head, and ``--expect-head`` checks a recorded one.

Reads of data (tiles, regions, thumbnails, exports) are many; :class:`ReadTally` counts them
in memory per user, target, address and minute, and :func:`flush_reads` writes one row per
group with its count (the web application flushes finished minutes every few seconds and
everything at shutdown).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from slidebank.access.clock import aware, now
from slidebank.access.policy import Principal
from slidebank.catalog.access_tables import AuditEvent, AuditHead
from slidebank.errors import StorageError

GENESIS = "0" * 64


def canonical_detail(detail: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(detail or {}), sort_keys=True, separators=(",", ":"), default=str)


def row_hash(prev_hash: str, event: AuditEvent) -> str:
    fields = [
        event.seq,
        # In UTC whatever zone the database session returns timestamps in.
        aware(event.at).astimezone(UTC).isoformat(timespec="microseconds"),
        event.actor_id,
        event.actor,
        event.action,
        event.dataset_id,
        event.target,
        event.address,
        event.count,
        event.detail,
    ]
    payload = prev_hash + "\n" + json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _claim_next(session: Session) -> tuple[int, str]:
    """Lock the head and return (next sequence number, previous hash)."""
    # The UPDATE comes first: it takes the lock before anything is read.
    result = session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise StorageError("the catalogue has no audit head row: migrate it (slidebank check)")
    row = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
    return row.seq + 1, row.hash


def append(
    session: Session,
    principal: Principal,
    action: str,
    *,
    dataset_id: int | None = None,
    target: str | None = None,
    address: str | None = None,
    detail: Mapping[str, Any] | None = None,
    count: int = 1,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (so it commits with what it records)."""
    return _append_many(
        session,
        [
            _Entry(
                at or now(),
                principal.user_id,
                principal.name,
                action,
                dataset_id,
                target,
                address,
                count,
                canonical_detail(detail),
            )
        ],
    )[0]


@dataclass(frozen=True)
class _Entry:
    at: datetime
    actor_id: int | None
    actor: str
    action: str
    dataset_id: int | None
    target: str | None
    address: str | None
    count: int
    detail: str


def _append_many(session: Session, entries: list[_Entry]) -> list[AuditEvent]:
    if not entries:
        return []
    seq, prev = _claim_next(session)
    events = []
    for entry in entries:
        event = AuditEvent(
            seq=seq,
            at=entry.at,
            actor_id=entry.actor_id,
            actor=entry.actor[:64],
            action=entry.action[:64],
            dataset_id=entry.dataset_id,
            target=(entry.target or None) and entry.target[:256],
            address=(entry.address or None) and entry.address[:64],
            count=entry.count,
            detail=entry.detail,
            prev_hash=prev,
        )
        event.hash = row_hash(prev, event)
        session.add(event)
        events.append(event)
        prev = event.hash
        seq += 1
    session.flush()
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=seq - 1, hash=prev))
    return events


# Verification


@dataclass(frozen=True)
class Finding:
    seq: int
    problem: str


@dataclass(frozen=True)
class Verification:
    rows: int
    head_seq: int
    head_hash: str
    findings: list[Finding]

    @property
    def intact(self) -> bool:
        return not self.findings


def verify(session: Session, expect_head: tuple[int, str] | None = None) -> Verification:
    """Recompute the chain from the first row; report every break."""
    findings: list[Finding] = []
    expected_seq, prev = 1, GENESIS
    rows = 0
    for event in _events(session):
        rows += 1
        if event.seq != expected_seq:
            missing = (
                f"{expected_seq}"
                if event.seq == expected_seq + 1
                else f"{expected_seq}-{event.seq - 1}"
            )
            findings.append(Finding(event.seq, f"rows {missing} are missing (deleted)"))
        if event.prev_hash != prev:
            findings.append(
                Finding(
                    event.seq,
                    "does not follow the row before it (a row before it was deleted or edited)",
                )
            )
        if row_hash(event.prev_hash, event) != event.hash:
            findings.append(Finding(event.seq, "its content does not match its hash (edited)"))
        prev, expected_seq = event.hash, event.seq + 1
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).first()
    head_seq, head_hash = (head.seq, head.hash) if head is not None else (0, GENESIS)
    if (head_seq, head_hash) != (expected_seq - 1, prev):
        findings.append(
            Finding(
                head_seq,
                f"the recorded head ({head_seq}) is not the last row ({expected_seq - 1}): "
                "rows at the end were deleted",
            )
        )
    if expect_head is not None:
        seq, digest = expect_head
        found = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == seq))
        if found != digest:
            findings.append(
                Finding(
                    seq, "differs from the head recorded earlier (rows were rewritten or removed)"
                )
            )
    return Verification(rows, head_seq, head_hash, findings)


def _events(session: Session, batch: int = 5000) -> Iterator[AuditEvent]:
    last = 0
    while True:
        chunk = list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.seq > last)
                .order_by(AuditEvent.seq)
                .limit(batch)
            )
        )
        if not chunk:
            return
        yield from chunk
        last = chunk[-1].seq
        session.expunge_all()


def events(
    session: Session,
    dataset_ids: list[int] | None,
    limit: int = 1000,
    offset: int = 0,
) -> list[AuditEvent]:
    """Events, newest first; ``dataset_ids`` None means all (site admins)."""
    query = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit).offset(offset)
    if dataset_ids is not None:
        query = query.where(AuditEvent.dataset_id.in_(dataset_ids))
    return list(session.scalars(query))


def event_record(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": aware(event.at).astimezone(UTC).isoformat(),
        "actor": event.actor,
        "actor_id": event.actor_id,
        "action": event.action,
        "dataset_id": event.dataset_id,
        "target": event.target,
        "address": event.address,
        "count": event.count,
        "detail": json.loads(event.detail),
        "hash": event.hash,
    }


# Reads of data, tallied


class _ReadKey(NamedTuple):
    """One tally group. A named tuple, and the minute as an integer (minutes since the
    epoch): counting happens on every tile request, so the key must be cheap to build."""

    minute: int
    actor_id: int | None
    actor: str
    action: str
    dataset_id: int
    target: str
    address: str | None

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.minute * 60, UTC)


class ReadTally:
    """Counts reads of data in memory until they are flushed (thread-safe)."""

    def __init__(self) -> None:
        self._counts: dict[_ReadKey, int] = {}
        self._lock = threading.Lock()

    def add(
        self,
        principal: Principal,
        action: str,
        dataset_id: int,
        target: str,
        address: str | None,
        at: datetime | None = None,
    ) -> None:
        minute = int((at.timestamp() if at is not None else time.time()) // 60)
        key = _ReadKey(
            minute, principal.user_id, principal.name, action, dataset_id, target, address
        )
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def take(self, everything: bool = False) -> dict[_ReadKey, int]:
        """Remove and return the counts of finished minutes (or all)."""
        current = int(time.time() // 60)
        with self._lock:
            if everything:
                taken, self._counts = self._counts, {}
                return taken
            taken = {k: v for k, v in self._counts.items() if k.minute < current}
            for key in taken:
                del self._counts[key]
            return taken

    def put_back(self, counts: Mapping[_ReadKey, int]) -> None:
        with self._lock:
            for key, value in counts.items():
                self._counts[key] = self._counts.get(key, 0) + value

    def __len__(self) -> int:
        with self._lock:
            return len(self._counts)


def flush_reads(session: Session, counts: Mapping[_ReadKey, int]) -> int:
    """Append one row per tallied group; returns the number of rows."""
    entries = [
        _Entry(
            key.start,
            key.actor_id,
            key.actor,
            key.action,
            key.dataset_id,
            key.target,
            key.address,
            count,
            canonical_detail({"minute": key.start.isoformat()}),
        )
        for key, count in sorted(counts.items(), key=lambda item: (item[0].minute, item[0].target))
    ]
    _append_many(session, entries)
    return len(entries)


def csv_cell(value: object) -> object:
    """A CSV cell that spreadsheets will not run as a formula (audit values come from users:
    the name typed at a failed sign-in, project titles)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
