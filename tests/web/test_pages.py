"""The server-rendered pages on a real catalogue (SQLite and PostgreSQL): the dataset list,
the slide browser with its filters and pages, the slide viewer page, and the HTML 404."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from slidebank.config import Settings
from slidebank.samples import SvsSpec, demo_tissue, write_svs
from slidebank.services import ingesting
from slidebank.services.repository import open_repository
from slidebank.web import pages
from slidebank.web.app import create_app
from tests.conftest import _fresh_postgres_database
from tests.helpers import pseudonym_in

SLIDE_LINK = re.compile(r'href="/slides/(sb-[0-9a-z]+)"')
STATIC_URL = re.compile(r'(?:src|href)="(/static/[^"]+)"')
NNBSP = "\u202f"  # the thousands separator of the pages

TOX_SIDECAR: dict[str, Any] = {
    "dataset": {
        "title": "Toxicology <study> 7 & co",
        "version": "2",
        "licence": "CC-BY-4.0",
        "description": "Liver sections, 28-day oral study",
    },
    "slides": [
        {
            "file": "generated.svs",
            "case": {
                "id": "R12",
                "species": "Rattus norvegicus",
                "observations": [{"kind": "description", "text": "high-dose group"}],
            },
            "specimen": {
                "id": "liver",
                "anatomical_site": "Liver",
                "sampling": "necropsy",
                "observations": [
                    {
                        "kind": "diagnosis",
                        "code": "45170000",
                        "scheme": "SCT",
                        "meaning": "Hepatic necrosis",
                    }
                ],
            },
            "block": {"id": "L1"},
            "slide": {
                "id": "L1-1",
                "staining": {"compound": "hematoxylin and eosin", "method": "histochemistry"},
                "observations": [{"kind": "finding", "text": "hepatocellular hypertrophy"}],
            },
        }
    ],
}
ATLAS_SIDECAR: dict[str, Any] = {
    "dataset": {"title": "Mouse kidney atlas", "licence": "CC0-1.0"},
    "slides": [
        {
            "file": "small.svs",
            "case": {"id": "M3", "species": "Mus musculus"},
            "specimen": {"id": "K", "anatomical_site": "Kidney", "sampling": "biopsy"},
            "block": {"id": "K1"},
            "slide": {"id": "K1-2", "staining": {"compound": "periodic acid-Schiff"}},
        }
    ],
}


@dataclass(frozen=True)
class Site:
    client: TestClient
    settings: Settings
    rat: str  # generated.svs: 6000 x 4000 px at 0.499 µm/px, in tox-study
    mouse: str  # small.svs: 2048 x 1536 px at 0.25 µm/px, in mouse-atlas


@pytest.fixture(scope="session")
def small_svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second generated slide, at another resolution and magnification."""
    target = tmp_path_factory.mktemp("small") / "small.svs"
    return write_svs(target, SvsSpec(2048, 1536, mpp=0.25, magnification=40), demo_tissue(256))


def _ingest(
    settings: Settings, path: Path, dataset: str, sidecar: dict[str, Any] | None = None
) -> str:
    sidecar_path = None
    if sidecar is not None:
        sidecar_path = settings.home.parent / f"{dataset}.json"
        sidecar_path.write_text(json.dumps(sidecar))
    repository = open_repository(settings)
    try:
        report = ingesting.ingest_paths(repository, [path], dataset, sidecar_path)
    finally:
        repository.close()
    (outcome,) = report.outcomes
    assert outcome.status == "ingested", outcome.reason
    assert outcome.id is not None
    return outcome.id


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    generated_svs: Path,
    small_svs: Path,
) -> Iterator[Site]:
    """Two slides in two datasets, served by the application; one catalogue of each kind for
    the module (the pages only read it)."""
    home = tmp_path_factory.mktemp("pages") / "repo"
    if request.param == "sqlite":
        databases: Iterator[str] = iter([f"sqlite:///{home.parent / 'catalogue.sqlite'}"])
    else:
        databases = _fresh_postgres_database(request.getfixturevalue("postgres_admin"))
    for database_url in databases:
        settings = Settings(home=home, database_url=database_url)
        rat = _ingest(settings, generated_svs, "tox-study", TOX_SIDECAR)
        mouse = _ingest(settings, small_svs, "mouse-atlas", ATLAS_SIDECAR)
        with TestClient(create_app(settings)) as client:
            yield Site(client, settings, rat, mouse)


def html(client: TestClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    text: str = response.text
    return text


def shown_slides(page: str) -> set[str]:
    return set(SLIDE_LINK.findall(page))


def test_the_dataset_list_shows_each_dataset_with_its_slide_count(site: Site) -> None:
    page = html(site.client, "/")
    text = unescape(page)
    assert "Toxicology &lt;study&gt; 7 &amp; co" in page  # escaped, not markup
    for expected in ("tox-study", "CC-BY-4.0", "Liver sections, 28-day oral study"):
        assert expected in text
    assert "Mouse kidney atlas" in text
    assert "mouse-atlas" in text
    assert 'href="/slides?dataset=tox-study"' in page
    assert 'href="/slides?dataset=mouse-atlas"' in page
    counts = re.findall(r'<td class="num"[^>]*><a href="/slides\?dataset=([\w-]+)">(\d+)</a>', page)
    assert sorted(counts) == [("mouse-atlas", "1"), ("tox-study", "1")]


def test_every_page_has_a_viewport_and_an_icon_and_its_static_files(site: Site) -> None:
    for url in ("/", "/slides", f"/slides/{site.rat}", "/slides/sb-unknown"):
        page = html(site.client, url, 404 if url.endswith("unknown") else 200)
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
        assert '<link rel="icon" href="data:image/svg+xml,' in page
        for static in STATIC_URL.findall(page):
            assert site.client.get(static).status_code == 200, static
    icon = site.client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")


def test_the_slide_browser_shows_each_slide_with_a_lazy_thumbnail(site: Site) -> None:
    page = html(site.client, "/slides")
    assert shown_slides(page) == {site.rat, site.mouse}
    text = unescape(page)
    for expected in (
        "tox-study",
        "hematoxylin and eosin",
        "Liver",
        "Rattus norvegicus",
        f"6{NNBSP}000 × 4{NNBSP}000 px",
        "0.499 µm/px",
        "periodic acid-Schiff",
        "Kidney",
        "Mus musculus",
        f"2{NNBSP}048 × 1{NNBSP}536 px",
        "0.25 µm/px",
        "2 slides",
    ):
        assert expected in text, expected
    # 6000 x 4000 fits the 256 x 192 box as 256 x 171; 2048 x 1536 as 256 x 192.
    for slide, size in (
        (site.rat, 'width="256" height="171"'),
        (site.mouse, 'width="256" height="192"'),
    ):
        image = re.search(rf'<img src="/api/slides/{slide}/thumbnail"[^>]*>', page)
        assert image is not None
        assert 'loading="lazy"' in image.group(0)
        assert size in image.group(0)
        assert site.client.get(f"/api/slides/{slide}/thumbnail").status_code == 200


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("dataset=tox-study", {"rat"}),
        ("dataset=mouse-atlas", {"mouse"}),
        ("site=kidney", {"mouse"}),
        ("stain=schiff", {"mouse"}),
        ("stain=hematoxylin", {"rat"}),
        ("species=rattus", {"rat"}),
        ("diagnosis=45170000", {"rat"}),
        ("diagnosis=necrosis", {"rat"}),
        ("vendor=aperio", {"rat", "mouse"}),
        ("vendor=APER", {"rat", "mouse"}),  # any part of the name, in any case
        ("vendor=hamamatsu", set()),
        ("format=dicom", {"rat", "mouse"}),  # both stored as de-identified DICOM
        ("format=aperio", {"rat", "mouse"}),  # ... converted from Aperio SVS files
        ("format=svs", {"rat", "mouse"}),  # by the file's extension too
        ("format=ndpi", set()),
        ("format=dic", set()),  # a format is named whole
        ("mpp_min=0.3", {"rat"}),
        ("mpp_max=0.3", {"mouse"}),
        ("mpp_min=0.2&mpp_max=0.3&species=mus", {"mouse"}),
        ("dataset=tox-study&site=kidney", set()),
    ],
)
def test_the_filters_of_the_slide_browser(site: Site, query: str, expected: set[str]) -> None:
    page = html(site.client, f"/slides?{query}")
    ids = {"rat": site.rat, "mouse": site.mouse}
    assert shown_slides(page) == {ids[name] for name in expected}
    for pair in query.split("&"):  # the form shows the filters given
        name, value = pair.split("=")
        if name == "dataset":
            assert f'<option value="{value}" selected>' in page
        else:
            assert f'name="{name}" value="{value}"' in page
    assert 'href="/slides">Clear</a>' in page
    if not expected:
        assert "No slides match these filters" in page


def test_the_slide_browser_pages(site: Site) -> None:
    first = html(site.client, "/slides?limit=1")
    assert len(shown_slides(first)) == 1
    assert "1–1 of 2" in first
    assert 'rel="prev"' not in first
    link = re.search(r'rel="next" href="([^"]+)"', first)
    assert link is not None
    second_url = unescape(link.group(1))
    assert second_url == "/slides?limit=1&offset=1"
    second = html(site.client, second_url)
    assert "2–2 of 2" in second
    assert shown_slides(first) | shown_slides(second) == {site.rat, site.mouse}
    assert 'rel="next"' not in second
    previous = re.search(r'rel="prev" href="([^"]+)"', second)
    assert previous is not None
    assert unescape(previous.group(1)) == "/slides?limit=1"
    # Filters are kept across pages.
    filtered = html(site.client, "/slides?vendor=aperio&limit=1")
    assert 'href="/slides?vendor=aperio&amp;limit=1&amp;offset=1"' in filtered


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("mpp_min=abc", "Minimum: 'abc' is not a number"),
        ("mpp_max=-1", "Maximum: '-1' must be a positive number"),
        ("mpp_min=0.5&mpp_max=0.25", "Maximum: must not be below the minimum"),
        ("mpp_min=nan", "Minimum: 'nan' must be a positive number"),
        ("limit=0", "Page size (limit): must be between 1 and 500"),
        ("limit=ten", "Page size (limit): 'ten' is not a whole number"),
        ("offset=-3", "Offset: must be between 0"),
    ],
)
def test_invalid_filters_give_the_page_with_a_message(site: Site, query: str, message: str) -> None:
    page = html(site.client, f"/slides?{query}", 400)
    assert message in unescape(page)
    assert "Fix the filters on the left" in page
    assert shown_slides(page) == set()
    assert '<form class="filters"' in page  # the form is there to correct them


def test_the_slide_page_shows_the_viewer_and_the_whole_record(site: Site) -> None:
    page = html(site.client, f"/slides/{site.rat}")
    text = unescape(page)
    config = re.search(r'<script type="application/json" id="viewer-config">(.*?)</script>', page)
    assert config is not None
    assert json.loads(config.group(1)) == {
        "id": site.rat,
        "tileSource": f"/deepzoom/{site.rat}.dzi",
        "prefixUrl": "/static/vendor/openseadragon/images/",
        "mpp": pytest.approx(0.499),
        "objectivePower": 20.0,
        "width": 6000,
        "height": 4000,
    }
    assert '<script src="/static/vendor/openseadragon/openseadragon.min.js" defer>' in page
    assert site.client.get(f"/deepzoom/{site.rat}.dzi").status_code == 200
    for expected in (
        "Toxicology <study> 7 & co",  # dataset
        pseudonym_in(site.settings, "case", "R12"),  # the case's keyed pseudonym
        "Rattus norvegicus",
        "high-dose group",  # observation on the case
        "Liver",  # specimen
        "necropsy",
        "Hepatic necrosis",  # diagnosis on the specimen
        "SCT:45170000",
        pseudonym_in(site.settings, "block", "L1"),
        pseudonym_in(site.settings, "slide", "L1-1"),
        "hematoxylin and eosin",
        "histochemistry",
        "hepatocellular hypertrophy",  # finding on the slide
        "aperio",  # image
        f"6{NNBSP}000 × 4{NNBSP}000 px",
        "0.499 × 0.499 µm/px",
        "3.0 × 2.0 mm",
        "20×",
    ):
        assert expected in text, expected
    assert f'href="/api/slides/{site.rat}"' in page
    assert f'href="/iiif/3/{site.rat}/info.json"' in page
    assert f'href="/api/slides/{site.rat}/deidentification"' in page
    assert f'href="/api/slides/{site.rat}/download" download>Download (DICOM, ZIP)' in page
    archive = site.client.get(f"/api/slides/{site.rat}/download")
    assert archive.status_code == 200 and archive.content[:2] == b"PK"
    assert site.client.get(f"/iiif/3/{site.rat}/info.json").status_code == 200
    # Levels and the scanner's properties are there, folded away.
    assert re.search(r"<summary>\d+ levels</summary>", page)
    properties = re.search(r"<summary>Scanner properties \((\d+)\)</summary>", page)
    assert properties is not None
    assert int(properties.group(1)) > 0
    assert "dicom.transfer-syntax" in page
    # nothing the sidecar or the file name identified the slide by
    for identifier in ("R12", "L1-1", "generated.svs"):
        assert identifier not in text, identifier
    # The slide's pseudonym is also the name of its stored form: shown once, as the slide's
    # identifier, and not again as a "source file".
    assert text.count(pseudonym_in(site.settings, "slide", "L1-1")) == 1
    assert "Source file" not in text
    assert "Aperio" in text  # the vendor, as people spell it


def test_the_slide_page_of_another_slide(site: Site) -> None:
    page = html(site.client, f"/slides/{site.mouse}")
    text = unescape(page)
    for expected in (
        "Mouse kidney atlas",
        pseudonym_in(site.settings, "case", "M3"),
        "Mus musculus",
        "Kidney",
        "biopsy",
        pseudonym_in(site.settings, "slide", "K1-2"),
    ):
        assert expected in text, expected
    assert "0.25 × 0.25 µm/px" in text
    assert "40×" in text


def test_a_dataset_page_counts_its_slides_and_cases(site: Site) -> None:
    page = html(site.client, "/datasets/tox-study")
    count = re.search(r'<dd data-testid="slide-count">(.*?)</dd>', page, re.S)
    assert count is not None
    assert count.group(1).strip() == "1 slide in 1 case"


def test_an_unknown_slide_gives_an_html_404(site: Site) -> None:
    page = html(site.client, "/slides/sb-doesnotexist", 404)
    assert "There is no slide with id “sb-doesnotexist”" in page
    assert 'href="/slides"' in page
    # The JSON API keeps answering with problem details.
    response = site.client.get("/api/slides/sb-doesnotexist")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_the_slide_page_says_when_the_viewer_assets_are_missing(
    site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pages, "VENDOR_OPENSEADRAGON", tmp_path / "no-openseadragon")
    page = html(site.client, f"/slides/{site.rat}")
    assert "Viewer assets are missing" in page
    assert "<code>make install</code>" in page
    assert "npm ci --prefix src/slidebank/web/static" in page
    assert "openseadragon.min.js" not in page
    assert "hepatocellular hypertrophy" in page  # the record is still shown
