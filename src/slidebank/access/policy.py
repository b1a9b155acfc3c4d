"""The one place that decides who may do what: ``decide(principal, action, dataset)``.

Routes and use cases never make their own checks: they name the action and the dataset it
touches and call :func:`require`. The rules, in order:

* Landing information (title, description, licence, terms, counts, the slides the steward
  features) is public under every policy.
* A token can do at most what its scope allows (read < write < admin); a browser session
  can do whatever its user can.
* Site admins may do everything. In a dataset, a steward curates it (and promotes
  annotation sets to reference) and reads its audit, committee members decide its access
  requests, annotators write annotations — into sets they own only; every role in a
  dataset reads its data.
* Reading data (pixels, slide and case metadata, annotations, downloads) follows the
  dataset's policy: ``open`` for anyone, ``registered`` for signed-in users who accepted
  the dataset's terms, ``controlled`` for holders of a grant that has not ended or been
  revoked.

Refusals are 404 where the existence of the thing is itself private and 403 where it is
public (a dataset's landing page, a featured slide); :class:`Decision` carries which.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from slidebank.errors import Forbidden, NotFound, SignInRequired, no_such_slide


class DatasetPolicy(StrEnum):
    OPEN = "open"
    REGISTERED = "registered"
    CONTROLLED = "controlled"


class Role(StrEnum):
    STEWARD = "steward"
    COMMITTEE = "committee"
    ANNOTATOR = "annotator"
    VIEWER = "viewer"


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


SCOPE_RANK = {Scope.READ: 0, Scope.WRITE: 1, Scope.ADMIN: 2}


class Action(StrEnum):
    """What a request does. Every route declares one (``web/routes.py``)."""

    SEE_LANDING = "see-landing"  # dataset landing information; public
    SEE_PUBLIC = "see-public"  # the site's public pages, sign-in, health, documentation
    READ_METADATA = "read-metadata"  # slide records and listings, cases, observations
    READ_PIXELS = "read-pixels"  # tiles, IIIF, regions, thumbnails, associated images
    READ_ANNOTATIONS = "read-annotations"
    DOWNLOAD = "download"
    WRITE_ANNOTATIONS = "write-annotations"
    USE_ACCOUNT = "use-account"  # see one's own tokens and requests; any signed-in user
    CHANGE_ACCOUNT = "change-account"  # create or revoke one's tokens, accept terms
    REQUEST_ACCESS = "request-access"
    SEE_REQUESTS = "see-requests"  # a dataset's access requests and grants (its committee)
    DECIDE_REQUESTS = "decide-requests"
    CURATE = "curate"  # policy, terms, featured slides, roles in the dataset
    SEE_MEMBERS = "see-members"  # who holds which role in the dataset
    READ_AUDIT = "read-audit"
    ADMINISTER = "administer"  # users, roles anywhere, the whole audit trail


# The least token scope each action needs.
ACTION_SCOPE: dict[Action, Scope] = {
    Action.SEE_LANDING: Scope.READ,
    Action.SEE_PUBLIC: Scope.READ,
    Action.READ_METADATA: Scope.READ,
    Action.READ_PIXELS: Scope.READ,
    Action.READ_ANNOTATIONS: Scope.READ,
    Action.DOWNLOAD: Scope.READ,
    Action.USE_ACCOUNT: Scope.READ,
    Action.CHANGE_ACCOUNT: Scope.WRITE,
    Action.READ_AUDIT: Scope.READ,
    Action.SEE_REQUESTS: Scope.READ,
    Action.SEE_MEMBERS: Scope.READ,
    Action.WRITE_ANNOTATIONS: Scope.WRITE,
    Action.REQUEST_ACCESS: Scope.WRITE,
    Action.DECIDE_REQUESTS: Scope.WRITE,
    Action.CURATE: Scope.WRITE,
    Action.ADMINISTER: Scope.ADMIN,
}
DATA_ACTIONS = frozenset(
    {Action.READ_METADATA, Action.READ_PIXELS, Action.READ_ANNOTATIONS, Action.DOWNLOAD}
)
# The role in the dataset that allows each dataset action beyond reading data.
ROLE_ACTIONS: dict[Action, frozenset[Role]] = {
    Action.WRITE_ANNOTATIONS: frozenset({Role.ANNOTATOR, Role.STEWARD}),
    Action.SEE_REQUESTS: frozenset({Role.COMMITTEE}),
    Action.DECIDE_REQUESTS: frozenset({Role.COMMITTEE}),
    Action.CURATE: frozenset({Role.STEWARD}),
    Action.READ_AUDIT: frozenset({Role.STEWARD}),
    Action.SEE_MEMBERS: frozenset({Role.STEWARD}),
}


@dataclass(frozen=True)
class Principal:
    """Who is asking, with everything the policy needs to know about them."""

    user_id: int | None = None
    name: str = "anonymous"
    is_admin: bool = False
    scope: Scope = Scope.ADMIN  # a token's scope; sessions carry their user's full rights
    roles: Mapping[int, frozenset[Role]] = field(default_factory=dict)  # dataset id → roles
    grants: Mapping[int, datetime] = field(default_factory=dict)  # dataset id → end
    accepted_terms: frozenset[int] = frozenset()  # dataset ids
    via: str = "anonymous"  # anonymous, session, token, command line

    @property
    def signed_in(self) -> bool:
        return self.user_id is not None or self.via == "command line"


ANONYMOUS = Principal()
# The command line runs with the rights of whoever can read the repository's files.
COMMAND_LINE = Principal(name="command-line", is_admin=True, via="command line")


@dataclass(frozen=True)
class DatasetGate:
    """What the policy needs to know about a dataset."""

    id: int
    name: str
    policy: DatasetPolicy
    featured: frozenset[str] = frozenset()  # public ids of slides on the landing page


@dataclass(frozen=True)
class Owner:
    """The owner of the thing acted on (an annotation set): a user, or none (an algorithm
    run's set, which no user writes)."""

    user_id: int | None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int = 200  # 401, 403 or 404 when refused
    reason: str = ""

    def raise_if_refused(self) -> None:
        if self.allowed:
            return
        if self.status == 404:
            raise NotFound(self.reason)
        if self.status == 401:
            raise SignInRequired(self.reason)
        raise Forbidden(self.reason)


ALLOWED = Decision(True)


def decide(
    principal: Principal,
    action: Action,
    dataset: DatasetGate | None = None,
    *,
    public: bool = False,
    owner: Owner | None = None,
    now: datetime | None = None,
) -> Decision:
    """May ``principal`` do ``action`` (on ``dataset``)? ``public`` says whether the thing
    itself is publicly known (a featured slide), which turns a 404 refusal into 403.
    ``owner``: who owns the thing written (annotation sets are written by their owner)."""
    needed = ACTION_SCOPE[action]
    if SCOPE_RANK[principal.scope] < SCOPE_RANK[needed]:
        return Decision(
            False, 403, f"this token's scope is {principal.scope}; {action} needs {needed}"
        )
    if action in (Action.SEE_PUBLIC, Action.SEE_LANDING):
        return ALLOWED
    if principal.is_admin:
        return ALLOWED
    if not principal.signed_in and action not in DATA_ACTIONS:
        return Decision(False, 401, "sign in first")
    if action in (Action.USE_ACCOUNT, Action.CHANGE_ACCOUNT):
        return ALLOWED
    if action is Action.ADMINISTER:
        return Decision(False, 403, "only site administrators may do this")
    if dataset is None:
        # Dataset actions without a dataset: committees and stewards see their own lists.
        return (
            ALLOWED
            if action in ROLE_ACTIONS or action is Action.REQUEST_ACCESS
            else Decision(False, 403, f"{action} needs a dataset")
        )
    roles = principal.roles.get(dataset.id, frozenset())
    if action is Action.REQUEST_ACCESS:
        return ALLOWED
    if action in ROLE_ACTIONS:
        if roles & ROLE_ACTIONS[action]:
            if owner is not None and owner.user_id != principal.user_id:
                return Decision(False, 403, "only the owner of this annotation set may change it")
            return ALLOWED
        wanted = " or ".join(sorted(ROLE_ACTIONS[action]))
        return Decision(False, 403, f"only a {wanted} of dataset {dataset.name!r} may do this")
    return _read_data(principal, dataset, roles, public, now)


def _read_data(
    principal: Principal,
    dataset: DatasetGate,
    roles: frozenset[Role],
    public: bool,
    now: datetime | None,
) -> Decision:
    if roles or dataset.policy is DatasetPolicy.OPEN:
        return ALLOWED
    refused = 403 if public else 404
    name = dataset.name
    if dataset.policy is DatasetPolicy.REGISTERED:
        if not principal.signed_in:
            return Decision(False, refused, f"dataset {name!r} is for registered users: sign in")
        if dataset.id in principal.accepted_terms:
            return ALLOWED
        return Decision(False, refused, f"accept the terms of use of dataset {name!r} first")
    end = principal.grants.get(dataset.id)
    # The clock is read only for a grant: every tile of an open dataset asks this function.
    if end is not None and end > (now or datetime.now(UTC)):
        return ALLOWED
    if not principal.signed_in:
        return Decision(
            False, refused, f"dataset {name!r} is controlled: sign in and request access"
        )
    return Decision(
        False, refused, f"dataset {name!r} is controlled: it needs an approved access request"
    )


def require(
    principal: Principal,
    action: Action,
    dataset: DatasetGate | None = None,
    *,
    public: bool = False,
    owner: Owner | None = None,
    hidden_as: NotFound | None = None,
) -> None:
    """Raise ``NotFound`` or ``Forbidden`` unless :func:`decide` allows. ``hidden_as``: what
    is raised for a thing that does not exist; a refusal that hides the thing (404) raises
    it too, so that the answer is the same whether the thing exists or not."""
    decision = decide(principal, action, dataset, public=public, owner=owner)
    if not decision.allowed and decision.status == 404 and hidden_as is not None:
        raise hidden_as
    decision.raise_if_refused()


def require_for_slide(
    principal: Principal, action: Action, dataset: DatasetGate, public_id: str
) -> None:
    """:func:`require` for one slide of ``dataset``: a slide the dataset features on its
    landing page is public (refused with 403); any other is refused as if it did not exist."""
    # Every tile asks this: the refusal is built only when there is one.
    decision = decide(principal, action, dataset, public=public_id in dataset.featured)
    if decision.allowed:
        return
    if decision.status == 404:
        raise no_such_slide(public_id)
    decision.raise_if_refused()
