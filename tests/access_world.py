"""A repository where every kind of principal exists, for the access tests: one dataset
("demo", the demo slide with its case), and users who are anonymous, signed in without a
grant, grant holders, holders of an expired or a revoked grant, annotator, steward,
committee member and site admin, each with a bearer token."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from slidebank.access.accounts import SignInRefused
from slidebank.access.policy import COMMAND_LINE
from slidebank.access.requests import RequestForm
from slidebank.catalog.access_tables import ApiToken, Grant
from slidebank.catalog.dicom_tables import DicomInstance
from slidebank.catalog.queries import SlideFilter
from slidebank.config import Settings
from slidebank.services import accounts, annotating, browsing, ingesting, samples
from slidebank.services.repository import Repository, open_repository

PASSWORD = "a long enough password"
DATASET = "demo"
PERSONAS = (
    "anonymous",
    "plain",
    "holder",
    "expired",
    "revoked",
    "annotator",
    "steward",
    "committee",
    "admin",
)
ROLES = {"annotator": "annotator", "steward": "steward", "committee": "committee"}


@dataclass
class World:
    settings: Settings
    slide_id: str
    pseudonym: str
    associated: str
    tokens: dict[str, str] = field(default_factory=dict)  # persona → bearer token
    spare_keys: dict[str, str] = field(default_factory=dict)  # persona → revocable token key
    request_ids: dict[str, int] = field(default_factory=dict)
    grant_ids: dict[str, int] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)
    expired_token: str = ""  # the steward's, expired
    read_token: str = ""  # the steward's, scope read
    session_secret: str = ""  # plain's browser session
    dicom: tuple[str, str, str] = ("", "", "")  # study, series, instance UIDs (if ingested)
    stored_file: str = ""  # a stored DICOM file of the slide, for downloads
    annotation_sets: dict[str, int] = field(default_factory=dict)  # the annotator's: own, promote


def build_world(home: Path, database_url: str | None, dicom: Path | None = None) -> World:
    """The world; with ``dicom`` (a folder of DICOM WSI instances), that slide too, in the
    same dataset (ingested first: the demo slide stays the newest, ``slide_id``)."""
    settings = Settings(home=home, database_url=database_url)
    repository = open_repository(settings)
    try:
        uids = ("", "", "")
        if dicom is not None:
            (outcome,) = ingesting.ingest_paths(repository, [dicom], DATASET).outcomes
            assert outcome.status == "ingested", outcome.reason
            uids = _first_instance(repository)
        ingesting.ingest_paths(
            repository, [samples.demo_slides(home)], DATASET, samples.demo_sidecar(home)
        )
        slide = browsing.list_slides(repository, COMMAND_LINE, SlideFilter(dataset=DATASET))[0]
        record = browsing.show_slide(repository, COMMAND_LINE, slide["id"])
        associated = record["image"]["associated_images"][0]["name"]
        world = World(settings, slide["id"], record["case"]["pseudonym"], associated, dicom=uids)
        world.stored_file = record["image"]["files"][0]["name"]
        for persona in PERSONAS[1:]:
            accounts.add_user(repository, COMMAND_LINE, persona, PASSWORD, persona == "admin")
            world.user_ids[persona] = accounts.principal_for_user(repository, persona).user_id or 0
            scope = "admin" if persona == "admin" else "write"
            world.tokens[persona] = accounts.create_token(
                repository, COMMAND_LINE, persona, scope, 30
            ).token
            world.spare_keys[persona] = accounts.create_token(
                repository, COMMAND_LINE, persona, "read", 30, "spare"
            ).row.key
            if persona in ROLES:
                accounts.add_role(repository, COMMAND_LINE, DATASET, persona, ROLES[persona])
        # Requests need a controlled dataset; the tests set the policy they want afterwards.
        accounts.set_policy(repository, COMMAND_LINE, DATASET, "controlled")
        committee = accounts.principal_for_user(repository, "committee")
        for persona in ("holder", "expired", "revoked", "plain"):
            asker = accounts.principal_for_user(repository, persona)
            form = RequestForm("Project " + persona, "Training a model", "Somewhere", 30, True)
            made = accounts.request_access(repository, asker, DATASET, form, "127.0.0.1")
            world.request_ids[persona] = made["id"]
            if persona == "plain":
                continue  # stays pending
            decided = accounts.decide_request(
                repository, committee, made["id"], True, None, None, "127.0.0.1"
            )
            world.grant_ids[persona] = decided["grant"]["id"]
        accounts.revoke_grant(
            repository, committee, world.grant_ids["revoked"], "project ended", "127.0.0.1"
        )
        with repository.catalogue.transaction() as session:
            session.execute(
                update(Grant)
                .where(Grant.id == world.grant_ids["expired"])
                .values(ends_at=datetime.now(UTC) - timedelta(days=1))
            )
        world.read_token = accounts.create_token(
            repository, COMMAND_LINE, "steward", "read", 30
        ).token
        expiring = accounts.create_token(repository, COMMAND_LINE, "steward", "write", 1)
        world.expired_token = expiring.token
        with repository.catalogue.transaction() as session:
            session.execute(
                update(ApiToken)
                .where(ApiToken.key == expiring.row.key)
                .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
            )
        signed_in = accounts.sign_in(repository, "plain", PASSWORD, "127.0.0.1", 2)
        assert not isinstance(signed_in, SignInRefused)
        world.session_secret = signed_in.secret
        annotator = accounts.principal_for_user(repository, "annotator")
        for key in ("own", "promote"):
            made = annotating.create_set(repository, annotator, world.slide_id, key)
            world.annotation_sets[key] = made["id"]
            feature = {"type": "Point", "coordinates": [5, 5]}
            annotating.edit(repository, annotator, made["id"], add=[{"geometry": feature}])
        # The grant holder has also accepted the terms (what registered datasets ask).
        accounts.accept_terms(
            repository, accounts.principal_for_user(repository, "holder"), DATASET
        )
        return world
    finally:
        repository.close()


def _first_instance(repository: Repository) -> tuple[str, str, str]:
    with repository.catalogue.reading() as session:
        row = session.execute(
            select(DicomInstance.study_uid, DicomInstance.series_uid, DicomInstance.sop_uid)
            .order_by(DicomInstance.id)
            .limit(1)
        ).one()
    return (row[0], row[1], row[2])


def can_read_data(persona: str, policy: str) -> bool:
    """The expected answer, written independently of ``access.policy``: every role in the
    dataset and site admins read; otherwise open data is for anyone, registered data for
    those who accepted the terms, controlled data for holders of a live grant."""
    if persona in ("admin", "steward", "committee", "annotator"):
        return True
    if policy == "open":
        return True
    return persona == "holder"
