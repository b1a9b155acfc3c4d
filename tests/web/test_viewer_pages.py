"""What the server-rendered pages say about slides the usability review found them wrong on:
a 16 × 16 px slide's physical size, the metadata panel of a de-identified slide (vendor,
identifier, scanner properties), a dataset without cases, and the HTML "Not found" page a
browser gets for an unknown address (while programs keep their problem documents).

One repository (SQLite, slides stored as de-identified DICOM, as by default) served in
process by FastAPI's test client: a generated 16 × 16 px Aperio slide, and the 3DHISTECH
DICOM test slide of ../shared/testdata for the test that needs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from slidebank.config import Settings
from slidebank.web.app import create_app
from tests.web.test_pages import _ingest
from tests.web.test_viewer_browser import tiny_slide

# What Chromium sends when it navigates to a page.
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
ROW = re.compile(r"<dt>([^<]+)</dt><dd>(.*?)</dd>", re.S)
PROPERTY = re.compile(r'<tr><th scope="row">([^<]+)</th><td>(.*?)</td></tr>', re.S)


@dataclass(frozen=True)
class Site:
    client: TestClient
    settings: Settings
    tiny: str  # 16 x 16 px at 0.499 µm per pixel, in dataset "scanners", no sidecar


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("viewer-pages") / "repo"
    settings = Settings(home=home)
    tiny = _ingest(settings, tiny_slide(home.parent / "tiny.svs"), "scanners")
    with TestClient(create_app(settings)) as client:
        yield Site(client, settings, tiny)


def page(client: TestClient, url: str, status: int = 200) -> str:
    response = client.get(url, headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    return unescape(response.text)


def panel_rows(html: str) -> dict[str, str]:
    """The metadata panel's "label: value" rows as the page shows them (tags removed)."""
    panel = html[html.index('<aside class="panel"') :]
    return {
        label: re.sub(r"<[^>]+>", "", value).strip()
        for label, value in ROW.findall(panel[: panel.index("</aside>")])
    }


def properties(html: str) -> dict[str, str]:
    return dict(PROPERTY.findall(html))


def test_a_tiny_slide_gives_its_physical_size_in_micrometres(site: Site) -> None:
    html = page(site.client, f"/slides/{site.tiny}")
    rows = panel_rows(html)
    assert rows["Dimensions"] == "16 × 16 px"
    assert rows["Physical size"] == "8.0 × 8.0 µm"  # 16 px × 0.499 µm, not "0.0 × 0.0 mm"
    assert "0.0 × 0.0 mm" not in html


def test_the_panel_spells_the_vendor_and_names_the_slide_once(site: Site) -> None:
    html = page(site.client, f"/slides/{site.tiny}")
    rows = panel_rows(html)
    assert rows["Vendor"] == "Aperio"  # OpenSlide's "aperio", as people write it
    # The stored name of a de-identified slide is its pseudonym: the slide's identifier,
    # shown once, not again as a "source file".
    identifier = rows["Identifier"]
    assert re.fullmatch(r"S-[A-Z2-7]{12}", identifier)
    assert "Source file" not in rows
    panel = html[html.index('<aside class="panel"') :]
    assert panel.count(identifier) == 1
    assert re.search(r"<h2>Slide</h2>\s*<dl>\s*<dt>Identifier</dt>", html)


def test_scanner_properties_leave_out_what_the_scanner_did_not_know(site: Site) -> None:
    html = page(site.client, f"/slides/{site.tiny}")
    shown = properties(html)
    # The converted DICOM says "Unknown" for what the generated source does not record.
    assert "dicom.Manufacturer" not in shown
    assert "dicom.ManufacturerModelName" not in shown
    assert "Unknown" not in shown.values()
    assert shown["slidebank.source-format"] == "aperio"
    count = re.search(r"<summary>Scanner properties \((\d+)\)</summary>", html)
    assert count is not None and int(count.group(1)) == len(shown)


def test_a_dicom_slide_shows_its_multi_valued_properties_as_values(
    site: Site, slides_dir: Path
) -> None:
    slide = _ingest(site.settings, slides_dir / "dicom" / "WG26-BPAEC-partial", "dicom-scans")
    html = page(site.client, f"/slides/{slide}")
    assert panel_rows(html)["Vendor"] == "3DHISTECH Kft."
    shown = properties(html)
    assert shown["dicom.SoftwareVersions"] == "1,14,61,0, 2.4.0.44318, DicomObjects.NET v8.40.110.2"
    assert "dicom.ManufacturerModelName" not in shown  # "?" in the file
    assert not any(value.startswith("[") for value in shown.values())


def test_a_dataset_without_cases_counts_its_slides_only(site: Site) -> None:
    html = page(site.client, "/datasets/scanners")
    count = re.search(r'<dd data-testid="slide-count">(.*?)</dd>', html, re.S)
    assert count is not None
    assert count.group(1).strip() == "1 slide"


@pytest.mark.parametrize(
    "path", ["/nope", "/slides/sb-nope/annotations", "/datasets/nope", "/static/app/nope.js"]
)
def test_a_browser_gets_the_html_not_found_page(site: Site, path: str) -> None:
    html = page(site.client, path, 404)
    assert "<title>Not found · Slidebank</title>" in html
    assert "<h1>Not found</h1>" in html
    assert 'href="/slides"' in html
    if path == "/nope":
        assert "There is no page at /nope." in html


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("application/json;q=0.9, text/html", True),
        ("*/*", False),
        ("", False),
        ("application/json", False),
        ("application/problem+json", False),
        ("text/html;q=0.5, application/json", False),
        ("text/*;q=0.5, */*", False),
    ],
)
def test_unknown_addresses_answer_as_the_client_prefers(
    site: Site, accept: str, html: bool
) -> None:
    headers = {"Accept": accept} if accept else {}
    response = site.client.get("/nope", headers=headers)
    assert response.status_code == 404
    expected = "text/html; charset=utf-8" if html else "application/problem+json"
    assert response.headers["content-type"] == expected
    if not html:
        assert response.json()["type"] == "https://slidebank.org/problems/not-found"


@pytest.mark.parametrize(
    "path",
    [
        "/api/nope",
        "/api/slides/sb-nope",
        "/dicomweb/nope",
        "/dicomweb/studies/1.2.3/series/4.5.6/instances/7.8.9/metadata",
        "/iiif/3/sb-nope/info.json",
        "/deepzoom/sb-nope.dzi",
    ],
)
def test_the_machine_interfaces_keep_problem_documents_for_browsers(site: Site, path: str) -> None:
    response = site.client.get(path, headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404
