from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from slidebank.catalog import queries
from slidebank.catalog.database import Catalogue
from slidebank.catalog.entries import (
    DatasetEntry,
    ObservationEntry,
    ScanEntry,
    SlideEntry,
    StoredFile,
)
from slidebank.catalog.queries import SlideFilter
from slidebank.catalog.tables import Image, Observation
from slidebank.errors import InvalidInput, NotFound


def _scan(checksum: str, **overrides: object) -> ScanEntry:
    values: dict[str, object] = {
        "format": "aperio",
        "vendor": "aperio",
        "backend": "openslide",
        "width": 1000,
        "height": 800,
        "levels": [{"width": 1000, "height": 800, "downsample": 1.0}],
        "mpp_x": 0.25,
        "mpp_y": 0.25,
        "objective_power": 40.0,
        "associated": [],
        "properties": {},
        "checksum": checksum,
        "storage_key": checksum,
        "files": (StoredFile("slide.svs", "x.svs", checksum, 10),),
        "source_name": "x.svs",
    }
    values.update(overrides)
    return ScanEntry(**values)  # type: ignore[arg-type]


@pytest.fixture
def catalogue(database_url: str) -> Catalogue:
    catalogue = Catalogue(database_url)
    catalogue.migrate()
    return catalogue


def test_public_ids_are_readable_and_unique() -> None:
    ids = {queries.new_public_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"sb-[a-z0-9]{10}", value) for value in ids)


def test_dataset_names_are_checked(catalogue: Catalogue) -> None:
    with catalogue.transaction() as session, pytest.raises(InvalidInput, match="dataset name"):
        queries.ensure_dataset(session, DatasetEntry("bad name!"))


def test_same_checksum_twice_is_refused_by_the_database(catalogue: Catalogue) -> None:
    with catalogue.transaction() as session:
        dataset = queries.ensure_dataset(session, DatasetEntry("d"))
        queries.add_scanned_slide(session, dataset, _scan("1" * 64), None)
    with pytest.raises(IntegrityError), catalogue.transaction() as session:
        dataset = queries.ensure_dataset(session, DatasetEntry("d"))
        queries.add_scanned_slide(session, dataset, _scan("1" * 64), None)
    with catalogue.reading() as session:
        assert session.scalar(select(func.count(Image.id))) == 1


def test_an_observation_belongs_to_exactly_one_subject(catalogue: Catalogue) -> None:
    with pytest.raises(IntegrityError), catalogue.transaction() as session:
        session.add(Observation(kind="finding", text="nobody's"))
        session.flush()
    with pytest.raises(IntegrityError), catalogue.transaction() as session:
        dataset = queries.ensure_dataset(session, DatasetEntry("d"))
        image = queries.add_scanned_slide(session, dataset, _scan("2" * 64), None)
        session.add(Observation(kind="opinion", image_id=image.id))
        session.flush()


def test_filters_and_paging(catalogue: Catalogue) -> None:
    with catalogue.transaction() as session:
        dataset = queries.ensure_dataset(session, DatasetEntry("tox", title="Tox"))
        for index, species in enumerate(["Rattus norvegicus", "Mus musculus", "Rattus norvegicus"]):
            entry = SlideEntry(
                case=f"animal-{index}",
                species=species,
                anatomical_site="liver" if index else "kidney",
                stain_compound="H&E",
                case_observations=(
                    ObservationEntry(
                        "diagnosis", code=f"D{index}", scheme="SCT", meaning="necrosis_%"
                    ),
                ),
            )
            queries.add_scanned_slide(
                session, dataset, _scan(f"{index}" * 64, mpp_x=0.25 * (index + 1)), entry
            )

        # A slide with no case: its diagnosis is on the slide itself.
        queries.add_scanned_slide(
            session,
            dataset,
            _scan("9" * 64, mpp_x=None),
            SlideEntry(
                slide_observations=(ObservationEntry("diagnosis", text="Cholangiocarcinoma"),)
            ),
        )

    def count(**where: object) -> int:
        with catalogue.reading() as session:
            return len(queries.list_images(session, SlideFilter(**where)))  # type: ignore[arg-type]

    assert count() == 4
    assert count(diagnosis="cholangio") == 1
    assert count(species="rattus") == 2
    assert count(anatomical_site="LIVER") == 2
    assert count(diagnosis="D1") == 1
    assert count(diagnosis="necrosis_%") == 3
    assert count(diagnosis="necrosis_x") == 0  # % and _ are matched literally
    assert count(mpp_min=0.3) == 2
    assert count(mpp_max=0.3) == 1
    assert count(limit=3) == 3
    assert count(limit=3, offset=3) == 1
    with pytest.raises(InvalidInput, match="limit"):
        count(limit=0)
    with catalogue.reading() as session, pytest.raises(NotFound, match="no slide with id"):
        queries.image_by_public_id(session, "sb-nothere")
