"""Access requests to controlled datasets, committee decisions and time-limited grants.

A grant ends by itself at its end date (the policy compares it with the clock) or when a
committee member or steward revokes it. Every step is audited with who and when.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from slidebank.access import audit
from slidebank.access.clock import aware, now
from slidebank.access.policy import Action, DatasetPolicy, Principal, Role, decide, require
from slidebank.access.principals import gate_of
from slidebank.access.stewardship import terms_digest
from slidebank.catalog.access_tables import AccessRequest, Grant
from slidebank.catalog.queries import MAX_ID
from slidebank.catalog.tables import Dataset
from slidebank.errors import Conflict, Forbidden, InvalidInput, NotFound

MAX_DAYS = 5 * 366
MAX_TEXT = 10_000


@dataclass(frozen=True)
class RequestForm:
    project_title: str
    purpose: str
    institution: str
    duration_days: int
    accept_terms: bool


def _check(form: RequestForm) -> None:
    problems = []
    for field, value, limit in (
        ("project_title", form.project_title, 256),
        ("purpose", form.purpose, MAX_TEXT),
        ("institution", form.institution, 256),
    ):
        if not value.strip():
            problems.append(f"{field}: required")
        elif len(value) > limit:
            problems.append(f"{field}: at most {limit} characters")
    if not 1 <= form.duration_days <= MAX_DAYS:
        problems.append(f"duration_days: between 1 and {MAX_DAYS}")
    if not form.accept_terms:
        problems.append("accept_terms: the dataset's terms of use must be accepted")
    if problems:
        raise InvalidInput("; ".join(problems))


def request_access(
    session: Session, principal: Principal, dataset: Dataset, form: RequestForm, address: str | None
) -> AccessRequest:
    require(principal, Action.REQUEST_ACCESS, gate_of(dataset))
    if principal.user_id is None:
        raise InvalidInput("requests are made by signed-in users")
    if dataset.policy != DatasetPolicy.CONTROLLED:
        raise InvalidInput(
            f"dataset {dataset.short_name!r} is {dataset.policy}: it needs no access request"
        )
    _check(form)
    pending = session.scalar(
        select(AccessRequest.id).where(
            AccessRequest.user_id == principal.user_id,
            AccessRequest.dataset_id == dataset.id,
            AccessRequest.status == "pending",
        )
    )
    if pending is not None:
        raise Conflict(f"request {pending} for dataset {dataset.short_name!r} is still pending")
    row = AccessRequest(
        user_id=principal.user_id,
        dataset_id=dataset.id,
        project_title=form.project_title.strip(),
        purpose=form.purpose.strip(),
        institution=form.institution.strip(),
        duration_days=form.duration_days,
        terms_digest=terms_digest(dataset),
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        principal,
        "request.create",
        dataset_id=dataset.id,
        target=f"request/{row.id}",
        address=address,
        detail={"project_title": row.project_title, "duration_days": row.duration_days},
    )
    return row


def request_by_id(session: Session, principal: Principal, request_id: int) -> AccessRequest:
    """A request its author, the dataset's committee or an admin may see; 404 otherwise."""
    require(principal, Action.USE_ACCOUNT)
    # An id no engine stores is not looked up: SQLite raises OverflowError on it.
    row = session.get(AccessRequest, request_id) if 0 < request_id <= MAX_ID else None
    if row is None or not (
        row.user_id == principal.user_id
        or decide(principal, Action.SEE_REQUESTS, gate_of(row.dataset)).allowed
    ):
        raise NotFound(f"no access request {request_id}")
    return row


def my_requests(session: Session, principal: Principal) -> list[AccessRequest]:
    require(principal, Action.USE_ACCOUNT)
    return list(
        session.scalars(
            select(AccessRequest)
            .where(AccessRequest.user_id == principal.user_id)
            .order_by(AccessRequest.id.desc())
        )
    )


def requests_to_decide(
    session: Session, principal: Principal, status: str | None = "pending"
) -> list[AccessRequest]:
    """Requests of the datasets where the principal sits on the committee (all, for admins)."""
    require(principal, Action.SEE_REQUESTS)
    query = select(AccessRequest).order_by(AccessRequest.id)
    if status is not None:
        query = query.where(AccessRequest.status == status)
    if not principal.is_admin:
        mine = [d for d, roles in principal.roles.items() if Role.COMMITTEE in roles]
        query = query.where(AccessRequest.dataset_id.in_(mine))
    return list(session.scalars(query))


def decide_request(
    session: Session,
    principal: Principal,
    request_id: int,
    approve: bool,
    *,
    ends_on: date | None = None,
    reason: str | None = None,
    address: str | None = None,
) -> AccessRequest:
    row = request_by_id(session, principal, request_id)
    require(principal, Action.DECIDE_REQUESTS, gate_of(row.dataset))
    if principal.user_id is None:
        raise InvalidInput("decisions are made by signed-in committee members")
    if row.user_id == principal.user_id:
        raise Forbidden("nobody decides their own access request")
    if row.status != "pending":
        raise Conflict(f"request {request_id} was {row.status} already")
    moment = now()
    end = moment
    if approve:
        end = (
            datetime.combine(ends_on, time(23, 59, 59), tzinfo=moment.tzinfo)
            if ends_on is not None
            else moment + timedelta(days=row.duration_days)
        )
        if end <= moment:
            raise InvalidInput(f"ends_on: {ends_on} is not in the future")
        if end > moment + timedelta(days=MAX_DAYS):
            raise InvalidInput(f"ends_on: at most {MAX_DAYS} days from today")
    elif not (reason or "").strip():
        raise InvalidInput("reason: a rejection needs a reason")
    # Decided only if still pending when written: of two members deciding at once, one
    # wins and the other gets a conflict (the row lock, or SQLite's write lock, orders them).
    decided = session.execute(
        update(AccessRequest)
        .where(AccessRequest.id == row.id, AccessRequest.status == "pending")
        .values(
            status="approved" if approve else "rejected",
            decided_by=principal.user_id,
            decided_at=moment,
            reason=(reason or "").strip()[:MAX_TEXT] or None,
        )
        .execution_options(synchronize_session=False)
    )
    if decided.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"request {request_id} was decided by someone else meanwhile")
    session.refresh(row)
    if approve:
        session.add(
            Grant(
                request_id=row.id,
                user_id=row.user_id,
                dataset_id=row.dataset_id,
                granted_by=principal.user_id or 0,
                starts_at=moment,
                ends_at=end,
            )
        )
    session.flush()
    audit.append(
        session,
        principal,
        "request.approve" if approve else "request.reject",
        dataset_id=row.dataset_id,
        target=f"request/{row.id}",
        address=address,
        detail={
            "requester_id": row.user_id,
            "reason": row.reason,
            "ends_on": str(ends_on) if ends_on else None,
        },
    )
    return row


def revoke_grant(
    session: Session, principal: Principal, grant_id: int, reason: str, address: str | None = None
) -> Grant:
    require(principal, Action.USE_ACCOUNT)
    grant = session.get(Grant, grant_id) if 0 < grant_id <= MAX_ID else None  # as above
    if grant is None or not decide(principal, Action.SEE_REQUESTS, gate_of(grant.dataset)).allowed:
        raise NotFound(f"no grant {grant_id}")
    require(principal, Action.DECIDE_REQUESTS, gate_of(grant.dataset))
    if grant.revoked_at is not None:
        raise Conflict(f"grant {grant_id} was revoked already")
    revoked = session.execute(
        update(Grant)
        .where(Grant.id == grant.id, Grant.revoked_at.is_(None))
        .values(
            revoked_at=now(),
            revoked_by=principal.user_id,
            revoke_reason=reason.strip()[:MAX_TEXT] or None,
        )
        .execution_options(synchronize_session=False)
    )
    if revoked.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"grant {grant_id} was revoked by someone else meanwhile")
    session.refresh(grant)
    audit.append(
        session,
        principal,
        "grant.revoke",
        dataset_id=grant.dataset_id,
        target=f"grant/{grant.id}",
        address=address,
        detail={"holder_id": grant.user_id, "reason": grant.revoke_reason},
    )
    return grant


def grant_of_request(session: Session, request_id: int) -> Grant | None:
    return session.scalar(select(Grant).where(Grant.request_id == request_id))


def request_record(session: Session, row: AccessRequest) -> dict[str, Any]:
    grant = grant_of_request(session, row.id)
    return {
        "id": row.id,
        "dataset": row.dataset.short_name,
        "requester": row.user.name,
        "project_title": row.project_title,
        "purpose": row.purpose,
        "institution": row.institution,
        "duration_days": row.duration_days,
        "status": row.status,
        "created_at": aware(row.created_at).isoformat(),
        "decided_by": row.decider.name if row.decider else None,
        "decided_at": aware(row.decided_at).isoformat() if row.decided_at else None,
        "reason": row.reason,
        "grant": grant_record(grant) if grant else None,
    }


def grant_record(grant: Grant) -> dict[str, Any]:
    end = aware(grant.ends_at)
    return {
        "id": grant.id,
        "starts_at": aware(grant.starts_at).isoformat(),
        "ends_at": end.isoformat(),
        "revoked_at": aware(grant.revoked_at).isoformat() if grant.revoked_at else None,
        "revoke_reason": grant.revoke_reason,
        "active": grant.revoked_at is None and end > now(),
    }
