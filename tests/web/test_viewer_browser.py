"""The slide viewer's and the pages' usability in a real browser: full page mode keeps our
tools, OpenSeadragon's buttons are keyboard buttons, a tiny slide's readouts, closing a polygon
with a double-click, the annotation sets page opening the set a link names, no sideways
scrolling on a phone, and the HTML "Not found" page.

Debian's Chromium driven by Playwright, as in ``test_browser.py`` (whose ``browser`` and
``playwright_driver`` fixtures, with their skip outside CI, and helpers this module shares),
against a server of this module's own on a loopback port: its repository (slides stored as
they are) holds the generated demo slide with two annotation sets, an annotator of its
dataset, and a 16 × 16 px slide in a dataset of its own.

Screenshots are kept as artifacts in ``test-artifacts/web/`` (git-ignored):
``viewer-fullpage.png``, ``viewer-focus.png``, ``viewer-tiny.png``, ``phone-*.png``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import BrowserContext, Page, ViewportSize, expect

from slidebank.access.policy import COMMAND_LINE
from slidebank.catalog.queries import SlideFilter
from slidebank.config import Settings
from slidebank.samples import SvsSpec, write_svs
from slidebank.samples.tissue import Tissue
from slidebank.services import accounts, annotating, browsing, ingesting, samples
from slidebank.services.repository import open_repository
from tests.served import running_server
from tests.web.test_annotation_browser import sign_in, viewer_point
from tests.web.test_browser import (
    browser,
    image_zoom,
    playwright_driver,
    screenshot,
    settle,
    watched_page,
)

__all__ = ["browser", "playwright_driver"]  # the fixtures, shared with test_browser.py

# A real browser's timing: not beside other tests (make test).
pytestmark = pytest.mark.alone

ANNOTATOR = ("reader", "a reader's passphrase")
ACCENT = (0x8F, 0xB4, 0xFF)  # --accent of slidebank.css: the focus ring
PHONE: ViewportSize = {"width": 390, "height": 844}
TOOLS = ("#fit", "#one-to-one", "#zoom-readout", "#scalebar")
# Whether the element is what the user sees at its own centre (not covered, not hidden).
ON_TOP = """(element) => {
  const box = element.getBoundingClientRect();
  const found = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
  return box.width > 0 && found !== null && (found === element || element.contains(found));
}"""


@dataclass(frozen=True)
class Site:
    url: str
    demo_id: str
    tiny_id: str
    set_ids: tuple[int, int]


def tiny_slide(target: Path) -> Path:
    """A 16 × 16 px Aperio slide at 0.499 µm per pixel (8 × 8 µm), like the smallest test
    slide of the scanners' collection."""
    pixels = np.random.default_rng(3).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    return write_svs(target, SvsSpec(16, 16), Tissue(pixels=pixels, tile_size=16))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("viewer-browser") / "repo"
    settings = Settings(home=home, stored_form="original")
    repository = open_repository(settings)
    try:
        ingesting.ingest_paths(
            repository, [samples.demo_slides(home)], "demo", samples.demo_sidecar(home)
        )
        tiny = tiny_slide(tmp_path_factory.mktemp("tiny") / "tiny.svs")
        ingesting.ingest_paths(repository, [tiny], "scanners", None)
        accounts.add_user(repository, COMMAND_LINE, *ANNOTATOR)
        accounts.add_role(repository, COMMAND_LINE, "demo", ANNOTATOR[0], "annotator")
        annotating.set_label_schema(
            repository, COMMAND_LINE, "demo", [{"name": "Tumor", "color": "#d62728"}]
        )
        (demo,) = browsing.list_slides(repository, COMMAND_LINE, SlideFilter(dataset="demo"))
        (small,) = browsing.list_slides(repository, COMMAND_LINE, SlideFilter(dataset="scanners"))
        first = annotating.create_set(
            repository, COMMAND_LINE, demo["id"], "first reading", "manual", "reader one"
        )
        second = annotating.create_set(
            repository, COMMAND_LINE, demo["id"], "second reading", "manual", "reader two"
        )
    finally:
        repository.close()
    with running_server(settings) as url:
        yield Site(url, demo["id"], small["id"], (first["id"], second["id"]))


def open_slide(page: Page, site: Site, slide_id: str) -> None:
    page.goto(f"{site.url}/slides/{slide_id}")
    settle(page)


def is_full_page(page: Page) -> bool:
    return bool(page.evaluate("() => window.slidebankViewer.isFullPage()"))


def assert_tools_shown(page: Page) -> None:
    window = page.viewport_size
    assert window is not None
    for selector in TOOLS:
        tool = page.locator(selector)
        expect(tool).to_be_visible()
        box = tool.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= window["width"], selector
        assert box["y"] >= 0 and box["y"] + box["height"] <= window["height"], selector
        assert tool.evaluate(ON_TOP), f"{selector} is covered"


def test_full_page_keeps_the_scale_bar_the_readout_and_our_buttons(
    browser: BrowserContext, site: Site
) -> None:
    page, problems = watched_page(browser)
    open_slide(page, site, site.demo_id)
    assert_tools_shown(page)
    fit_zoom = image_zoom(page)

    page.get_by_role("button", name="Toggle full page").click()
    page.wait_for_function("() => window.slidebankViewer.isFullPage()")
    settle(page)
    # The viewer fills the window, and our tools are still on it.
    viewer = page.locator("#viewer").bounding_box()
    assert viewer is not None
    assert (viewer["width"], viewer["height"]) == (1280, 800)
    expect(page.locator("aside.panel")).to_be_hidden()
    assert_tools_shown(page)
    screenshot(page, "viewer-fullpage")

    # They work there: 1:1 zooms to one image pixel per screen pixel and the readouts follow.
    page.get_by_role("button", name="1:1").click()
    settle(page)
    assert image_zoom(page) == pytest.approx(1.0, rel=1e-3)
    expect(page.locator("#zoom-readout")).to_have_text("20.0× · 100%")
    expect(page.locator("#scalebar .label")).to_have_text("50 µm")
    page.get_by_role("button", name="Fit").click()
    settle(page)
    assert image_zoom(page) > fit_zoom  # the whole window is larger than the stage

    # Escape leaves full page: the page comes back with the tools in the stage.
    page.keyboard.press("Escape")
    page.wait_for_function("() => !window.slidebankViewer.isFullPage()")
    expect(page.locator("aside.panel")).to_be_visible()
    settle(page)
    assert_tools_shown(page)
    stage = page.locator("section.stage").bounding_box()
    scalebar = page.locator("#scalebar").bounding_box()
    assert stage is not None and scalebar is not None
    assert scalebar["x"] + scalebar["width"] <= stage["x"] + stage["width"]
    problems.assert_none()


def test_the_viewer_controls_are_named_keyboard_buttons_with_a_visible_focus_ring(
    browser: BrowserContext, site: Site
) -> None:
    page, problems = watched_page(browser)
    open_slide(page, site, site.demo_id)

    # The viewer has a name, and has the focus on load.
    canvas = page.get_by_role("application", name=re.compile("^Slide image"))
    expect(canvas).to_be_focused()
    # OpenSeadragon's buttons are buttons with names, and no image of theirs is announced.
    viewer = page.locator("#viewer")
    for name in ("Zoom in", "Zoom out", "Go home", "Toggle full page", "Rotate left"):
        expect(viewer.get_by_role("button", name=name, exact=True)).to_have_count(1)
    expect(viewer.get_by_role("img")).to_have_count(0)

    # Tab goes from the viewer to its buttons; Enter and Space press them.
    page.keyboard.press("Tab")
    expect(viewer.get_by_role("button", name="Zoom in")).to_be_focused()
    before = image_zoom(page)
    page.keyboard.press("Enter")
    settle(page)
    zoomed = image_zoom(page)
    assert zoomed > before * 1.1
    page.keyboard.press("Tab")
    expect(viewer.get_by_role("button", name="Zoom out")).to_be_focused()
    page.keyboard.press("Space")
    settle(page)
    assert image_zoom(page) < zoomed / 1.1
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(viewer.get_by_role("button", name="Toggle full page")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.slidebankViewer.isFullPage()")
    page.keyboard.press("Escape")
    page.wait_for_function("() => !window.slidebankViewer.isFullPage()")

    # Back to the viewer from the keyboard: a ring in the accent colour, 3 px wide, along
    # its edge, where a faint 1 px grey line was.
    canvas.focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Shift+Tab")
    expect(canvas).to_be_focused()
    page.evaluate(
        "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
    )
    pixels = screenshot(page, "viewer-focus")
    box = page.locator("#viewer").bounding_box()
    assert box is not None
    left, top = round(box["x"]), round(box["y"])
    middle_y = round(box["y"] + box["height"] / 2)
    middle_x = round(box["x"] + box["width"] / 2)
    for x, y in ((left + 1, middle_y), (middle_x, round(top + box["height"] - 2))):
        assert np.abs(pixels[y, x].astype(int) - ACCENT).max() <= 24, (x, y, pixels[y, x])
    problems.assert_none()


def test_a_tiny_slide_has_readable_readouts(browser: BrowserContext, site: Site) -> None:
    page, problems = watched_page(browser)
    open_slide(page, site, site.tiny_id)
    page.get_by_role("button", name="Fit").click()
    settle(page)
    zoom = image_zoom(page)
    assert zoom > 20  # 16 px fill the stage
    # Whole numbers with thousands separators, never exponent notation ("1.07e+3×").
    readout = page.locator("#zoom-readout").inner_text()
    assert readout == f"{round(zoom * 20):,}× · {round(zoom * 100):,}%"
    assert "e+" not in readout
    expect(page.locator("#scalebar .label")).to_have_text(re.compile(r"^\d+(\.\d+)? µm$"))
    # The panel: 16 px at 0.499 µm per pixel are 8 µm, not "0.0 × 0.0 mm".
    facts = page.locator("aside.panel")
    expect(facts.locator("dt", has_text="Physical size").locator("+ dd")).to_have_text(
        "8.0 × 8.0 µm"
    )
    expect(facts.locator("dt", has_text="Vendor").locator("+ dd")).to_have_text("Aperio")
    # Stored as it came, without a sidecar: no slide metadata, so no empty "Slide" section.
    expect(facts.locator("h2", has_text=re.compile("^Slide$"))).to_have_count(0)
    screenshot(page, "viewer-tiny")
    problems.assert_none()


def test_a_double_click_on_the_last_vertex_closes_a_polygon_without_an_error(
    browser: BrowserContext, site: Site
) -> None:
    page, problems = watched_page(browser)
    sign_in(page, site.url, ANNOTATOR)
    open_slide(page, site, site.demo_id)
    page.locator('button[data-tool="polygon"]').click()
    corners = [
        viewer_point(page, dx, dy) for dx, dy in ((-150, -90), (60, -110), (90, 70), (-120, 90))
    ]
    # Four vertices at a user's pace (250 ms apart), then a double-click on the last one.
    for corner in corners:
        page.mouse.click(*corner)
        time.sleep(0.25)
    page.mouse.dblclick(*corners[-1])
    time.sleep(0.6)  # past the double-click's time, for any late echo of it

    drafts = page.evaluate("() => window.slidebankAnnotations.drafts()")
    assert [d["shape"] for d in drafts] == ["polygon"]
    assert len(drafts[0]["geometry"]["coordinates"][0]) == 5  # four vertices, closed
    assert page.evaluate("() => window.slidebankAnnotations.drawing()") == 0
    expect(page.locator(".ann-error")).to_be_hidden()
    expect(page.get_by_text("A polygon needs at least three vertices.")).to_have_count(0)

    # A real failure still says so: two vertices, then Enter.
    page.mouse.click(*viewer_point(page, 200, -100))
    time.sleep(0.6)
    page.mouse.click(*viewer_point(page, 260, -40))
    page.keyboard.press("Enter")
    expect(page.locator(".ann-error")).to_contain_text("A polygon needs at least three vertices.")
    # Escape cancels the drawing.
    page.keyboard.press("Escape")
    assert page.evaluate("() => window.slidebankAnnotations.drawing()") == 0
    problems.assert_none()


def test_a_link_to_an_annotation_set_opens_its_section(browser: BrowserContext, site: Site) -> None:
    page, problems = watched_page(browser)
    first, second = site.set_ids
    page.goto(f"{site.url}/slides/{site.demo_id}/annotations")
    sections = [page.locator(f"details#set-{number}") for number in (first, second)]
    for section in sections:
        expect(section).not_to_have_attribute("open", "")
    page.get_by_role("link", name="second reading").click()
    expect(sections[1]).to_have_attribute("open", "")
    expect(sections[1].get_by_role("button", name="Show the changes")).to_be_visible()
    assert page.url.endswith(f"#set-{second}")
    # Folded again by the user, the same link opens it again (no hash change then).
    sections[1].locator("summary").click()
    expect(sections[1]).not_to_have_attribute("open", "")
    page.get_by_role("link", name="second reading").click()
    expect(sections[1]).to_have_attribute("open", "")

    # A URL that names a set opens it on load, and shows it.
    page.goto("about:blank")  # a load, not a move within the page
    page.goto(f"{site.url}/slides/{site.demo_id}/annotations#set-{first}")
    expect(sections[0]).to_have_attribute("open", "")
    expect(sections[1]).not_to_have_attribute("open", "")
    expect(sections[0].get_by_role("button", name="Show the changes")).to_be_in_viewport()
    problems.assert_none()


def phone_pages(site: Site) -> list[str]:
    return [
        "/",
        "/slides",
        "/datasets/demo",
        f"/slides/{site.demo_id}",
        f"/slides/{site.demo_id}/annotations",
        "/sign-in",
        "/nope",
    ]


def test_no_page_scrolls_sideways_on_a_phone(browser: BrowserContext, site: Site) -> None:
    page, problems = watched_page(browser)
    page.set_viewport_size(PHONE)
    for signed_in in (False, True):
        if signed_in:
            sign_in(page, site.url, ANNOTATOR)  # the top bar gets longer
        for path in phone_pages(site):
            page.goto(f"{site.url}{path}")
            page.wait_for_load_state("networkidle")
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{path} is {width} px wide"
            topbar = page.locator("header.topbar").bounding_box()
            assert topbar is not None
            assert topbar["width"] == PHONE["width"], path
            name = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "home"
            screenshot(page, f"phone-{name}{'-signed-in' if signed_in else ''}")
    # The dataset list reflows: each dataset's slide count is on the screen.
    page.goto(f"{site.url}/")
    expect(page.get_by_role("link", name="1", exact=True).first).to_be_in_viewport()
    # A wide table scrolls in its own box.
    page.goto(f"{site.url}/slides/{site.demo_id}/annotations")
    table = page.locator("table.sets")
    assert table.evaluate(
        "(t) => t.scrollWidth > t.clientWidth && getComputedStyle(t).overflowX === 'auto'"
    )
    problems.error_responses = [r for r in problems.error_responses if not r.endswith("/nope")]
    problems.console_errors = [e for e in problems.console_errors if "/nope" not in e]
    problems.assert_none()


def test_an_unknown_address_gives_the_html_not_found_page(
    browser: BrowserContext, site: Site
) -> None:
    page = browser.new_page()
    response = page.goto(f"{site.url}/nope")
    assert response is not None
    assert response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    expect(page).to_have_title("Not found · Slidebank")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_text("There is no page at /nope.")).to_be_visible()
    expect(page.get_by_role("link", name="Browse the slides")).to_be_visible()
    # The API keeps its problem documents, also for a browser.
    response = page.goto(f"{site.url}/api/nope")
    assert response is not None
    assert response.status == 404
    assert response.headers["content-type"] == "application/problem+json"
