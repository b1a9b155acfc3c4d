"""What a running application holds: the repository, open slides, serving options, and the
caches and tallies of access control."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from slidebank.access.audit import ReadTally
from slidebank.access.policy import Action, DatasetGate, DatasetPolicy, require_for_slide
from slidebank.config import Settings
from slidebank.errors import NotFound
from slidebank.services import accounts
from slidebank.services.dicomweb import DicomReads
from slidebank.services.open_slides import OpenSlides, ServedSlide
from slidebank.services.repository import Repository
from slidebank.services.serving import ServingOptions
from slidebank.web.auth import SAFE_METHODS, CredentialCache, client_address, credential
from slidebank.web.single_flight import SingleFlight

OPEN_DATA_KEY = "slidebank.open_data"
if TYPE_CHECKING:
    from slidebank.access.oidc import OidcClient  # imported only when sign-in uses it

# How long a dataset's policy and featured slides are cached: a steward's change reaches
# every worker within this time.
GATES_TTL_S = 2.0


@dataclass
class AppState:
    settings: Settings
    repository: Repository
    slides: OpenSlides
    options: ServingOptions
    credentials: CredentialCache = field(default_factory=CredentialCache)
    reads: ReadTally = field(default_factory=ReadTally)
    oidc: OidcClient | None = None  # made at the first OpenID Connect sign-in
    dicom_reads: DicomReads | None = None  # made at the first DICOMweb read
    _gates: dict[int, DatasetGate] = field(default_factory=dict)
    _gates_until: float = 0.0
    _gates_loads: SingleFlight[str, dict[int, DatasetGate]] = field(default_factory=SingleFlight)

    async def _fresh_gates(self) -> dict[int, DatasetGate]:
        if time.monotonic() < self._gates_until:
            return self._gates
        load = partial(run_in_threadpool, accounts.gates, self.repository)
        return await self._gates_loads.load("gates", load, self._keep_gates)

    def _keep_gates(self, gates: dict[int, DatasetGate]) -> None:
        self._gates = gates
        self._gates_until = time.monotonic() + GATES_TTL_S

    async def gate(self, dataset_id: int) -> DatasetGate:
        if time.monotonic() < self._gates_until:  # every tile asks: no coroutine for it
            known = self._gates.get(dataset_id)
            if known is not None:
                return known
        gate = (await self._fresh_gates()).get(dataset_id)
        if gate is None:
            # A dataset made since the last load (an ingest running beside the server).
            self.forget_gates()
            gate = (await self._fresh_gates()).get(dataset_id)
        if gate is None:
            raise NotFound(f"no dataset {dataset_id}")
        return gate

    async def note_read(
        self, request: Request, action: Action, dataset_name: str, target: str
    ) -> None:
        """Tally a read of data that did not come through ``acquire`` (slide records, cases)."""
        principal = (await credential(request)).principal
        for gate in (await self._fresh_gates()).values():
            if gate.name == dataset_name:
                self.reads.add(principal, action.value, gate.id, target, client_address(request))
                return

    async def note_reads(
        self, request: Request, action: Action, found: Iterable[tuple[str, str]]
    ) -> None:
        """Tally reads a use case reported as (dataset short name, target) pairs."""
        for dataset_name, target in found:
            await self.note_read(request, action, dataset_name, target)

    def forget_gates(self) -> None:
        self._gates_until = 0.0
        self._gates_loads.forget()

    async def acquire(
        self,
        request: Request,
        public_id: str,
        action: Action = Action.READ_PIXELS,
        landing: bool = False,
    ) -> ServedSlide:
        """The open slide, if the request's principal may do ``action`` on it (the policy
        decides; ``landing``: what a dataset's landing page shows of the slides it features
        is public); the read is tallied for the audit trail. Release it after use."""
        principal = (await credential(request)).principal
        slide = self.slides.cached(public_id)
        try:
            # A slide not open yet is checked before it is opened: refusing costs one lookup,
            # the same as for a slide that does not exist.
            dataset_id = (
                slide.dataset_id
                if slide is not None
                else await run_in_threadpool(self.slides.dataset_of, public_id)
            )
            gate = await self.gate(dataset_id)
            if not (landing and public_id in gate.featured):
                require_for_slide(principal, action, gate, public_id)
        except BaseException:
            if slide is not None:
                self.slides.release(slide)
            raise
        if slide is None:
            slide = await run_in_threadpool(self.slides.acquire, public_id)
        request.scope[OPEN_DATA_KEY] = gate.policy is DatasetPolicy.OPEN
        self.reads.add(
            principal, action.value, slide.dataset_id, public_id, client_address(request)
        )
        return slide

    def close(self) -> None:
        accounts.flush_reads(self.repository, self.reads, everything=True)
        if self.oidc is not None:
            self.oidc.close()
        self.slides.close()
        self.repository.close()


class ForgetAccessOnWrites:
    """ASGI middleware: after any request that may change something (not GET, HEAD or
    OPTIONS), this worker forgets its cached principals and dataset policies, so a grant,
    revocation, role or policy change made here counts from the next request on. Other
    workers catch up within their cache times. One mechanism, so that no route has to
    remember; reads (every tile) pass straight through."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.credentials.clear()
            self.state.forget_gates()


def app_state(request: Request) -> AppState:
    """The application's state (a FastAPI dependency)."""
    state: AppState = request.app.state.slidebank
    return state
