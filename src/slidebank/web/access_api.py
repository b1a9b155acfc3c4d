"""The JSON API of accounts and access: who I am, my tokens, terms, access requests,
committee decisions, grants, dataset stewardship and the audit trail."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from slidebank.access.accounts import token_record
from slidebank.access.audit import csv_cell
from slidebank.access.policy import Principal
from slidebank.access.requests import RequestForm
from slidebank.catalog.queries import MAX_ID, MAX_OFFSET
from slidebank.services import accounts
from slidebank.web.auth import client_address, current_principal
from slidebank.web.state import AppState, app_state

router = APIRouter(prefix="/api", tags=["access"])
State = Annotated[AppState, Depends(app_state)]
Asker = Annotated[Principal, Depends(current_principal)]
MAX_AUDIT_PAGE = 10_000
RequestId = Annotated[int, Path(ge=1, le=MAX_ID, description="The access request's id.")]
GrantId = Annotated[int, Path(ge=1, le=MAX_ID, description="The grant's id.")]
AuditOffset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Events to skip.")]


class Me(BaseModel):
    name: str
    signed_in: bool
    admin: bool
    via: str
    scope: str
    roles: dict[int, list[str]]
    grants: dict[int, str]
    accepted_terms: list[int]


@router.get("/me", summary="Who the request is made as, with roles, grants and accepted terms")
def me(asker: Asker) -> Me:
    return Me(
        name=asker.name,
        signed_in=asker.signed_in,
        admin=asker.is_admin,
        via=asker.via,
        scope=asker.scope.value,
        roles={d: sorted(r.value for r in roles) for d, roles in asker.roles.items()},
        grants={d: end.isoformat() for d, end in asker.grants.items()},
        accepted_terms=sorted(asker.accepted_terms),
    )


class TokenRequest(BaseModel):
    scope: Literal["read", "write", "admin"] = "read"
    expires_days: int = Field(90, ge=1, le=366)
    label: str | None = Field(None, max_length=128)


@router.get("/me/tokens", summary="My API tokens (never their secrets)")
def my_tokens(state: State, asker: Asker) -> list[dict[str, Any]]:
    return accounts.list_tokens(state.repository, asker)


@router.post("/me/tokens", status_code=201, summary="Create an API token: shown once")
def create_token(
    state: State, asker: Asker, request: Request, body: TokenRequest
) -> dict[str, Any]:
    new = accounts.create_token(
        state.repository,
        asker,
        None,
        body.scope,
        body.expires_days,
        body.label,
        client_address(request),
    )
    return {"token": new.token, **token_record(new.row)}


@router.delete("/me/tokens/{key}", summary="Revoke one of my API tokens")
def revoke_token(state: State, asker: Asker, request: Request, key: str) -> dict[str, Any]:
    revoked = accounts.revoke_token(state.repository, asker, key, client_address(request))
    return revoked


@router.post("/datasets/{name}/terms/accept", summary="Accept a dataset's terms of use")
def accept_terms(state: State, asker: Asker, name: str) -> dict[str, str]:
    accounts.accept_terms(state.repository, asker, name)
    return {"dataset": name, "terms": "accepted"}


class AccessRequestBody(BaseModel):
    project_title: str = Field(max_length=256)
    purpose: str = Field(max_length=10_000)
    institution: str = Field(max_length=256)
    duration_days: int = Field(ge=1, le=5 * 366)
    accept_terms: bool


@router.post(
    "/datasets/{name}/access-requests",
    status_code=201,
    summary="Request access to a controlled dataset",
)
def request_access(
    state: State, asker: Asker, request: Request, name: str, body: AccessRequestBody
) -> dict[str, Any]:
    form = RequestForm(**body.model_dump())
    return accounts.request_access(state.repository, asker, name, form, client_address(request))


@router.get("/access-requests", summary="My access requests and their outcomes")
def my_requests(state: State, asker: Asker) -> list[dict[str, Any]]:
    return accounts.my_requests(state.repository, asker)


@router.get("/access-requests/{request_id}", summary="One access request")
def show_request(state: State, asker: Asker, request_id: RequestId) -> dict[str, Any]:
    return accounts.show_request(state.repository, asker, request_id)


@router.get("/committee/requests", summary="Requests of the datasets whose committee I sit on")
def committee_requests(
    state: State,
    asker: Asker,
    status: Annotated[
        Literal["pending", "approved", "rejected", "withdrawn", "all"], Query()
    ] = "pending",
) -> list[dict[str, Any]]:
    return accounts.requests_to_decide(state.repository, asker, None if status == "all" else status)


class DecisionBody(BaseModel):
    decision: Literal["approve", "reject"]
    ends_on: date | None = Field(None, description="Last day of the grant (approvals).")
    reason: str | None = Field(None, max_length=10_000, description="Required to reject.")


@router.post("/access-requests/{request_id}/decision", summary="Approve or reject a request")
def decide(
    state: State, asker: Asker, request: Request, request_id: RequestId, body: DecisionBody
) -> dict[str, Any]:
    decided = accounts.decide_request(
        state.repository,
        asker,
        request_id,
        body.decision == "approve",
        body.ends_on,
        body.reason,
        client_address(request),
    )
    return decided


class RevokeBody(BaseModel):
    reason: str = Field(max_length=10_000)


@router.post("/grants/{grant_id}/revoke", summary="Revoke a grant")
def revoke_grant(
    state: State, asker: Asker, request: Request, grant_id: GrantId, body: RevokeBody
) -> dict[str, Any]:
    revoked = accounts.revoke_grant(
        state.repository, asker, grant_id, body.reason, client_address(request)
    )
    return revoked


class PolicyBody(BaseModel):
    policy: Literal["open", "registered", "controlled"]
    terms: str | None = Field(None, max_length=64 * 1024)
    featured: list[str] | None = Field(None, max_length=12)


@router.put("/datasets/{name}/policy", summary="Set a dataset's policy, terms, featured slides")
def set_policy(state: State, asker: Asker, name: str, body: PolicyBody) -> dict[str, str]:
    accounts.update_access(state.repository, asker, name, body.policy, body.terms, body.featured)
    return {"dataset": name, "policy": body.policy}


class MemberBody(BaseModel):
    user: str = Field(max_length=64)
    role: Literal["steward", "committee", "annotator", "viewer"]


@router.post("/datasets/{name}/members", status_code=201, summary="Give a user a role here")
def add_member(state: State, asker: Asker, name: str, body: MemberBody) -> dict[str, str]:
    accounts.add_role(state.repository, asker, name, body.user, body.role)
    return {"dataset": name, "user": body.user, "role": body.role}


@router.delete("/datasets/{name}/members/{user}/{role}", summary="Take a user's role away")
def remove_member(state: State, asker: Asker, name: str, user: str, role: str) -> dict[str, str]:
    accounts.remove_role(state.repository, asker, name, user, role)
    return {"dataset": name, "user": user, "role": role, "removed": "yes"}


@router.get("/datasets/{name}/members", summary="Who holds which role here (stewards)")
def list_members(state: State, asker: Asker, name: str) -> list[dict[str, str]]:
    return accounts.members(state.repository, asker, name)


AuditFormat = Literal["json", "csv"]
AUDIT_COLUMNS = ("seq", "at", "actor", "action", "dataset_id", "target", "address", "count", "hash")


@router.get("/datasets/{name}/audit", summary="A dataset's audit trail (stewards, admins)")
async def dataset_audit(
    state: State,
    asker: Asker,
    name: str,
    format: Annotated[AuditFormat, Query()] = "json",
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = 1000,
    offset: AuditOffset = 0,
) -> Response:
    rows = await run_in_threadpool(
        accounts.audit_events, state.repository, asker, name, limit, offset, state.reads
    )
    return _audit_response(rows, format, f"audit-{name}")


@router.get("/audit", summary="The whole audit trail (site admins)")
async def site_audit(
    state: State,
    asker: Asker,
    format: Annotated[AuditFormat, Query()] = "json",
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = 1000,
    offset: AuditOffset = 0,
) -> Response:
    rows = await run_in_threadpool(
        accounts.audit_events, state.repository, asker, None, limit, offset, state.reads
    )
    return _audit_response(rows, format, "audit")


def _audit_response(rows: list[dict[str, Any]], fmt: AuditFormat, name: str) -> Response:
    if fmt == "json":
        return JSONResponse(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*AUDIT_COLUMNS, "detail"])
    for row in rows:
        writer.writerow(
            [csv_cell(row[c]) for c in AUDIT_COLUMNS] + [csv_cell(json.dumps(row["detail"]))]
        )
    return Response(
        buffer.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )
