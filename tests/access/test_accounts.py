"""Accounts on SQLite and PostgreSQL: passwords, sign-in limits, sessions, tokens, requests."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select, update

from slidebank.access.accounts import MAX_FAILURES_ACCOUNT_ADDRESS, SignInRefused
from slidebank.access.policy import (
    ANONYMOUS,
    COMMAND_LINE,
    Action,
    DatasetGate,
    DatasetPolicy,
    decide,
)
from slidebank.access.requests import RequestForm
from slidebank.catalog.access_tables import ApiToken, PendingOidcSignIn, User
from slidebank.errors import Conflict, Forbidden, InvalidInput, NotFound, SignInRequired
from slidebank.services import accounts, ingesting
from slidebank.services.repository import Repository

PASSWORD = "correct horse battery"


@pytest.fixture
def alice(repository: Repository) -> str:
    accounts.add_user(repository, COMMAND_LINE, "alice", PASSWORD)
    return "alice"


def test_passwords_are_stored_as_argon2id(repository: Repository, alice: str) -> None:
    with repository.catalogue.reading() as session:
        stored = session.scalar(select(User.password_hash).where(User.name == alice))
    assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored


def test_bad_user_names_and_short_passwords_are_refused(repository: Repository) -> None:
    with pytest.raises(InvalidInput, match="user name"):
        accounts.add_user(repository, COMMAND_LINE, "Bad Name", PASSWORD)
    with pytest.raises(InvalidInput, match="password: at least 12"):
        accounts.add_user(repository, COMMAND_LINE, "bob", "short")
    with pytest.raises(Conflict):
        accounts.add_user(repository, COMMAND_LINE, "carol", PASSWORD)
        accounts.add_user(repository, COMMAND_LINE, "carol", PASSWORD)


def test_sign_in_limits_lock_out_the_guesser_not_the_user(
    repository: Repository, alice: str
) -> None:
    for _ in range(MAX_FAILURES_ACCOUNT_ADDRESS):
        outcome = accounts.sign_in(repository, alice, "wrong password!", "10.0.0.66", 1)
        assert isinstance(outcome, SignInRefused) and outcome.retry_after_s is None
    limited = accounts.sign_in(repository, alice, PASSWORD, "10.0.0.66", 1)
    assert isinstance(limited, SignInRefused) and limited.retry_after_s
    # The same account from another address is not locked out.
    session = accounts.sign_in(repository, alice, PASSWORD, "10.0.0.7", 1)
    assert not isinstance(session, SignInRefused)
    principal, csrf = accounts.principal_for_session(repository, session.secret)
    assert principal.name == alice and csrf == session.csrf_token
    events = accounts.audit_events(repository, COMMAND_LINE, None, 100, 0)
    actions = [e["action"] for e in events]
    # Each failure is audited; the attempt over the limit is refused without a row.
    assert actions.count("sign-in.refused") == MAX_FAILURES_ACCOUNT_ADDRESS
    assert actions.count("sign-in") == 1


def test_sessions_end_and_expire(repository: Repository, alice: str) -> None:
    session = accounts.sign_in(repository, alice, PASSWORD, "10.0.0.7", 1)
    assert not isinstance(session, SignInRefused)
    principal, _ = accounts.principal_for_session(repository, session.secret)
    accounts.sign_out(repository, principal, session.secret, "10.0.0.7")
    with pytest.raises(SignInRequired, match="ended or expired"):
        accounts.principal_for_session(repository, session.secret)
    with pytest.raises(SignInRequired):
        accounts.principal_for_session(repository, "not-a-session")


def test_tokens_are_hashed_scoped_expiring_and_revocable(
    repository: Repository, alice: str
) -> None:
    new = accounts.create_token(repository, COMMAND_LINE, alice, "read", 30, "notebook")
    with repository.catalogue.reading() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.key == new.row.key))
        assert row is not None
        secret = new.token.split("_", 2)[2]  # the secret itself may contain "_"
        assert secret not in row.secret_hash
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    principal = accounts.principal_for_token(repository, new.token)
    assert principal.name == alice and principal.scope == "read"
    assert decide(principal, Action.USE_ACCOUNT).allowed
    assert decide(principal, Action.REQUEST_ACCESS, _CONTROLLED).status == 403  # read only

    with pytest.raises(SignInRequired, match="unknown"):
        accounts.principal_for_token(repository, new.token[:-2] + "xx")
    with pytest.raises(SignInRequired, match="not a Slidebank token"):
        accounts.principal_for_token(repository, "abc")
    with pytest.raises(InvalidInput, match="admin tokens"):
        accounts.create_token(repository, COMMAND_LINE, alice, "admin", 30)

    with repository.catalogue.transaction() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.key == new.row.key)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with pytest.raises(SignInRequired, match="expired"):
        accounts.principal_for_token(repository, new.token)

    other = accounts.create_token(repository, COMMAND_LINE, alice, "write", 30)
    writer = accounts.principal_for_token(repository, other.token)
    # A token cannot create one of a wider scope, nor can a read token change anything.
    with pytest.raises(Forbidden, match="scope is read"):
        accounts.revoke_token(repository, principal, other.row.key)
    accounts.revoke_token(repository, writer, other.row.key)
    with pytest.raises(SignInRequired, match="revoked"):
        accounts.principal_for_token(repository, other.token)


_CONTROLLED = DatasetGate(99, "x", DatasetPolicy.CONTROLLED)


def test_request_decide_and_revoke(repository: Repository, generated_svs: object) -> None:
    ingesting.ingest_paths(repository, [generated_svs], "ds", None)  # type: ignore[list-item]
    for name in ("res", "chair", "outsider"):
        accounts.add_user(repository, COMMAND_LINE, name, PASSWORD)
    accounts.add_role(repository, COMMAND_LINE, "ds", "chair", "committee")
    form = RequestForm("Tumour atlas", "segmentation", "Uni", 30, True)
    researcher = accounts.principal_for_user(repository, "res")
    with pytest.raises(InvalidInput, match="is open: it needs no access request"):
        accounts.request_access(repository, researcher, "ds", form, "1.2.3.4")
    accounts.set_policy(repository, COMMAND_LINE, "ds", "controlled")
    with pytest.raises(InvalidInput, match="accept_terms"):
        accounts.request_access(
            repository, researcher, "ds", RequestForm("T", "p", "U", 30, False), "1.2.3.4"
        )
    made = accounts.request_access(repository, researcher, "ds", form, "1.2.3.4")
    assert made["status"] == "pending"
    with pytest.raises(Conflict, match="still pending"):
        accounts.request_access(repository, researcher, "ds", form, "1.2.3.4")

    outsider = accounts.principal_for_user(repository, "outsider")
    with pytest.raises(NotFound):
        accounts.decide_request(repository, outsider, made["id"], True, None, None, "x")
    with pytest.raises(Forbidden):  # the author sees the request but may not decide it
        accounts.decide_request(repository, researcher, made["id"], True, None, None, "x")

    chair = accounts.principal_for_user(repository, "chair")
    assert [r["id"] for r in accounts.requests_to_decide(repository, chair)] == [made["id"]]
    with pytest.raises(InvalidInput, match="reason"):
        accounts.decide_request(repository, chair, made["id"], False, None, "", "x")
    ends = date.today() + timedelta(days=10)
    decided = accounts.decide_request(repository, chair, made["id"], True, ends, None, "x")
    assert decided["status"] == "approved" and decided["decided_by"] == "chair"
    assert decided["grant"]["ends_at"].startswith(ends.isoformat())
    holder = accounts.principal_for_user(repository, "res")
    gate = DatasetGate(1, "ds", DatasetPolicy.CONTROLLED)
    assert holder.grants and decide(holder, Action.READ_PIXELS, gate).allowed

    accounts.revoke_grant(repository, chair, decided["grant"]["id"], "misuse", "x")
    after = accounts.principal_for_user(repository, "res")
    assert not after.grants
    mine = accounts.my_requests(repository, after)
    assert mine[0]["grant"]["revoked_at"] and mine[0]["grant"]["revoke_reason"] == "misuse"
    actions = [e["action"] for e in accounts.audit_events(repository, COMMAND_LINE, "ds", 50, 0)]
    for expected in ("request.create", "request.approve", "grant.revoke", "dataset.policy"):
        assert expected in actions
    assert accounts.verify_audit(repository).intact


def test_nobody_decides_their_own_request_and_grants_are_bounded(
    repository: Repository, generated_svs: object
) -> None:
    ingesting.ingest_paths(repository, [generated_svs], "ds", None)  # type: ignore[list-item]
    for name in ("chair", "other"):
        accounts.add_user(repository, COMMAND_LINE, name, PASSWORD)
        accounts.add_role(repository, COMMAND_LINE, "ds", name, "committee")
    accounts.set_policy(repository, COMMAND_LINE, "ds", "controlled")
    chair = accounts.principal_for_user(repository, "chair")
    form = RequestForm("Mine", "p", "U", 30, True)
    made = accounts.request_access(repository, chair, "ds", form, "x")
    with pytest.raises(Forbidden, match="own access request"):
        accounts.decide_request(repository, chair, made["id"], True, None, None, "x")
    other = accounts.principal_for_user(repository, "other")
    with pytest.raises(InvalidInput, match="at most"):
        accounts.decide_request(repository, other, made["id"], True, date(9999, 12, 31), None, "x")
    assert accounts.decide_request(repository, other, made["id"], True, None, None, "x")


def test_two_members_deciding_at_once_one_wins(
    repository: Repository, generated_svs: object
) -> None:
    import threading

    ingesting.ingest_paths(repository, [generated_svs], "ds", None)  # type: ignore[list-item]
    for name in ("res", "ann", "bob"):
        accounts.add_user(repository, COMMAND_LINE, name, PASSWORD)
    for name in ("ann", "bob"):
        accounts.add_role(repository, COMMAND_LINE, "ds", name, "committee")
    accounts.set_policy(repository, COMMAND_LINE, "ds", "controlled")
    form = RequestForm("Race", "p", "U", 30, True)
    made = accounts.request_access(
        repository, accounts.principal_for_user(repository, "res"), "ds", form, "x"
    )
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def decide_as(name: str, approve: bool) -> None:
        member = accounts.principal_for_user(repository, name)
        start.wait()
        try:
            accounts.decide_request(repository, member, made["id"], approve, None, "no", "x")
            outcomes.append("decided")
        except Conflict:
            outcomes.append("conflict")

    threads = [
        threading.Thread(target=decide_as, args=("ann", True)),
        threading.Thread(target=decide_as, args=("bob", False)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "decided"]
    final = accounts.show_request(repository, COMMAND_LINE, made["id"])
    assert (final["status"] == "approved") == (final["grant"] is not None)
    assert accounts.verify_audit(repository).intact


def test_tokens_cannot_create_tokens(repository: Repository, alice: str) -> None:
    parent = accounts.create_token(repository, COMMAND_LINE, alice, "write", 1)
    principal = accounts.principal_for_token(repository, parent.token)
    with pytest.raises(Forbidden, match="tokens cannot create tokens"):
        accounts.create_token(repository, principal, None, "read", 366)


def test_cli_lists_and_revokes_tokens(repository: Repository, alice: str) -> None:
    import json

    from typer.testing import CliRunner

    from slidebank.cli import app

    settings = repository.settings
    where = ["--home", str(settings.home), "--database-url", settings.catalogue_url]
    runner = CliRunner()
    made = runner.invoke(app, ["token", "create", alice, "--scope", "write", "--json", *where])
    assert made.exit_code == 0, made.output
    token = json.loads(made.stdout)
    assert accounts.principal_for_token(repository, token["token"]).name == alice
    listed = runner.invoke(app, ["token", "list", alice, "--json", *where])
    assert [row["key"] for row in json.loads(listed.stdout)] == [token["key"]]
    assert token["token"] not in listed.stdout  # never the secret
    revoked = runner.invoke(app, ["token", "revoke", token["key"], *where])
    assert revoked.exit_code == 0, revoked.output
    with pytest.raises(SignInRequired, match="revoked"):
        accounts.principal_for_token(repository, token["token"])
    unknown = runner.invoke(app, ["token", "revoke", "000000000000", *where])
    assert unknown.exit_code == 1 and "no token" in unknown.output


def _dataset(repository: Repository, name: str) -> None:
    from slidebank.catalog import queries
    from slidebank.catalog.entries import DatasetEntry

    with repository.catalogue.transaction() as session:
        queries.ensure_dataset(session, DatasetEntry(name))


@pytest.mark.parametrize("change", ["add", "remove"])
def test_role_changes_tell_no_one_but_stewards_which_user_names_exist(
    repository: Repository, alice: str, change: str
) -> None:
    _dataset(repository, "pub")
    accounts.add_user(repository, COMMAND_LINE, "steward", PASSWORD)
    accounts.add_role(repository, COMMAND_LINE, "pub", "steward", "steward")
    act = accounts.add_role if change == "add" else accounts.remove_role
    before = accounts.audit_events(repository, COMMAND_LINE, None, 1000, 0)
    for principal, refusal in (
        (ANONYMOUS, SignInRequired),
        (accounts.principal_for_user(repository, alice), Forbidden),
    ):
        answers = []
        for user in ("steward", "nosuchuser"):
            with pytest.raises(refusal) as refused:
                act(repository, principal, "pub", user, "viewer")
            answers.append(str(refused.value))
        assert answers[0] == answers[1] and "nosuchuser" not in answers[1]
    assert accounts.audit_events(repository, COMMAND_LINE, None, 1000, 0) == before
    # The dataset's steward, who gives roles by name, is told.
    steward = accounts.principal_for_user(repository, "steward")
    with pytest.raises(NotFound, match="no user named 'nosuchuser'"):
        act(repository, steward, "pub", "nosuchuser", "viewer")


def test_pending_oidc_sign_ins_are_bounded(
    repository: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "MAX_PENDING", 3)

    def pending() -> list[str]:
        with repository.catalogue.reading() as session:
            return sorted(session.scalars(select(PendingOidcSignIn.state)))

    for number in range(3):
        assert accounts.keep_pending_sign_in(repository, f"s{number}", {"n": number}, 600)
    assert not accounts.keep_pending_sign_in(repository, "s3", {"n": 3}, 600)
    assert pending() == ["s0", "s1", "s2"]
    assert accounts.take_pending_sign_in(repository, "s3") is None
    # Expired ones make room: they are dropped before the count.
    with repository.catalogue.transaction() as session:
        session.execute(
            update(PendingOidcSignIn)
            .where(PendingOidcSignIn.state == "s0")
            .values(created_at=datetime.now(UTC) - timedelta(seconds=601))
        )
    assert accounts.keep_pending_sign_in(repository, "s4", {"n": 4}, 600)
    assert pending() == ["s1", "s2", "s4"]
    assert accounts.take_pending_sign_in(repository, "s4") == {"n": 4}


def test_ids_beyond_64_bits_are_not_found(repository: Repository, alice: str) -> None:
    """Not an OverflowError from the SQLite driver: the command line passes ids as typed."""
    huge = 2**64
    with pytest.raises(NotFound, match=f"no access request {huge}"):
        accounts.show_request(repository, COMMAND_LINE, huge)
    with pytest.raises(NotFound, match=f"no grant {huge}"):
        accounts.revoke_grant(repository, COMMAND_LINE, huge, "no reason", "x")
