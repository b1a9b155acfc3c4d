"""Use cases of accounts and access: users, sign-in, sessions, tokens, dataset stewardship,
access requests and decisions, and the audit trail. Each is one transaction, audited in it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from sqlalchemy import delete, func, select

from slidebank.access import accounts, audit, requests, stewardship
from slidebank.access.accounts import NewSession, NewToken, SignInRefused
from slidebank.access.clock import now
from slidebank.access.policy import Action, Principal, Scope, decide, require
from slidebank.access.principals import dataset_gates, gate_of, principal_of
from slidebank.access.requests import RequestForm
from slidebank.catalog import queries
from slidebank.catalog.access_tables import PendingOidcSignIn, User
from slidebank.errors import Forbidden, InvalidInput
from slidebank.services.repository import Repository


def add_user(
    repository: Repository,
    principal: Principal,
    name: str,
    password: str | None,
    is_admin: bool = False,
    email: str | None = None,
) -> dict[str, Any]:
    require(principal, Action.ADMINISTER)
    with repository.catalogue.transaction() as session:
        user = accounts.add_user(session, name, password=password, is_admin=is_admin, email=email)
        audit.append(session, principal, "user.add", target=name, detail={"admin": is_admin})
        return user_record(user)


def user_record(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "display_name": user.display_name,
        "email": user.email,
        "admin": user.is_admin,
        "oidc": bool(user.oidc_subject),
    }


# Sign-in and principals


def sign_in(
    repository: Repository, name: str, password: str, address: str, hours: float
) -> NewSession | SignInRefused:
    with repository.catalogue.reading() as session:
        check = accounts.look_up_sign_in(session, name, address)
    if check.refused is not None:
        # Over the limit: refused without a write. The failures that led here are in the
        # audit trail already, so a flood from one address adds nothing to it.
        return check.refused
    matched = accounts.password_matches(check, password)
    with repository.catalogue.transaction() as session:
        if not matched or check.user_id is None:
            refusal = SignInRefused("wrong user name or password")
            accounts.record_failed_sign_in(session, name, address)
            audit.append(
                session,
                Principal(name=name[:64] or "?", via="session"),
                "sign-in.refused",
                address=address,
                detail={"reason": refusal.reason},
            )
            return refusal
        user = session.get(User, check.user_id)
        assert user is not None
        accounts.rehash_if_needed(session, user, password)
        new = accounts.start_session(session, user, hours, address)
        audit.append(
            session,
            _acting(user, "session"),
            "sign-in",
            address=address,
            detail={"via": "password"},
        )
        return new


def sign_in_oidc(
    repository: Repository,
    issuer: str,
    subject: str,
    name_hint: str | None,
    email: str | None,
    address: str,
    hours: float,
) -> NewSession:
    with repository.catalogue.transaction() as session:
        user = accounts.oidc_user(session, issuer, subject, name_hint, email)
        if user.disabled:
            raise InvalidInput(f"user {user.name!r} is disabled")
        new = accounts.start_session(session, user, hours, address)
        audit.append(
            session,
            _acting(user, "session"),
            "sign-in",
            address=address,
            detail={"via": "oidc", "issuer": issuer},
        )
        return new


def sign_out(repository: Repository, principal: Principal, secret: str, address: str) -> None:
    with repository.catalogue.transaction() as session:
        accounts.end_session(session, secret)
        audit.append(session, principal, "sign-out", address=address)


def principal_for_session(repository: Repository, secret: str) -> tuple[Principal, str]:
    """The session's principal and its CSRF token; ``SignInRequired`` if it is not live."""
    with repository.catalogue.reading() as session:
        row = accounts.session_by_secret(session, secret)
        return principal_of(session, row.user, Scope.ADMIN, "session"), row.csrf_token


def principal_for_token(repository: Repository, token: str) -> Principal:
    with repository.catalogue.reading() as session:
        row = accounts.token_by_secret(session, token)
        return principal_of(session, row.user, Scope(row.scope), "token")


def principal_for_user(repository: Repository, name: str) -> Principal:
    with repository.catalogue.reading() as session:
        return principal_of(session, accounts.user_by_name(session, name), Scope.ADMIN, "session")


def _acting(user: User, via: str) -> Principal:
    return Principal(user_id=user.id, name=user.name, is_admin=user.is_admin, via=via)


# Tokens


def create_token(
    repository: Repository,
    principal: Principal,
    user_name: str | None,
    scope: str,
    days: int,
    label: str | None = None,
    address: str | None = None,
) -> NewToken:
    """A token for ``user_name`` (admins, the command line) or for the principal itself."""
    try:
        chosen = Scope(scope)
    except ValueError:
        raise InvalidInput(f"scope {scope!r}: use read, write or admin") from None
    with repository.catalogue.transaction() as session:
        if user_name is not None and user_name != principal.name:
            require(principal, Action.ADMINISTER)
            user = accounts.user_by_name(session, user_name)
        else:
            require(principal, Action.CHANGE_ACCOUNT)
            user = accounts.user_by_name(session, principal.name)
        if principal.via == "token":
            # Otherwise a stolen token could outlive its expiry and its revocation.
            raise Forbidden("tokens cannot create tokens: sign in, or use `slidebank token`")
        new = accounts.create_token(session, user, chosen, days, label)
        audit.append(
            session,
            principal,
            "token.create",
            target=f"token/{new.row.key}",
            address=address,
            detail={"user": user.name, "scope": chosen.value, "days": days},
        )
        return new


def list_tokens(
    repository: Repository, principal: Principal, user_name: str | None = None
) -> list[dict[str, Any]]:
    """The principal's tokens, or (administrators) those of ``user_name``."""
    if user_name is not None and user_name != principal.name:
        require(principal, Action.ADMINISTER)
    else:
        require(principal, Action.USE_ACCOUNT)
        user_name = principal.name
    with repository.catalogue.reading() as session:
        user = accounts.user_by_name(session, user_name)
        return [accounts.token_record(row) for row in accounts.tokens_of(session, user)]


def revoke_token(
    repository: Repository, principal: Principal, key: str, address: str | None = None
) -> dict[str, Any]:
    """Revoke one of the principal's tokens; administrators may revoke anyone's."""
    require(principal, Action.CHANGE_ACCOUNT)
    with repository.catalogue.transaction() as session:
        owner = None if decide(principal, Action.ADMINISTER).allowed else principal.user_id
        row = accounts.revoke_token(session, key, owner)
        audit.append(
            session,
            principal,
            "token.revoke",
            target=f"token/{key}",
            address=address,
            detail={"user_id": row.user_id},
        )
        return accounts.token_record(row)


# Datasets


def update_access(
    repository: Repository,
    principal: Principal,
    dataset: str,
    policy: str,
    terms: str | None = None,
    featured: Sequence[str] | None = None,
) -> None:
    """Policy, and optionally terms and featured slides, in one transaction: all or nothing."""
    with repository.catalogue.transaction() as session:
        target = queries.dataset_by_name(session, dataset)
        stewardship.set_policy(session, principal, target, policy)
        if terms is not None:
            stewardship.set_terms(session, principal, target, terms)
        if featured is not None:
            stewardship.set_featured(session, principal, target, featured)


def set_policy(repository: Repository, principal: Principal, dataset: str, policy: str) -> None:
    with repository.catalogue.transaction() as session:
        stewardship.set_policy(
            session, principal, queries.dataset_by_name(session, dataset), policy
        )


def set_featured(
    repository: Repository, principal: Principal, dataset: str, slides: Sequence[str]
) -> None:
    with repository.catalogue.transaction() as session:
        stewardship.set_featured(
            session, principal, queries.dataset_by_name(session, dataset), slides
        )


def add_role(
    repository: Repository, principal: Principal, dataset: str, user: str, role: str
) -> None:
    with repository.catalogue.transaction() as session:
        target = queries.dataset_by_name(session, dataset)
        # Before the user is looked up: otherwise "no user named ..." tells anyone which
        # names exist.
        require(principal, Action.CURATE, gate_of(target))
        stewardship.add_role(session, principal, target, accounts.user_by_name(session, user), role)


def remove_role(
    repository: Repository, principal: Principal, dataset: str, user: str, role: str
) -> None:
    with repository.catalogue.transaction() as session:
        target = queries.dataset_by_name(session, dataset)
        require(principal, Action.CURATE, gate_of(target))  # first, as in add_role
        stewardship.remove_role(
            session, principal, target, accounts.user_by_name(session, user), role
        )


def members(repository: Repository, principal: Principal, dataset: str) -> list[dict[str, str]]:
    with repository.catalogue.reading() as session:
        return stewardship.members(session, principal, queries.dataset_by_name(session, dataset))


def accept_terms(repository: Repository, principal: Principal, dataset: str) -> None:
    with repository.catalogue.transaction() as session:
        stewardship.accept_terms(session, principal, queries.dataset_by_name(session, dataset))


# Access requests


def request_access(
    repository: Repository, principal: Principal, dataset: str, form: RequestForm, address: str
) -> dict[str, Any]:
    with repository.catalogue.transaction() as session:
        target = queries.dataset_by_name(session, dataset)
        row = requests.request_access(session, principal, target, form, address)
        return requests.request_record(session, row)


def my_requests(repository: Repository, principal: Principal) -> list[dict[str, Any]]:
    with repository.catalogue.reading() as session:
        return [
            requests.request_record(session, r) for r in requests.my_requests(session, principal)
        ]


def show_request(repository: Repository, principal: Principal, request_id: int) -> dict[str, Any]:
    with repository.catalogue.reading() as session:
        return requests.request_record(
            session, requests.request_by_id(session, principal, request_id)
        )


def requests_to_decide(
    repository: Repository, principal: Principal, status: str | None = "pending"
) -> list[dict[str, Any]]:
    with repository.catalogue.reading() as session:
        return [
            requests.request_record(session, r)
            for r in requests.requests_to_decide(session, principal, status)
        ]


def decide_request(
    repository: Repository,
    principal: Principal,
    request_id: int,
    approve: bool,
    ends_on: date | None,
    reason: str | None,
    address: str,
) -> dict[str, Any]:
    with repository.catalogue.transaction() as session:
        row = requests.decide_request(
            session, principal, request_id, approve, ends_on=ends_on, reason=reason, address=address
        )
        return requests.request_record(session, row)


def revoke_grant(
    repository: Repository, principal: Principal, grant_id: int, reason: str, address: str
) -> dict[str, Any]:
    with repository.catalogue.transaction() as session:
        return requests.grant_record(
            requests.revoke_grant(session, principal, grant_id, reason, address)
        )


# Audit


def audit_events(
    repository: Repository,
    principal: Principal,
    dataset: str | None,
    limit: int,
    offset: int,
    tally: audit.ReadTally | None = None,
) -> list[dict[str, Any]]:
    """The audit of one dataset (its stewards, admins) or of everything (admins); with
    ``tally``, the reads counted so far are written first (only once allowed to look)."""
    with repository.catalogue.reading() as session:
        if dataset is None:
            require(principal, Action.ADMINISTER)
            ids = None
        else:
            gate = gate_of(queries.dataset_by_name(session, dataset))
            require(principal, Action.READ_AUDIT, gate, public=True)
            ids = [gate.id]
    if tally is not None:
        flush_reads(repository, tally, everything=True)
    with repository.catalogue.reading() as session:
        return [
            audit.event_record(e) for e in audit.events(session, ids, limit=limit, offset=offset)
        ]


def verify_audit(
    repository: Repository, expect_head: tuple[int, str] | None = None
) -> audit.Verification:
    with repository.catalogue.reading() as session:
        return audit.verify(session, expect_head)


def flush_reads(repository: Repository, tally: audit.ReadTally, everything: bool = False) -> int:
    counts = tally.take(everything)
    if not counts:
        return 0
    try:
        with repository.catalogue.transaction() as session:
            return audit.flush_reads(session, counts)
    except Exception:
        tally.put_back(counts)  # not lost: the next flush tries again
        raise


def gates(repository: Repository) -> dict[int, Any]:
    with repository.catalogue.reading() as session:
        return dataset_gates(session)


# OpenID Connect: what is kept between the redirect to the provider and its callback

# Anyone may start a sign-in, and each start keeps a row until its callback or its expiry:
# this bounds what a flood of starts can make the catalogue hold.
MAX_PENDING = 10_000


def keep_pending_sign_in(
    repository: Repository, state: str, data: dict[str, Any], lifetime_s: float
) -> bool:
    """Keep a sign-in until its callback; False (nothing kept) when ``MAX_PENDING`` are
    pending already. Those older than ``lifetime_s`` are dropped first: their callbacks
    would be refused anyway."""
    with repository.catalogue.transaction() as session:
        session.execute(
            delete(PendingOidcSignIn).where(
                PendingOidcSignIn.created_at < now() - timedelta(seconds=lifetime_s)
            )
        )
        pending = session.scalar(select(func.count()).select_from(PendingOidcSignIn)) or 0
        if pending >= MAX_PENDING:
            return False
        session.add(PendingOidcSignIn(state=state, data=data))
        return True


def take_pending_sign_in(repository: Repository, state: str) -> dict[str, Any] | None:
    """The pending sign-in of ``state``, removed so that a callback works once."""
    with repository.catalogue.transaction() as session:
        row = session.get(PendingOidcSignIn, state[:128])
        if row is None:
            return None
        data = dict(row.data)
        session.delete(row)
        return data
