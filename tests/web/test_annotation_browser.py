"""Annotations over the slide viewer in a real browser (static/app/annotations.js): an
annotator draws, saves, reloads and edits; a slide with a million cell polygons pans with
its shapes drawn, and shows a heat map when zoomed out.

Debian's Chromium driven by Playwright, as in ``test_browser.py`` (whose ``browser`` and
``playwright_driver`` fixtures, with their skip outside CI, and helpers this module shares),
against a server of this module's own on a loopback port: its repository (SQLite, slides
stored as they are) holds the generated demo slide, an annotator of its dataset and a label
schema; the million cells are added to it by the ``million`` fixture, for the test that needs
them.

Screenshots are kept as artifacts in ``test-artifacts/web/`` (git-ignored):
``annotations-drawn.png``, ``annotations-reloaded.png``, ``annotations-reshaped.png``,
``annotations-million-fit.png``,
``annotations-million-1to1.png``; the million-cell figures (setup time, frame times) in
``annotations-million.json``.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from playwright.sync_api import BrowserContext, Page, expect

from slidebank.access.policy import COMMAND_LINE
from slidebank.annotations.model import Annotation
from slidebank.annotations.sql_store import SqlAnnotationStore
from slidebank.annotations.store import Change
from slidebank.catalog.queries import SlideFilter
from slidebank.config import Settings
from slidebank.services import accounts, annotating, browsing, ingesting, samples
from slidebank.services.repository import open_repository
from tests.served import serving_process
from tests.web.test_browser import (
    ARTIFACTS,
    Problems,
    browser,
    playwright_driver,
    screenshot,
    settle,
    watched_page,
)

__all__ = ["browser", "playwright_driver"]  # the fixtures, shared with test_browser.py

# A real browser's timing: not beside other tests (make test).
pytestmark = pytest.mark.alone

ANNOTATOR = ("ann", "an annotator's passphrase")
CLASSES = [
    {"name": "Tumor", "color": "#d62728"},
    {"name": "Lymphocyte", "color": "#1f77b4"},
    {"name": "Stroma", "color": "#2ca02c"},
]
COLOURS = {
    item["name"]: tuple(int(item["color"][i : i + 2], 16) for i in (1, 3, 5)) for item in CLASSES
}

# The million cells: a 40,000 × 30,000 px slide, nuclei on a jittered lattice of about 35 px.
CELLS = 1_000_000
SLIDE_SIZE = (40_000, 30_000)
LATTICE = (1155, 866)  # columns × rows: 1,000,230 places, the first million used
VERTICES = 20
PAN_STEPS = 20
# No update of the shapes may take longer than this while panning at 1:1 (from the request's
# start until the canvas is drawn). Measured on the 2-core test machine: see the docstring of
# the test.
FRAME_BOUND_MS = 1200

IDLE = "() => Boolean(window.slidebankAnnotations) && window.slidebankAnnotations.idle()"
# One pixel of the annotation layer at a point of the image (level-0 px): [r, g, b, a].
LAYER_PIXEL = """([x, y]) => {
  const viewer = window.slidebankViewer;
  const layer = window.slidebankAnnotations.layer;
  const at = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
  if (viewer.viewport.getFlip()) at.x = layer.clientWidth - at.x;  // mirrored about the centre
  const ratio = layer.width / layer.clientWidth;
  return Array.from(layer.getContext("2d").getImageData(
    Math.round(at.x * ratio), Math.round(at.y * ratio), 1, 1).data);
}"""
LAYER_COVERAGE = """() => {
  const layer = window.slidebankAnnotations.layer;
  const data = layer.getContext("2d").getImageData(0, 0, layer.width, layer.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted += 1;
  return painted / (data.length / 4);
}"""
TURNED = """() => {
  const viewport = window.slidebankViewer.viewport;
  return Math.abs(viewport.getRotation(true) - viewport.getRotation(false)) < 1e-6;
}"""
VIEW = """() => {
  const viewport = window.slidebankViewer.viewport;
  return [viewport.getCenter().toString(), viewport.getZoom()];
}"""
TO_VIEWER = """([x, y]) => {
  const point = window.slidebankViewer.viewport.imageToViewerElementCoordinates(
    new OpenSeadragon.Point(x, y));
  return [point.x, point.y];
}"""
TO_IMAGE = """([x, y]) => {
  const point = window.slidebankViewer.viewport.viewerElementToImageCoordinates(
    new OpenSeadragon.Point(x, y));
  return [point.x, point.y];
}"""


@dataclass(frozen=True)
class Site:
    url: str
    settings: Settings
    demo_id: str


@dataclass(frozen=True)
class Million:
    slide_id: str
    set_id: int
    setup_s: dict[str, float]  # seconds: slide, ingest, annotations, total


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("annotation-browser") / "repo"
    settings = Settings(home=home, stored_form="original")
    repository = open_repository(settings)
    try:
        ingesting.ingest_paths(
            repository, [samples.demo_slides(home)], "demo", samples.demo_sidecar(home)
        )
        accounts.add_user(repository, COMMAND_LINE, *ANNOTATOR)
        accounts.add_role(repository, COMMAND_LINE, "demo", ANNOTATOR[0], "annotator")
        annotating.set_label_schema(repository, COMMAND_LINE, "demo", CLASSES)
        (demo,) = browsing.list_slides(repository, COMMAND_LINE, SlideFilter(dataset="demo"))
    finally:
        repository.close()
    with serving_process(settings) as url:
        yield Site(url, settings, demo["id"])


def nuclei(seed: int = 7) -> Iterator[Annotation]:
    """A million cell outlines of ``VERTICES`` vertices, laid out like a nuclei segmentation:
    one per place of a jittered lattice, radii 5-10 px, squashed and turned at random; built
    with shapely's vectorised constructor a block at a time."""
    rng = np.random.default_rng(seed)
    columns, rows = LATTICE
    step_x, step_y = SLIDE_SIZE[0] / columns, SLIDE_SIZE[1] / rows
    angles = np.linspace(0, 2 * math.pi, VERTICES, endpoint=False)
    names = [item["name"] for item in CLASSES]
    block = 50_000
    for start in range(0, CELLS, block):
        index = np.arange(start, min(CELLS, start + block))
        n = len(index)
        centre_x = (index % columns + 0.5) * step_x + rng.uniform(-6, 6, n)
        centre_y = (index // columns + 0.5) * step_y + rng.uniform(-6, 6, n)
        radius = rng.uniform(5, 10, (n, 1)) * (1 + rng.uniform(-0.08, 0.08, (n, VERTICES)))
        squash = rng.uniform(0.6, 1.0, (n, 1))
        turn = rng.uniform(0, math.pi, (n, 1))
        x = radius * np.cos(angles)
        y = radius * squash * np.sin(angles)
        ring = np.empty((n, VERTICES + 1, 2))
        ring[:, :VERTICES, 0] = centre_x[:, None] + x * np.cos(turn) - y * np.sin(turn)
        ring[:, :VERTICES, 1] = centre_y[:, None] + x * np.sin(turn) + y * np.cos(turn)
        ring[:, VERTICES] = ring[:, 0]
        labels = rng.choice(len(names), n, p=[0.5, 0.3, 0.2]).tolist()
        for polygon, label in zip(shapely.polygons(ring), labels, strict=True):
            yield Annotation(polygon, "polygon", names[label])


@pytest.fixture(scope="module")
def million(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Million:
    """A 40,000 × 30,000 px generated slide in dataset "cells" of the site's repository, with
    a set of a million cell polygons inserted straight into the annotation store."""
    started = time.perf_counter()
    source = samples.make_sample_slide(
        tmp_path_factory.mktemp("million") / "cells.svs", *SLIDE_SIZE
    )
    made_at = time.perf_counter()
    repository = open_repository(site.settings)
    try:
        ingesting.ingest_paths(repository, [source], "cells", None)
        ingested_at = time.perf_counter()
        (slide,) = browsing.list_slides(repository, COMMAND_LINE, SlideFilter(dataset="cells"))
        annotating.set_label_schema(repository, COMMAND_LINE, "cells", CLASSES)
        made = annotating.create_set(
            repository, COMMAND_LINE, slide["id"], "nuclei", "automatic", "nuclei model"
        )
        revision = SqlAnnotationStore(repository.catalogue).insert(
            made["id"], nuclei(), Change(None, "nuclei model", "import", {"file": "generated"})
        )
    finally:
        repository.close()
    assert revision.added == CELLS
    done = time.perf_counter()
    seconds = {
        "slide": made_at - started,
        "ingest": ingested_at - made_at,
        "annotations": done - ingested_at,
        "total": done - started,
    }
    return Million(slide["id"], made["id"], {k: round(v, 1) for k, v in seconds.items()})


def sign_in(page: Page, url: str, who: tuple[str, str]) -> None:
    name, password = who
    page.goto(f"{url}/sign-in")
    form = page.locator("form[action='/sign-in']")
    form.get_by_label("User name").fill(name)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    expect(page.locator(".who a[href='/account']")).to_have_text(name)


def wait_idle(page: Page, timeout_s: float = 30) -> None:
    """Until the annotation layer has nothing in flight and has drawn the latest view."""
    page.wait_for_function(IDLE, polling=50, timeout=timeout_s * 1000)


def settled(page: Page) -> None:
    settle(page)
    wait_idle(page)


def viewer_point(page: Page, dx: float, dy: float) -> tuple[float, float]:
    """A page position at (dx, dy) CSS px from the viewer's centre."""
    box = page.locator("#viewer").bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2 + dy


def to_image(page: Page, at: tuple[float, float]) -> tuple[float, float]:
    box = page.locator("#viewer").bounding_box()
    assert box is not None
    x, y = page.evaluate(TO_IMAGE, [at[0] - box["x"], at[1] - box["y"]])
    return float(x), float(y)


def layer_pixel(page: Page, x: float, y: float) -> list[int]:
    return [int(v) for v in page.evaluate(LAYER_PIXEL, [x, y])]


def assert_colour(pixel: list[int], name: str, alpha: tuple[int, int]) -> None:
    expected = COLOURS[name]
    assert alpha[0] <= pixel[3] <= alpha[1], f"{name}: alpha of {pixel} not in {alpha}"
    assert all(abs(p - e) <= 12 for p, e in zip(pixel[:3], expected, strict=True)), (
        f"the layer shows {pixel} where a {name} annotation ({expected}) was drawn"
    )


def aborted_reads(problems: Problems) -> list[str]:
    """Annotation reads that the viewer cancelled because the view had moved on; any other
    failed request is left in ``problems`` (and fails ``assert_none``)."""
    cancelled = [
        failure
        for failure in problems.failed_requests
        if "/annotations" in failure and failure.endswith("net::ERR_ABORTED")
    ]
    problems.failed_requests = [f for f in problems.failed_requests if f not in cancelled]
    return cancelled


def features_of(page: Page, site: Site, set_id: int) -> list[dict[str, Any]]:
    response = page.request.get(
        f"{site.url}/api/slides/{site.demo_id}/annotations",
        params={"x0": 0, "y0": 0, "x1": 8192, "y1": 6144, "sets": set_id},
    )
    assert response.ok, response.text()
    features: list[dict[str, Any]] = response.json()["features"]
    return features


def centroid(ring: list[tuple[float, float]]) -> tuple[float, float]:
    found = shapely.Polygon(ring).centroid
    return float(found.x), float(found.y)


def test_an_annotator_draws_saves_reloads_and_edits(browser: BrowserContext, site: Site) -> None:
    page, problems = watched_page(browser)
    sign_in(page, site.url, ANNOTATOR)
    page.goto(f"{site.url}/slides/{site.demo_id}")
    settled(page)
    panel = page.locator("#annotations-panel")
    expect(panel.locator(".ann-sets")).to_contain_text("No annotation sets on this slide yet")
    expect(panel.locator(".ann-classes")).to_contain_text("Tumor")

    # A polygon of class Tumor: four clicks, the last a double-click that closes it.
    page.locator("#ann-class").select_option("Tumor")
    page.locator('button[data-tool="polygon"]').click()
    expect(page.locator(".draw-hint")).to_contain_text("double-click, Enter")
    corners = [
        viewer_point(page, dx, dy) for dx, dy in ((-150, -90), (60, -110), (90, 70), (-120, 90))
    ]
    expected_ring = [to_image(page, corner) for corner in corners]
    for corner in corners[:-1]:
        page.mouse.click(*corner)
    page.mouse.dblclick(*corners[-1])

    # A point of class Lymphocyte, a rectangle of class Stroma dragged with the mouse, which
    # must not pan the slide.
    page.locator("#ann-class").select_option("Lymphocyte")
    page.locator('button[data-tool="point"]').click()
    dot = viewer_point(page, 220, -150)
    dot_image = to_image(page, dot)
    page.mouse.click(*dot)
    page.locator("#ann-class").select_option("Stroma")
    page.locator('button[data-tool="rectangle"]').click()
    centre_before = page.evaluate("() => window.slidebankViewer.viewport.getCenter().toString()")
    start, end = viewer_point(page, -330, 120), viewer_point(page, -200, 210)
    box_image = (to_image(page, start), to_image(page, end))
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()
    centre_after = page.evaluate("() => window.slidebankViewer.viewport.getCenter().toString()")
    assert centre_after == centre_before, "drawing a rectangle panned the slide"

    drafts = page.evaluate("() => window.slidebankAnnotations.drafts()")
    assert [(d["shape"], d["label"]) for d in drafts] == [
        ("polygon", "Tumor"),
        ("point", "Lymphocyte"),
        ("rectangle", "Stroma"),
    ]
    ring = drafts[0]["geometry"]["coordinates"][0]
    assert len(ring) == 5, f"the polygon should have its four vertices, closed: {ring}"
    assert np.allclose(ring[:4], expected_ring, atol=1.0)
    expect(page.locator(".ann-pending")).to_have_text("3 unsaved changes")
    page.keyboard.press("Escape")  # back to navigating
    screenshot(page, "annotations-drawn")

    with page.expect_response(lambda r: r.url.endswith("/edits")) as saved:
        page.get_by_role("button", name="Save").click()
    assert saved.value.status == 200, saved.value.text()
    wait_idle(page)
    expect(page.locator(".ann-pending")).to_have_text("No unsaved changes")

    # Through the API: the annotator's own set, named after them, holds the three.
    listed = page.request.get(f"{site.url}/api/slides/{site.demo_id}/annotation-sets").json()
    (own,) = [s for s in listed if s["name"] == ANNOTATOR[0]]
    one = page.request.get(f"{site.url}/api/annotation-sets/{own['id']}").json()
    assert one["annotations"] == 3
    assert one["owner_user_id"] is not None
    stored = {f["properties"]["shape"]: f for f in features_of(page, site, own["id"])}
    assert set(stored) == {"polygon", "point", "rectangle"}
    assert stored["polygon"]["properties"]["label"] == "Tumor"
    assert np.allclose(stored["polygon"]["geometry"]["coordinates"][0][:4], expected_ring, atol=1.0)
    assert np.allclose(stored["point"]["geometry"]["coordinates"], dot_image, atol=1.0)
    assert stored["rectangle"]["properties"]["label"] == "Stroma"

    # After a reload the set is listed as the annotator's own and its shapes are on the layer
    # in their class colours: translucent inside polygons, solid points.
    page.reload()
    settled(page)
    own_row = page.locator(".ann-sets li", has_text=ANNOTATOR[0])
    expect(own_row).to_contain_text("yours")
    expect(own_row).to_contain_text("3 · manual")
    inside_polygon = centroid(expected_ring)
    inside_box = ((box_image[0][0] + box_image[1][0]) / 2, (box_image[0][1] + box_image[1][1]) / 2)
    assert_colour(layer_pixel(page, *inside_polygon), "Tumor", (40, 90))
    assert_colour(layer_pixel(page, *dot_image), "Lymphocyte", (230, 255))
    assert_colour(layer_pixel(page, *inside_box), "Stroma", (40, 90))
    screenshot(page, "annotations-reloaded")

    # The layer turns and mirrors with the slide.
    page.keyboard.press("r")
    page.wait_for_function(TURNED)
    settled(page)
    assert page.evaluate("() => window.slidebankViewer.viewport.getRotation()") == 90
    assert_colour(layer_pixel(page, *inside_polygon), "Tumor", (40, 90))
    assert_colour(layer_pixel(page, *dot_image), "Lymphocyte", (230, 255))
    page.keyboard.press("Shift+R")
    page.wait_for_function(TURNED)
    page.keyboard.press("f")
    settled(page)
    assert page.evaluate("() => window.slidebankViewer.viewport.getFlip()")
    assert_colour(layer_pixel(page, *dot_image), "Lymphocyte", (230, 255))
    assert_colour(layer_pixel(page, *inside_box), "Stroma", (40, 90))
    page.keyboard.press("f")
    settled(page)

    # Classes and sets toggle on and off.
    page.locator('.ann-classes input[data-class="Tumor"]').uncheck()
    page.evaluate(
        "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
    )
    assert layer_pixel(page, *inside_polygon)[3] == 0, "a hidden class is still drawn"
    assert layer_pixel(page, *dot_image)[3] > 0
    page.locator('.ann-classes input[data-class="Tumor"]').check()
    page.locator(f'.ann-sets input[data-set="{own["id"]}"]').uncheck()
    wait_idle(page)
    assert page.evaluate(LAYER_COVERAGE) == 0, "a hidden set is still drawn"
    page.locator(f'.ann-sets input[data-set="{own["id"]}"]').check()
    wait_idle(page)
    assert_colour(layer_pixel(page, *inside_polygon), "Tumor", (40, 90))

    # Editing: select the point and delete it; select the rectangle and make it Tumor.
    page.mouse.click(*dot)
    expect(page.locator(".ann-selected")).to_contain_text("point #1")
    page.locator(".ann-selection").get_by_role("button", name="Delete").click()
    expect(page.locator(".ann-pending")).to_have_text("1 unsaved change")
    page.mouse.click(*viewer_point(page, -265, 165))
    expect(page.locator(".ann-selected")).to_contain_text("rectangle #2")
    page.locator("#ann-selection-class").select_option("Tumor")
    expect(page.locator(".ann-pending")).to_have_text("2 unsaved changes")
    with page.expect_response(lambda r: r.url.endswith("/edits")) as saved:
        page.get_by_role("button", name="Save").click()
    assert saved.value.status == 200, saved.value.text()
    wait_idle(page)
    stored = {f["properties"]["shape"]: f for f in features_of(page, site, own["id"])}
    assert set(stored) == {"polygon", "rectangle"}
    assert stored["rectangle"]["properties"]["label"] == "Tumor"
    assert (
        page.request.get(f"{site.url}/api/annotation-sets/{own['id']}").json()["annotations"] == 2
    )
    assert_colour(layer_pixel(page, *inside_box), "Tumor", (40, 90))
    assert layer_pixel(page, *dot_image)[3] == 0, "the deleted point is still drawn"

    # The API's refusals are shown in the page with their problem details, not swallowed:
    # a class name longer than the 200 characters a label may have.
    expect(page.locator(".ann-error")).to_be_hidden()
    page.locator("#ann-class").select_option(label="New class…")
    page.locator("#ann-new-class").fill("x" * 201)
    page.locator(".ann-row").get_by_role("button", name="Add").click()
    page.locator('button[data-tool="point"]').click()
    page.mouse.click(*viewer_point(page, 150, 150))
    with page.expect_response(lambda r: r.url.endswith("/edits")) as refused:
        page.get_by_role("button", name="Save").click()
    assert refused.value.status == 400
    expect(page.locator(".ann-error")).to_contain_text(
        "Not saved: added feature 0: label must be text of at most 200 characters"
    )
    expect(page.locator(".ann-pending")).to_have_text("1 unsaved change")
    page.get_by_role("button", name="Discard").click()
    expect(page.locator(".ann-pending")).to_have_text("No unsaved changes")
    assert problems.error_responses == [f"400 {refused.value.url}"]
    assert len(problems.console_errors) == 1
    assert "status of 400" in problems.console_errors[0]
    problems.error_responses.clear()
    problems.console_errors.clear()

    aborted_reads(problems)
    problems.assert_none()


def to_page(page: Page, at: tuple[float, float]) -> tuple[float, float]:
    """The page position of an image position (level-0 px)."""
    box = page.locator("#viewer").bounding_box()
    assert box is not None
    x, y = page.evaluate(TO_VIEWER, list(at))
    return box["x"] + float(x), box["y"] + float(y)


def handles(page: Page) -> list[list[float]] | None:
    found: list[list[float]] | None = page.evaluate("() => window.slidebankAnnotations.handles()")
    return found


def drag(page: Page, start: tuple[float, float], by: tuple[float, float]) -> None:
    """Drags with the mouse from ``start`` by ``by`` CSS px, asserting the slide did not pan."""
    centre = "() => window.slidebankViewer.viewport.getCenter().toString()"
    before = page.evaluate(centre)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] + by[0], start[1] + by[1], steps=10)
    page.mouse.up()
    assert page.evaluate(centre) == before, "dragging a handle panned the slide"


def is_rectangle(ring: list[list[float]]) -> bool:
    """Four distinct corners, closed, with every edge along an axis."""
    corners = ring[:-1]
    return (
        len(ring) == 5
        and ring[0] == ring[-1]
        and len({tuple(c) for c in corners}) == 4
        and all(
            p[0] == q[0] or p[1] == q[1]
            for p, q in zip(corners, corners[1:] + corners[:1], strict=True)
        )
    )


def test_an_annotator_reshapes_saved_annotations(browser: BrowserContext, site: Site) -> None:
    """Handles at the vertices of a selected annotation of one's own set: dragging one moves
    that vertex (a rectangle's corner keeps it a rectangle) without panning the slide; the
    change is saved as one "edit" revision; a double-click on an edge adds a vertex, Alt-click
    and Delete remove one, Discard restores the shape."""
    page, problems = watched_page(browser)
    sign_in(page, site.url, ANNOTATOR)
    page.goto(f"{site.url}/slides/{site.demo_id}")
    settled(page)

    # A polygon and a rectangle of class Lymphocyte, right of what the first test drew.
    page.locator("#ann-class").select_option("Lymphocyte")
    page.locator('button[data-tool="polygon"]').click()
    corners = [viewer_point(page, dx, dy) for dx, dy in ((130, -60), (300, -40), (280, 100))]
    for corner in corners:
        page.mouse.click(*corner)
    page.mouse.dblclick(*viewer_point(page, 140, 90))
    page.locator('button[data-tool="rectangle"]').click()
    page.mouse.move(*viewer_point(page, 130, 150))
    page.mouse.down()
    page.mouse.move(*viewer_point(page, 250, 230), steps=8)
    page.mouse.up()
    page.keyboard.press("Escape")
    with page.expect_response(lambda r: r.url.endswith("/edits")) as saved:
        page.get_by_role("button", name="Save").click()
    assert saved.value.status == 200, saved.value.text()
    wait_idle(page)

    listed = page.request.get(f"{site.url}/api/slides/{site.demo_id}/annotation-sets").json()
    (own,) = [s for s in listed if s["name"] == ANNOTATOR[0]]

    def mine() -> dict[str, dict[str, Any]]:
        found = {
            f["properties"]["shape"]: f
            for f in features_of(page, site, own["id"])
            if f["properties"]["label"] == "Lymphocyte"
        }
        assert set(found) == {"polygon", "rectangle"}, found
        return found

    before = mine()
    polygon_ring = before["polygon"]["geometry"]["coordinates"][0]
    rectangle_ring = before["rectangle"]["geometry"]["coordinates"][0]
    assert len(polygon_ring) == 5 and is_rectangle(rectangle_ring)
    history = f"{site.url}/api/annotation-sets/{own['id']}/revisions"
    revisions_before = page.request.get(history).json()

    # Select the polygon: a handle at each vertex. Drag the second vertex by (45, 30) px.
    page.mouse.click(*to_page(page, centroid(polygon_ring[:4])))
    number = before["polygon"]["id"]
    expect(page.locator(".ann-selected")).to_contain_text(f"polygon #{number}")
    page.wait_for_function("() => window.slidebankAnnotations.handles() !== null")
    assert np.allclose(handles(page) or [], polygon_ring[:4])
    moved = 1
    grab = to_page(page, tuple(polygon_ring[moved]))
    target = to_image(page, (grab[0] + 45, grab[1] + 30))
    expected_shift = np.subtract(target, to_image(page, grab))
    drag(page, grab, (45, 30))
    expect(page.locator(".ann-pending")).to_have_text("1 unsaved change")
    screenshot(page, "annotations-reshaped")

    # The rectangle: drag the corner with the largest x and y by (30, 25) px.
    page.mouse.click(*to_page(page, centroid(rectangle_ring[:4])))
    expect(page.locator(".ann-selected")).to_contain_text(f"rectangle #{before['rectangle']['id']}")
    page.wait_for_function("() => window.slidebankAnnotations.handles() !== null")
    dragged = max(range(4), key=lambda i: rectangle_ring[i][0] + rectangle_ring[i][1])
    grab = to_page(page, tuple(rectangle_ring[dragged]))
    corner_target = to_image(page, (grab[0] + 30, grab[1] + 25))
    corner_shift = np.subtract(corner_target, to_image(page, grab))
    drag(page, grab, (30, 25))
    expect(page.locator(".ann-pending")).to_have_text("2 unsaved changes")

    edits: list[str] = []
    page.on("request", lambda r: edits.append(r.url) if r.url.endswith("/edits") else None)
    with page.expect_response(lambda r: r.url.endswith("/edits")) as saved:
        page.get_by_role("button", name="Save").click()
    assert saved.value.status == 200, saved.value.text()
    wait_idle(page)
    assert len(edits) == 1, edits
    expect(page.locator(".ann-pending")).to_have_text("No unsaved changes")

    page.reload()
    settled(page)
    after = mine()
    assert after["polygon"]["id"] == number
    assert after["polygon"]["properties"] == before["polygon"]["properties"]
    new_ring = after["polygon"]["geometry"]["coordinates"][0]
    assert len(new_ring) == 5 and new_ring[0] == new_ring[-1]
    for i in range(4):
        shift = np.subtract(new_ring[i], polygon_ring[i])
        if i == moved:
            assert np.allclose(shift, expected_shift, atol=2.0), (shift, expected_shift)
        else:
            assert np.allclose(shift, 0, atol=1e-6), f"vertex {i} moved by {shift}"
    new_box = after["rectangle"]["geometry"]["coordinates"][0]
    assert is_rectangle(new_box), new_box
    assert after["rectangle"]["properties"] == before["rectangle"]["properties"]
    xs = sorted({p[0] for p in rectangle_ring})
    ys = sorted({p[1] for p in rectangle_ring})
    new_xs = sorted({p[0] for p in new_box})
    new_ys = sorted({p[1] for p in new_box})
    assert np.allclose([new_xs[0], new_ys[0]], [xs[0], ys[0]], atol=1e-6), "the far corner moved"
    assert np.allclose([new_xs[1] - xs[1], new_ys[1] - ys[1]], corner_shift, atol=2.0), (
        f"{new_box} from {rectangle_ring}, expected {corner_shift}"
    )
    revisions = page.request.get(history).json()
    assert len(revisions) == len(revisions_before) + 1
    assert revisions[-1]["action"] == "edit"
    # The layer draws the polygon's new shape.
    inside_new = centroid([tuple(p) for p in new_ring[:4]])
    assert_colour(layer_pixel(page, *inside_new), "Lymphocyte", (40, 90))

    # A double-click on an edge adds a vertex; Alt-click on a handle removes it; a vertex
    # chosen by a click on its handle goes with Delete, but never below three; Discard
    # restores the stored shape.
    page.mouse.click(*to_page(page, inside_new))
    page.wait_for_function("() => window.slidebankAnnotations.handles() !== null")
    midpoint = ((new_ring[2][0] + new_ring[3][0]) / 2, (new_ring[2][1] + new_ring[3][1]) / 2)
    view_before = page.evaluate(VIEW)
    page.mouse.dblclick(*to_page(page, midpoint))
    settle(page)
    assert page.evaluate(VIEW) == view_before, "the double-click zoomed or panned"
    added = handles(page) or []
    assert len(added) == 5 and np.allclose(added[3], midpoint, atol=2.0), added
    page.keyboard.down("Alt")
    page.mouse.click(*to_page(page, (added[3][0], added[3][1])))
    page.keyboard.up("Alt")
    assert np.allclose(handles(page) or [], new_ring[:4])
    page.mouse.click(*to_page(page, tuple(new_ring[0])))
    page.keyboard.press("Delete")
    assert len(handles(page) or []) == 3
    page.mouse.click(*to_page(page, tuple(new_ring[1])))
    page.keyboard.press("Delete")
    assert len(handles(page) or []) == 3
    expect(page.locator(".ann-error")).to_contain_text("at least three vertices")
    page.locator(".ann-error .ann-dismiss").click()
    expect(page.locator(".ann-pending")).to_have_text("1 unsaved change")
    page.get_by_role("button", name="Discard").click()
    expect(page.locator(".ann-pending")).to_have_text("No unsaved changes")
    wait_idle(page)
    assert_colour(layer_pixel(page, *inside_new), "Lymphocyte", (40, 90))
    assert mine()["polygon"]["geometry"]["coordinates"][0] == new_ring

    aborted_reads(problems)
    problems.assert_none()


def test_a_million_cells_pan_with_their_shapes_and_zoom_out_to_a_heat_map(
    browser: BrowserContext, site: Site, million: Million
) -> None:
    """Zoomed out (the whole slide) the layer is a heat map from the density endpoint; at 1:1
    the cells' outlines are drawn, and a pan across the slide in 20 steps of 2,000 px (each
    one a view with no shapes fetched yet, and a screenful of new tiles) updates them within
    ``FRAME_BOUND_MS``: from the request's start until the canvas is drawn.

    Measured on the 2-core test machine (Chromium, the server and pytest on it together):
    setup of the million 33-45 s (slide 0.5 s, ingest 1 s, the 1,000,000 polygons 32-41 s);
    panning at 1:1, 20 updates of about 1,020 cells each: median 125-160 ms, max 280-370 ms
    on an otherwise quiet machine; median 235-290 ms, max 640-760 ms with other test suites
    running beside it. Most of it is the server's answer, which competes with the ~30 tiles
    of each new view. The first zoomed-out heat map takes 1.2-1.9 s (the overview: two
    density tiles counting every cell). Bound: 1,200 ms.
    """
    page, problems = watched_page(browser)
    page.goto(f"{site.url}/slides/{million.slide_id}")
    settle(page)
    wait_idle(page, timeout_s=60)
    key = str(million.set_id)
    assert page.evaluate("() => window.slidebankAnnotations.modes()")[key] == "density"
    frames = page.evaluate("() => window.slidebankAnnotations.frames")
    assert frames, "no update recorded"
    assert all(f["kind"] == "density" for f in frames), frames
    assert page.evaluate(LAYER_COVERAGE) > 0.5, "no heat map over the slide"
    expect(page.locator(".ann-sets li", has_text="nuclei")).to_contain_text("heat map")
    fit_frames = list(frames)
    screenshot(page, "annotations-million-fit")

    page.keyboard.press("1")
    settled(page)
    assert page.evaluate("() => window.slidebankAnnotations.modes()")[key] == "features"
    expect(page.locator(".ann-sets li", has_text="nuclei")).to_contain_text("shapes")
    screenshot(page, "annotations-million-1to1")

    page.evaluate("() => { window.slidebankAnnotations.frames.length = 0; }")
    y = SLIDE_SIZE[1] / 2
    for step in range(PAN_STEPS):
        x = SLIDE_SIZE[0] * (step + 0.5) / PAN_STEPS
        page.evaluate(
            """([x, y]) => {
              const viewer = window.slidebankViewer;
              const point = viewer.world.getItemAt(0).imageToViewportCoordinates(x, y);
              viewer.viewport.panTo(point);
            }""",
            [x, y],
        )
        settled(page)
        assert page.evaluate("() => window.slidebankAnnotations.modes()")[key] == "features"
        assert page.evaluate(LAYER_COVERAGE) > 0.02, f"no cells drawn at step {step}"
    frames = page.evaluate("() => window.slidebankAnnotations.frames")
    shapes = [f for f in frames if f["kind"] == "features"]
    assert len(shapes) >= PAN_STEPS, frames
    assert all(f["kind"] == "features" for f in frames), frames
    times = [f["ms"] for f in shapes]
    figures = {
        "setup_s": million.setup_s,
        "pan_updates": len(shapes),
        "pan_ms_max": max(times),
        "pan_ms_median": statistics.median(times),
        "pan_fetch_ms_median": statistics.median(f["fetchMs"] for f in shapes),
        "pan_cells_median": statistics.median(f["count"] for f in shapes),
        "bound_ms": FRAME_BOUND_MS,
        "fit_frames": fit_frames,
        "pan_frames": frames,
    }

    # Zoomed out again: the heat map, from the tiles kept since the first view.
    page.keyboard.press("0")
    settled(page)
    assert page.evaluate("() => window.slidebankAnnotations.modes()")[key] == "density"
    figures["cancelled_reads"] = len(aborted_reads(problems))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    Path(ARTIFACTS / "annotations-million.json").write_text(json.dumps(figures, indent=2))
    print(f"\nmillion cells: {json.dumps({k: v for k, v in figures.items() if 'frames' not in k})}")
    assert max(times) <= FRAME_BOUND_MS, f"a pan update took {max(times)} ms: {figures}"
    problems.assert_none()
