"""What stewards and admins set on a dataset: its policy, terms of use, featured slides and
who holds which role in it. Every change is audited in the same transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from slidebank.access import audit
from slidebank.access.policy import Action, DatasetPolicy, Principal, Role, require
from slidebank.access.principals import gate_of
from slidebank.catalog.access_tables import Membership, TermsAcceptance, User
from slidebank.catalog.tables import Dataset, Image, Slide
from slidebank.errors import InvalidInput

MAX_TERMS = 64 * 1024
MAX_FEATURED = 12


def terms_digest(dataset: Dataset) -> str:
    return hashlib.sha256((dataset.terms or "").encode()).hexdigest()


def _normal_terms(terms: str) -> str:
    # Browsers post text areas with CRLF line ends; the same words must not count as new terms.
    return terms.replace("\r\n", "\n").strip()


def set_policy(session: Session, principal: Principal, dataset: Dataset, policy: str) -> None:
    require(principal, Action.CURATE, gate_of(dataset))
    try:
        chosen = DatasetPolicy(policy)
    except ValueError:
        raise InvalidInput(
            f"policy {policy!r}: use one of {', '.join(p.value for p in DatasetPolicy)}"
        ) from None
    before = dataset.policy
    dataset.policy = chosen.value
    audit.append(
        session,
        principal,
        "dataset.policy",
        dataset_id=dataset.id,
        target=dataset.short_name,
        detail={"from": before, "to": chosen.value},
    )


def set_terms(session: Session, principal: Principal, dataset: Dataset, terms: str) -> None:
    require(principal, Action.CURATE, gate_of(dataset))
    if len(terms) > MAX_TERMS:
        raise InvalidInput(f"terms: at most {MAX_TERMS} characters, got {len(terms)}")
    before = terms_digest(dataset)
    dataset.terms = _normal_terms(terms) or None
    if terms_digest(dataset) == before:
        return
    # Terms that changed must be accepted again.
    session.execute(delete(TermsAcceptance).where(TermsAcceptance.dataset_id == dataset.id))
    audit.append(
        session,
        principal,
        "dataset.terms",
        dataset_id=dataset.id,
        target=dataset.short_name,
        detail={"terms_sha256": terms_digest(dataset)},
    )


def set_featured(
    session: Session, principal: Principal, dataset: Dataset, public_ids: Sequence[str]
) -> None:
    require(principal, Action.CURATE, gate_of(dataset))
    if len(public_ids) > MAX_FEATURED:
        raise InvalidInput(f"featured: at most {MAX_FEATURED} slides, got {len(public_ids)}")
    found = set(
        session.scalars(
            select(Image.public_id)
            .join(Slide, Image.slide_id == Slide.id)
            .where(Slide.dataset_id == dataset.id, Image.public_id.in_(list(public_ids)))
        )
    )
    missing = [p for p in public_ids if p not in found]
    if missing:
        raise InvalidInput(
            f"featured: not slides of dataset {dataset.short_name!r}: {', '.join(missing)}"
        )
    dataset.featured = list(dict.fromkeys(public_ids))
    audit.append(
        session,
        principal,
        "dataset.featured",
        dataset_id=dataset.id,
        target=dataset.short_name,
        detail={"slides": dataset.featured},
    )


def add_role(
    session: Session, principal: Principal, dataset: Dataset, user: User, role: str
) -> None:
    require(principal, Action.CURATE, gate_of(dataset))
    chosen = _role(role)
    exists = session.scalar(
        select(Membership.id).where(
            Membership.user_id == user.id,
            Membership.dataset_id == dataset.id,
            Membership.role == chosen.value,
        )
    )
    if exists is None:
        session.add(Membership(user_id=user.id, dataset_id=dataset.id, role=chosen.value))
    audit.append(
        session,
        principal,
        "role.add",
        dataset_id=dataset.id,
        target=user.name,
        detail={"role": chosen.value, "dataset": dataset.short_name},
    )


def remove_role(
    session: Session, principal: Principal, dataset: Dataset, user: User, role: str
) -> None:
    require(principal, Action.CURATE, gate_of(dataset))
    chosen = _role(role)
    session.execute(
        delete(Membership).where(
            Membership.user_id == user.id,
            Membership.dataset_id == dataset.id,
            Membership.role == chosen.value,
        )
    )
    audit.append(
        session,
        principal,
        "role.remove",
        dataset_id=dataset.id,
        target=user.name,
        detail={"role": chosen.value, "dataset": dataset.short_name},
    )


def members(session: Session, principal: Principal, dataset: Dataset) -> list[dict[str, str]]:
    require(principal, Action.SEE_MEMBERS, gate_of(dataset), public=True)
    rows = session.execute(
        select(User.name, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.dataset_id == dataset.id)
        .order_by(User.name, Membership.role)
    )
    return [{"user": name, "role": role} for name, role in rows]


def accept_terms(session: Session, principal: Principal, dataset: Dataset) -> None:
    require(principal, Action.CHANGE_ACCOUNT)
    if principal.user_id is None:
        raise InvalidInput("only a signed-in user can accept terms of use")
    digest = terms_digest(dataset)
    row = session.scalar(
        select(TermsAcceptance).where(
            TermsAcceptance.user_id == principal.user_id,
            TermsAcceptance.dataset_id == dataset.id,
        )
    )
    if row is None:
        session.add(
            TermsAcceptance(user_id=principal.user_id, dataset_id=dataset.id, terms_digest=digest)
        )
    else:
        row.terms_digest = digest
    audit.append(
        session,
        principal,
        "terms.accept",
        dataset_id=dataset.id,
        target=dataset.short_name,
        detail={"terms_sha256": digest},
    )


def _role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput(
            f"role {role!r}: use one of {', '.join(r.value for r in Role)}"
        ) from None
