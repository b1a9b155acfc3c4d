"""The audit trail on SQLite and PostgreSQL: the chain, tampering found, concurrent writers,
reads tallied per minute, and ``slidebank audit verify``."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import delete, update
from typer.testing import CliRunner

from slidebank.access import audit
from slidebank.access.policy import COMMAND_LINE, Principal
from slidebank.catalog.access_tables import AuditEvent, AuditHead
from slidebank.cli import app
from slidebank.services import accounts
from slidebank.services.repository import Repository

ALICE = Principal(user_id=1, name="alice", via="session")


def _append(repository: Repository, n: int) -> None:
    for i in range(n):
        with repository.catalogue.transaction() as session:
            audit.append(session, ALICE, "test.event", target=f"thing/{i}", detail={"i": i})


def _verify(repository: Repository) -> audit.Verification:
    return accounts.verify_audit(repository)


def test_an_untouched_chain_verifies(repository: Repository) -> None:
    _append(repository, 5)
    result = _verify(repository)
    assert result.intact and result.rows == 5 and result.head_seq == 5


def test_an_edited_row_is_found(repository: Repository) -> None:
    _append(repository, 5)
    with repository.catalogue.transaction() as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(actor="mallory"))
    result = _verify(repository)
    assert not result.intact
    assert [(f.seq, "edited" in f.problem) for f in result.findings] == [(3, True)]


def test_an_edited_row_with_a_recomputed_hash_breaks_the_next_link(repository: Repository) -> None:
    _append(repository, 5)
    with repository.catalogue.transaction() as session:
        row = session.get(AuditEvent, 3)
        assert row is not None
        row.actor = "mallory"
        row.hash = audit.row_hash(row.prev_hash, row)
    result = _verify(repository)
    assert [f.seq for f in result.findings] == [4]


def test_a_deleted_row_is_found(repository: Repository) -> None:
    _append(repository, 5)
    with repository.catalogue.transaction() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.seq == 2))
    result = _verify(repository)
    assert not result.intact
    assert any("missing" in f.problem for f in result.findings)


def test_deleting_the_newest_rows_is_found(repository: Repository) -> None:
    _append(repository, 5)
    with repository.catalogue.transaction() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.seq >= 4))
    assert any("deleted" in f.problem for f in _verify(repository).findings)


def test_a_rewritten_tail_and_head_is_found_against_a_recorded_head(
    repository: Repository,
) -> None:
    _append(repository, 5)
    recorded = _verify(repository)
    with repository.catalogue.transaction() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.seq == 5))
        last = session.get(AuditEvent, 4)
        assert last is not None
        session.execute(update(AuditHead).values(seq=4, hash=last.hash))
    assert _verify(repository).intact  # consistent in itself...
    expected = (recorded.head_seq, recorded.head_hash)
    later = accounts.verify_audit(repository, expected)
    assert not later.intact  # ...but not the trail recorded before


def test_concurrent_writers_keep_one_chain(repository: Repository) -> None:
    errors: list[BaseException] = []

    def write() -> None:
        try:
            _append(repository, 15)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    result = _verify(repository)
    assert result.intact and result.rows == 60


def test_reads_are_tallied_per_user_slide_and_minute(repository: Repository) -> None:
    tally = audit.ReadTally()
    minute = datetime(2026, 11, 1, 10, 0, 5, tzinfo=UTC)
    for second in range(50):
        tally.add(ALICE, "read-pixels", 1, "sb-1", "10.0.0.1", minute.replace(second=second))
    tally.add(ALICE, "read-pixels", 1, "sb-2", "10.0.0.1", minute)
    tally.add(ALICE, "read-pixels", 1, "sb-1", "10.0.0.1", minute.replace(minute=1))
    assert accounts.flush_reads(repository, tally) == 3  # all finished minutes
    assert len(tally) == 0
    rows = accounts.audit_events(repository, COMMAND_LINE, None, 10, 0)
    counts = sorted((r["target"], r["count"], r["detail"]["minute"][11:16]) for r in rows)
    assert counts == [("sb-1", 1, "10:01"), ("sb-1", 50, "10:00"), ("sb-2", 1, "10:00")]
    assert _verify(repository).intact


def test_the_current_minute_waits_unless_everything_is_flushed(repository: Repository) -> None:
    tally = audit.ReadTally()
    tally.add(ALICE, "read-pixels", 1, "sb-1", None)
    assert accounts.flush_reads(repository, tally) == 0
    assert accounts.flush_reads(repository, tally, everything=True) == 1


def test_cli_audit_verify_exits_non_zero_on_tampering(repository: Repository) -> None:
    _append(repository, 3)
    settings = repository.settings
    args = ["--home", str(settings.home), "--database-url", settings.catalogue_url]
    runner = CliRunner()
    intact = runner.invoke(app, ["audit", "verify", "--json", *args])
    assert intact.exit_code == 0, intact.output
    assert '"intact": true' in intact.output
    with repository.catalogue.transaction() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.seq == 2))
    broken = runner.invoke(app, ["audit", "verify", *args])
    assert broken.exit_code == 1
    assert "BROKEN" in broken.output


def test_the_chain_verifies_whatever_the_database_time_zone(postgres_admin: str) -> None:
    from sqlalchemy import create_engine, make_url, text

    from slidebank.config import Settings
    from slidebank.services.repository import open_repository
    from tests.conftest import _fresh_postgres_database

    for url in _fresh_postgres_database(postgres_admin):
        name = make_url(url).database
        admin = create_engine(postgres_admin, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"ALTER DATABASE \"{name}\" SET timezone TO 'Asia/Tokyo'"))
        admin.dispose()
        import tempfile
        from pathlib import Path

        repository = open_repository(
            Settings(home=Path(tempfile.mkdtemp()) / "repo", database_url=url)
        )
        try:
            _append(repository, 3)
            result = _verify(repository)
            assert result.intact, result.findings
            assert accounts.audit_events(repository, COMMAND_LINE, None, 1, 0)[0]["at"].endswith(
                "+00:00"
            )
        finally:
            repository.close()
