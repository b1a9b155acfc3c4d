"""Principals and dataset gates, loaded from the catalogue for the policy to decide on."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from slidebank.access.clock import aware, now
from slidebank.access.policy import DatasetGate, DatasetPolicy, Principal, Role, Scope
from slidebank.catalog.access_tables import Grant, Membership, TermsAcceptance, User
from slidebank.catalog.tables import Dataset


def principal_of(session: Session, user: User, scope: Scope, via: str) -> Principal:
    """Everything the policy needs about ``user``: roles, live grants, accepted terms."""
    roles: dict[int, set[Role]] = defaultdict(set)
    for dataset_id, role in session.execute(
        select(Membership.dataset_id, Membership.role).where(Membership.user_id == user.id)
    ):
        roles[dataset_id].add(Role(role))
    grants: dict[int, object] = {}
    moment = now()
    for grant in session.scalars(
        select(Grant).where(Grant.user_id == user.id, Grant.revoked_at.is_(None))
    ):
        end = aware(grant.ends_at)
        if end > moment and (grant.dataset_id not in grants or end > grants[grant.dataset_id]):  # type: ignore[operator]
            grants[grant.dataset_id] = end
    accepted = frozenset(
        session.scalars(
            select(TermsAcceptance.dataset_id).where(TermsAcceptance.user_id == user.id)
        )
    )
    return Principal(
        user_id=user.id,
        name=user.name,
        is_admin=user.is_admin,
        scope=scope,
        roles={k: frozenset(v) for k, v in roles.items()},
        grants=grants,  # type: ignore[arg-type]
        accepted_terms=accepted,
        via=via,
    )


def dataset_gates(session: Session) -> dict[int, DatasetGate]:
    return {dataset.id: gate_of(dataset) for dataset in session.scalars(select(Dataset))}


def gate_of(dataset: Dataset) -> DatasetGate:
    return DatasetGate(
        dataset.id,
        dataset.short_name,
        DatasetPolicy(dataset.policy),
        frozenset(dataset.featured or ()),
    )
