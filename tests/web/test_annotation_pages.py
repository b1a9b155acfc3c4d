"""The page of a slide's annotation sets, through the HTTP application on SQLite and
PostgreSQL: sets and their history, the diff between two revisions, revert by the owner,
promotion by a steward, agreement between two annotators, and escaping."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from slidebank.access.policy import COMMAND_LINE
from slidebank.config import Settings
from slidebank.services import accounts, annotating, ingesting
from slidebank.services.repository import open_repository
from slidebank.web.app import create_app
from slidebank.web.auth import CSRF_COOKIE
from tests.helpers import tallied_reads

DATASET = "histology"
PASSWORD = "a long password 1"
NNBSP = "\u202f"  # the thousands separator of the pages
EVIL = "<script>alert('set')</script>"


@dataclass
class Site:
    settings: Settings
    slide: str
    ann_set: int  # ann's: a 100 px square of Tumor at (0, 0) and two points
    bob_set: int  # bob's: the same square 50 px to the right, and two points
    evil_set: int  # bob's, named EVIL
    app: Any

    def client(self, name: str | None = None) -> TestClient:
        """A browser: anonymous, or signed in as ``name`` through the sign-in form."""
        web = TestClient(self.app, follow_redirects=False)
        if name is not None:
            csrf = web.get("/sign-in").cookies[CSRF_COOKIE]
            form = {"name": name, "password": PASSWORD, "csrf_token": csrf}
            assert web.post("/sign-in", data=form).status_code == 303
        return web

    @property
    def url(self) -> str:
        return f"/slides/{self.slide}/annotations"


def _square(x: float, y: float, size: float, label: str = "Tumor") -> dict[str, Any]:
    ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"classification": {"name": label}},
    }


def _point(x: float, y: float, label: str = "Lymphocyte") -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [x, y]},
        "properties": {"classification": {"name": label}},
    }


def _file(features: list[dict[str, Any]]) -> io.BytesIO:
    return io.BytesIO(json.dumps({"type": "FeatureCollection", "features": features}).encode())


@pytest.fixture
def site(settings: Settings, cmu_small: Path) -> Iterator[Site]:
    repository = open_repository(settings)
    try:
        (outcome,) = ingesting.ingest_paths(repository, [cmu_small], DATASET).outcomes
        assert outcome.status == "ingested", outcome.reason
        slide = outcome.id
        assert slide is not None
        for name, role in (("ann", "annotator"), ("bob", "annotator"), ("stew", "steward")):
            accounts.add_user(repository, COMMAND_LINE, name, PASSWORD, False)
            accounts.add_role(repository, COMMAND_LINE, DATASET, name, role)
        ann = accounts.principal_for_user(repository, "ann")
        bob = accounts.principal_for_user(repository, "bob")

        def load(who: Any, name: str, features: list[dict[str, Any]], filename: str) -> int:
            report = annotating.import_annotations(
                repository, who, slide, _file(features), filename, set_name=name
            )
            return int(report.set["id"])

        ann_set = load(
            ann, "ann-regions", [_square(0, 0, 100), _point(10, 10), _point(300, 300)], "ann.json"
        )
        bob_set = load(
            bob, "bob-regions", [_square(50, 0, 100), _point(12, 10), _point(600, 600)], "bob.json"
        )
        evil_set = load(bob, EVIL, [_point(20, 20)], "evil.json")
    finally:
        repository.close()
    app = create_app(settings)
    with TestClient(app):  # the application's lifespan
        yield Site(settings, slide, ann_set, bob_set, evil_set, app)


def _page(web: TestClient, url: str, status: int = 200) -> str:
    response = web.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    text: str = response.text
    return text


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


def _block(page: str, testid: str) -> str:
    """The element with this data-testid, up to the next one of its kind (rough, enough)."""
    start = page.index(f'data-testid="{testid}"')
    return page[start : start + 20_000]


def _move_anns_square(site: Site) -> None:
    """ann moves her square to (200, 200) through the use case: revision 2."""
    repository = open_repository(site.settings)
    try:
        ann = accounts.principal_for_user(repository, "ann")
        moved = {**_square(200, 200, 100), "properties": {"label": "Tumor", "shape": "rectangle"}}
        annotating.edit(repository, ann, site.ann_set, replace={0: moved})
    finally:
        repository.close()


def test_the_page_lists_the_sets_and_their_history(site: Site) -> None:
    slide_page = _page(site.client(), f"/slides/{site.slide}")
    assert f'href="{site.url}"' in slide_page  # linked from the slide's page
    page = _page(site.client(), site.url)
    sets = unescape(_block(page, "sets"))
    for expected in ("ann-regions", "bob-regions", "manual", "ann", "bob"):
        assert expected in sets, expected
    row = unescape(_block(page, f"set-row-{site.ann_set}").split("</tr>")[0])
    assert re.search(r'class="num">3</td>\s*<td class="num">1</td>', row), row  # 3 annotations
    history = _block(page, f"revision-{site.ann_set}-1").split("</tr>")[0]
    cells = [unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", history, re.S)]
    assert cells[1:6] == [cells[1], "ann", "import", "3", "0"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cells[1])
    assert "file=ann.json" in cells[6] and "format=geojson" in cells[6]
    for file_format in ("qupath", "geojson", "asap", "imagescope", "dsa", "dicom-ann"):
        link = f"/api/annotation-sets/{site.ann_set}/export?format={file_format}"
        assert f'href="{link}"' in page, file_format
    export = site.client().get(f"/api/annotation-sets/{site.ann_set}/export?format=geojson")
    assert export.status_code == 200 and len(export.json()["features"]) == 3
    # Nobody anonymous gets a button to change anything.
    assert "/revert" not in page and "/promote" not in page


def test_the_diff_form_shows_a_changed_annotation(site: Site) -> None:
    _move_anns_square(site)
    page = _page(site.client(), f"{site.url}?diff={site.ann_set}&start=1&end=2")
    diff = unescape(_block(page, "diff"))
    assert "Diff of “ann-regions”, revision 1 → 2" in diff
    assert "0 added, 0 removed, 1 changed" in diff
    changed = _block(page, "diff-changed").split("</table>")[0]
    cells = [unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", changed, re.S)]
    assert cells == [
        "0",
        "geometry",
        "Tumor",
        "rectangle",
        "0, 0 – 100, 100",
        "200, 200 – 300, 300",
    ]
    # From the empty set: everything of revision 1 is added.
    page = _page(site.client(), f"{site.url}?diff={site.ann_set}&start=0&end=1")
    assert "3 added, 0 removed, 0 changed" in unescape(page)
    added = _block(page, "diff-added").split("</table>")[0]
    assert len(re.findall(r"<tr><td", added)) == 3
    # Revisions the set does not have, or a backwards range, are said so.
    for query, message in (
        ("start=0&end=9", "has revisions 0 to 2"),
        ("start=2&end=1", "start after end"),
        ("start=x&end=1", "'x' is not a whole number"),
    ):
        page = _page(site.client(), f"{site.url}?diff={site.ann_set}&{query}", 400)
        assert message in unescape(page), query


def test_the_owner_reverts_a_revision(site: Site) -> None:
    _move_anns_square(site)
    owner = site.client("ann")
    page = _page(owner, site.url)
    revert = f'action="/slides/{site.slide}/annotations/{site.ann_set}/revert"'
    assert revert in page
    assert f'action="/slides/{site.slide}/annotations/{site.bob_set}/revert"' not in page
    done = owner.post(
        f"{site.url}/{site.ann_set}/revert", data={"to": "1", "csrf_token": _csrf(page)}
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"].endswith(f"#set-{site.ann_set}")
    page = _page(owner, done.headers["location"])
    assert "“ann-regions” reverted to revision 1: its state is now revision 3." in unescape(page)
    row = _block(page, f"revision-{site.ann_set}-3").split("</tr>")[0]
    cells = [unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[2:7] == ["ann", "revert", "1", "1", "to=1"]
    assert f'<details class="annotation-set" id="set-{site.ann_set}"' in page
    assert re.search(rf'id="set-{site.ann_set}" data-testid="set-{site.ann_set}" open>', page)
    repository = open_repository(site.settings)
    try:
        square = next(annotating.stream_set(repository, COMMAND_LINE, site.ann_set))
        assert square.geometry.bounds == (0, 0, 100, 100)
    finally:
        repository.close()
    # A revision the set does not have: the page again, with the reason.
    missing = owner.post(
        f"{site.url}/{site.ann_set}/revert", data={"to": "42", "csrf_token": _csrf(page)}
    )
    assert missing.status_code == 400
    assert "has no revision 42" in unescape(missing.text)


def test_others_may_not_revert_a_set(site: Site) -> None:
    _move_anns_square(site)
    other = site.client("bob")
    page = _page(other, site.url)
    assert f"/annotations/{site.ann_set}/revert" not in page  # no button for bob
    assert f"/annotations/{site.bob_set}/revert" not in page  # one revision: nothing to revert
    url = f"{site.url}/{site.ann_set}/revert"
    refused = other.post(url, data={"to": "1", "csrf_token": _csrf(page)})
    assert refused.status_code == 403
    assert "only the owner of this annotation set may change it" in unescape(refused.text)
    assert "<h1>Not allowed</h1>" in refused.text
    # The owner's own session needs its CSRF token; nobody signed in must sign in.
    assert site.client("ann").post(url, data={"to": "1"}).status_code == 403
    anonymous = site.client().post(url, data={"to": "1"})
    assert anonymous.status_code == 401
    assert f'href="/sign-in?next=/slides/{site.slide}/annotations"' in unescape(anonymous.text)
    # A set that is not one of this slide's: not found.
    gone = other.post(f"{site.url}/999999/revert", data={"to": "1", "csrf_token": _csrf(page)})
    assert gone.status_code == 404
    assert f"Slide {site.slide} has no annotation set 999999." in unescape(gone.text)
    history = _page(other, site.url)
    assert f'data-testid="revision-{site.ann_set}-3"' not in history  # nothing changed


def test_a_steward_promotes_a_set_to_reference(site: Site) -> None:
    owner = site.client("ann")
    page = _page(owner, site.url)
    assert "/promote" not in page  # annotators do not promote
    url = f"{site.url}/{site.ann_set}/promote"
    assert owner.post(url, data={"csrf_token": _csrf(page)}).status_code == 403
    steward = site.client("stew")
    page = _page(steward, site.url)
    assert f'action="/slides/{site.slide}/annotations/{site.ann_set}/promote"' in page
    assert "/revert" not in page  # stewards do not change others' sets
    done = steward.post(url, data={"csrf_token": _csrf(page)})
    assert done.status_code == 303, done.text
    page = _page(steward, done.headers["location"])
    assert "“ann-regions” is now a reference set." in unescape(page)
    row = _block(page, f"set-row-{site.ann_set}").split("</tr>")[0]
    assert "kind-reference" in row and ">reference</span>" in row
    assert f'action="/slides/{site.slide}/annotations/{site.ann_set}/promote"' not in page
    history = _block(page, f"revision-{site.ann_set}-2").split("</tr>")[0]
    assert ">promote</td>" in history and "kind=manual" in history
    again = steward.post(url, data={"csrf_token": _csrf(page)})
    assert again.status_code == 409
    assert "is already a reference" in unescape(again.text)
    assert 'data-testid="sets"' in again.text  # the page, with the reason
    # A reference set is not edited any more: its owner has no revert buttons left.
    assert f"/annotations/{site.ann_set}/revert" not in _page(owner, site.url)


def test_the_agreement_of_two_annotators(site: Site) -> None:
    page = _page(site.client(), site.url)
    form = _block(page, "agreement")
    assert f'<option value="{site.ann_set}" selected>' in form  # reference: the first set
    assert f'<option value="{site.bob_set}" selected>' in form  # test: the next one
    query = f"?reference={site.ann_set}&test={site.bob_set}&distance=5"
    page = unescape(_page(site.client(), site.url + query))
    assert "Test “bob-regions” against reference “ann-regions”" in page
    assert "points match within 5 px" in page
    # Two 100 px squares, 50 px apart: each 10,000 px², sharing 5,000 px² of 15,000.
    regions = _block(page, "regions").split("</table>")[0]
    tumor = re.search(r"<td>Tumor</td>(.*?)</tr>", regions, re.S)
    assert tumor is not None
    cells = re.findall(r'<td class="num">(.*?)</td>', tumor.group(1))
    assert cells == [
        f"10{NNBSP}000",
        f"10{NNBSP}000",
        f"5{NNBSP}000",
        f"15{NNBSP}000",
        "0.500",  # Dice 2·5,000 / 20,000
        "0.333",  # IoU 5,000 / 15,000
    ]
    # Points: (10, 10) and (12, 10) match within 5 px; (300, 300) and (600, 600) do not.
    detections = _block(page, "detections").split("</table>")[0]
    lymphocytes = re.search(r"<td>Lymphocyte</td>(.*?)</tr>", detections, re.S)
    assert lymphocytes is not None
    assert re.findall(r'<td class="num">(.*?)</td>', lymphocytes.group(1)) == [
        "2",
        "2",
        "1",
        "1",
        "1",
        "0.500",
        "0.500",
        "0.500",
    ]
    # Kappa over the union (15,000 px²): po = 5,000 / 15,000 = 1/3; both sets put 10,000 in
    # Tumor and 5,000 outside, so pe = (10,000² + 5,000²) / 15,000² = 5/9; κ = (1/3 − 5/9) /
    # (1 − 5/9) = −0.5.
    assert "κ = <strong>-0.500</strong>" in page
    assert "(observed agreement 0.333, expected by chance 0.556" in page
    confusion = _block(page, "confusion").split("</table>")[0]
    rows = re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', confusion, re.S)
    assert [(name, re.findall(r">([^<]*)</td>", cells)) for name, cells in rows] == [
        ("Tumor", [f"5{NNBSP}000", f"5{NNBSP}000"]),
        ("not covered", [f"5{NNBSP}000", "0"]),
    ]
    # Scoring the squares as cells: their centroids (50, 50) and (100, 50) are 50 px apart.
    cells_page = unescape(_page(site.client(), site.url + query + "&cells=1&distance=60"))
    assert "polygons scored as cells" in cells_page
    assert "Neither set has regions: no kappa." in cells_page
    tumor_cells = re.search(r"<td>Tumor</td>(.*?)</tr>", _block(cells_page, "detections"), re.S)
    assert tumor_cells is not None
    assert re.findall(r'<td class="num">(.*?)</td>', tumor_cells.group(1))[2:5] == ["1", "0", "0"]
    # Wrong input is said on the page.
    bad = unescape(_page(site.client(), site.url + query.replace("=5", "=-1"), 400))
    assert "Agreement: Distance: must be between 0 and 10,000 px, got -1" in bad
    unknown = unescape(_page(site.client(), f"{site.url}?reference={site.ann_set}&test=999", 400))
    assert "Agreement: this slide has no annotation set 999" in unknown


def test_set_names_are_escaped(site: Site) -> None:
    page = _page(site.client(), site.url)
    assert EVIL not in page
    assert "&lt;script&gt;alert(&#39;set&#39;)&lt;/script&gt;" in page
    steward = site.client("stew")
    page = _page(steward, site.url)
    done = steward.post(f"{site.url}/{site.evil_set}/promote", data={"csrf_token": _csrf(page)})
    page = _page(steward, done.headers["location"])
    assert EVIL not in page
    assert "“&lt;script&gt;alert(&#39;set&#39;)&lt;/script&gt;” is now a reference set." in page


def test_unknown_and_hidden_slides_give_html_refusals(site: Site) -> None:
    page = _page(site.client(), "/slides/sb-doesnotexist/annotations", 404)
    assert "There is no slide with id “sb-doesnotexist”" in page
    repository = open_repository(site.settings)
    try:
        accounts.set_policy(repository, COMMAND_LINE, DATASET, "controlled")
        accounts.add_user(repository, COMMAND_LINE, "plain", PASSWORD, False)
    finally:
        repository.close()
    site.app.state.slidebank.forget_gates()
    for web in (site.client(), site.client("plain")):
        page = _page(web, site.url, 404)
        assert "ann-regions" not in page
    assert "ann-regions" in _page(site.client("bob"), site.url)  # annotators still read


def test_the_page_reads_of_annotations_are_audited(site: Site) -> None:
    state = site.app.state.slidebank
    accounts.flush_reads(state.repository, state.reads, everything=True)  # the fixture's
    web = site.client("ann")
    query = f"?diff={site.ann_set}&start=0&end=1&reference={site.ann_set}&test={site.bob_set}"
    page = _page(web, site.url + query)
    assert "3 added" in unescape(page) and "Test “bob-regions”" in unescape(page)
    accounts.flush_reads(state.repository, state.reads, everything=True)
    events = accounts.audit_events(state.repository, COMMAND_LINE, DATASET, 1000, 0)
    tallied = tallied_reads(events, "ann", "read-annotations")
    ann, bob = f"{site.slide}/ann-regions", f"{site.slide}/bob-regions"
    # The sets listed; each set's history; the diff of ann's; the agreement of both.
    assert tallied == {site.slide: 1, ann: 3, bob: 2, f"{site.slide}/{EVIL}": 1}
