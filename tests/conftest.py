"""Shared fixtures: the real test slides in ../shared/testdata, and catalogues on SQLite and
PostgreSQL (every test that touches the catalogue runs on both)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from slidebank.config import Settings
from slidebank.services.repository import Repository, open_repository

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_ADMIN_URL = os.environ.get(
    "SLIDEBANK_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _testdata_root() -> Path:
    given = os.environ.get("SLIDEBANK_TESTDATA")
    return Path(given) if given else ROOT.parent / "shared" / "testdata"


TESTDATA = _testdata_root()


@pytest.fixture(scope="session")
def testdata() -> Path:
    """../shared/testdata; tests skip without it, except in CI where that is a failure."""
    if not (TESTDATA / "README.md").is_file():
        if IN_CI:
            pytest.fail(f"test data missing at {TESTDATA} (required in CI)")
        pytest.skip(f"test data not found at {TESTDATA}")
    return TESTDATA


@pytest.fixture(scope="session")
def slides_dir(testdata: Path) -> Path:
    return testdata / "slides"


@pytest.fixture(scope="session")
def cmu_small(slides_dir: Path) -> Path:
    return slides_dir / "aperio" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def wg26_files(slides_dir: Path) -> tuple[Path, ...]:
    folder = slides_dir / "dicom" / "WG26-BPAEC-partial"
    return tuple(sorted(p for p in folder.iterdir() if p.name != "readme.txt"))


def _postgres_available() -> bool:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[str]:
    if not _postgres_available():
        if IN_CI:
            pytest.fail(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} (required in CI)")
        pytest.skip("PostgreSQL not reachable")
    yield POSTGRES_ADMIN_URL


def _fresh_postgres_database(admin_url: str) -> Iterator[str]:
    name = f"slidebank_test_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty catalogue database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalogue.sqlite'}"
        return
    admin_url = request.getfixturevalue("postgres_admin")
    yield from _fresh_postgres_database(admin_url)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(home=tmp_path / "repo", database_url=database_url)


@pytest.fixture
def repository(settings: Settings) -> Iterator[Repository]:
    repo = open_repository(settings)
    yield repo
    repo.close()


@pytest.fixture(scope="session")
def generated_svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 6000 x 4000 Aperio SVS made of the bundled IHC tissue (no ../shared)."""
    from slidebank.services.samples import make_sample_slide

    target = tmp_path_factory.mktemp("generated") / "generated.svs"
    return make_sample_slide(target, 6000, 4000)


# The served repository, its application and a live server (tests/served.py).
from tests.served import client, live_server, served  # noqa: E402, F401
