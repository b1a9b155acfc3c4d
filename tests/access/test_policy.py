"""The policy function on its own: scopes, roles, policies, grants in time, refusal codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from slidebank.access.policy import (
    ANONYMOUS,
    Action,
    DatasetGate,
    DatasetPolicy,
    Principal,
    Role,
    Scope,
    decide,
    require,
    require_for_slide,
)
from slidebank.errors import Forbidden, NotFound, SignInRequired, no_such_slide

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
OPEN = DatasetGate(1, "open-ds", DatasetPolicy.OPEN)
REGISTERED = DatasetGate(2, "reg-ds", DatasetPolicy.REGISTERED)
CONTROLLED = DatasetGate(3, "ctl-ds", DatasetPolicy.CONTROLLED)
USER = Principal(user_id=7, name="u", via="session")


def test_landing_and_public_pages_are_for_everyone() -> None:
    for gate in (OPEN, REGISTERED, CONTROLLED):
        assert decide(ANONYMOUS, Action.SEE_LANDING, gate).allowed
    assert decide(ANONYMOUS, Action.SEE_PUBLIC).allowed


@pytest.mark.parametrize("action", [Action.READ_PIXELS, Action.READ_METADATA, Action.DOWNLOAD])
def test_data_follows_the_policy(action: Action) -> None:
    assert decide(ANONYMOUS, action, OPEN).allowed
    assert decide(ANONYMOUS, action, REGISTERED).status == 404
    assert decide(ANONYMOUS, action, REGISTERED, public=True).status == 403
    assert decide(USER, action, REGISTERED).status == 404  # terms not accepted
    accepted = Principal(user_id=7, name="u", accepted_terms=frozenset({2}), via="session")
    assert decide(accepted, action, REGISTERED).allowed
    assert not decide(accepted, action, CONTROLLED).allowed


def test_grants_count_until_their_end() -> None:
    holder = Principal(user_id=7, name="u", grants={3: NOW + timedelta(days=1)}, via="session")
    assert decide(holder, Action.READ_PIXELS, CONTROLLED, now=NOW).allowed
    later = NOW + timedelta(days=1, seconds=1)
    assert decide(holder, Action.READ_PIXELS, CONTROLLED, now=later).status == 404
    # A grant for one dataset opens no other.
    assert not decide(
        holder, Action.READ_PIXELS, DatasetGate(4, "x", DatasetPolicy.CONTROLLED), now=NOW
    ).allowed


def test_without_a_time_given_the_clock_ends_grants() -> None:
    def holder(end: datetime) -> Principal:
        return Principal(user_id=7, name="u", grants={3: end}, via="session")

    clock = datetime.now(UTC)
    assert decide(holder(clock + timedelta(minutes=5)), Action.READ_PIXELS, CONTROLLED).allowed
    ended = decide(holder(clock - timedelta(seconds=1)), Action.READ_PIXELS, CONTROLLED)
    assert ended.status == 404


def test_roles_in_a_dataset() -> None:
    def member(role: Role) -> Principal:
        return Principal(user_id=9, name="m", roles={3: frozenset({role})}, via="session")

    for role in Role:
        assert decide(member(role), Action.READ_PIXELS, CONTROLLED).allowed
    assert decide(member(Role.STEWARD), Action.CURATE, CONTROLLED).allowed
    assert decide(member(Role.COMMITTEE), Action.CURATE, CONTROLLED).status == 403
    assert decide(member(Role.COMMITTEE), Action.DECIDE_REQUESTS, CONTROLLED).allowed
    assert decide(member(Role.ANNOTATOR), Action.WRITE_ANNOTATIONS, CONTROLLED).allowed
    assert decide(member(Role.VIEWER), Action.WRITE_ANNOTATIONS, CONTROLLED).status == 403
    # A role in one dataset is nothing in another.
    assert decide(member(Role.STEWARD), Action.CURATE, REGISTERED).status == 403


def test_token_scopes_cap_what_a_user_can_do() -> None:
    admin = Principal(user_id=1, name="a", is_admin=True, scope=Scope.READ, via="token")
    assert decide(admin, Action.READ_PIXELS, CONTROLLED).allowed
    refused = decide(admin, Action.CURATE, CONTROLLED)
    assert refused.status == 403 and "scope" in refused.reason
    writer = Principal(user_id=1, name="a", is_admin=True, scope=Scope.WRITE, via="token")
    assert decide(writer, Action.CURATE, CONTROLLED).allowed
    assert decide(writer, Action.ADMINISTER).status == 403
    assert decide(
        Principal(user_id=1, name="a", is_admin=True, scope=Scope.ADMIN, via="token"),
        Action.ADMINISTER,
    ).allowed


def test_anonymous_must_sign_in_for_account_actions() -> None:
    for action in (Action.USE_ACCOUNT, Action.REQUEST_ACCESS, Action.DECIDE_REQUESTS):
        assert decide(ANONYMOUS, action, CONTROLLED).status == 401
    with pytest.raises(SignInRequired):
        require(ANONYMOUS, Action.USE_ACCOUNT)
    with pytest.raises(NotFound):
        require(ANONYMOUS, Action.READ_PIXELS, CONTROLLED)
    with pytest.raises(Forbidden):
        require(USER, Action.ADMINISTER)


def test_a_slide_refused_is_answered_as_a_slide_that_does_not_exist() -> None:
    with pytest.raises(NotFound) as refused:
        require_for_slide(ANONYMOUS, Action.READ_PIXELS, CONTROLLED, "sb-aaaaaaaaaa")
    assert str(refused.value) == str(no_such_slide("sb-aaaaaaaaaa"))
    assert "ctl-ds" not in str(refused.value)
    # A featured slide is public knowledge: refused as forbidden, with the reason.
    featured = DatasetGate(3, "ctl-ds", DatasetPolicy.CONTROLLED, frozenset({"sb-f"}))
    with pytest.raises(Forbidden, match="ctl-ds"):
        require_for_slide(ANONYMOUS, Action.READ_PIXELS, featured, "sb-f")
    # Refusals that do not hide the slide keep their own answer.
    with pytest.raises(Forbidden, match="only a"):
        require_for_slide(USER, Action.CURATE, OPEN, "sb-aaaaaaaaaa")
    require_for_slide(ANONYMOUS, Action.READ_PIXELS, OPEN, "sb-aaaaaaaaaa")
