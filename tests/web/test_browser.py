"""The web interface in a real browser: Debian's Chromium driven by Playwright against a real
server (uvicorn on a loopback port, ``live_server``) on a repository holding the generated
demo slide (``served``).

The browser is the system's /usr/bin/chromium (``make test`` installs it with apt); Playwright's
own browser download is never used. Without Chromium these tests skip, except in CI
(``CI=true``), where that is a failure.

Screenshots are kept as artifacts in ``test-artifacts/web/`` at the repository's root
(git-ignored): ``viewer-fit.png`` and ``viewer-1to1.png`` of the slide page, ``slides.png`` of
the slide browser.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    Response,
    sync_playwright,
)

from tests.conftest import IN_CI, ROOT
from tests.served import ServedRepository

# A real browser's timing: not beside other tests (make test).
pytestmark = pytest.mark.alone

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "web"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}

# True once the viewer shows its slide, its zoom and pan have settled, and every tile the
# current view needs has loaded.
SETTLED = """() => {
  const viewer = window.slidebankViewer;
  if (!viewer || viewer.world.getItemCount() === 0) return false;
  const viewport = viewer.viewport;
  const target = viewport.getZoom(false);
  const zoomSettled = Math.abs(viewport.getZoom(true) - target) <= 1e-6 * target;
  const panSettled = viewport.getCenter(true).distanceTo(viewport.getCenter(false)) <= 1e-9;
  return zoomSettled && panSettled && viewer.world.getItemAt(0).getFullyLoaded();
}"""
TWO_FRAMES = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
IMAGE_ZOOM = """() => {
  const viewport = window.slidebankViewer.viewport;
  return viewport.viewportToImageZoom(viewport.getZoom(true));
}"""
# Statistics of the pixels the canvas drawer painted: read back from the canvas itself.
CANVAS_PIXELS = """() => {
  const canvas = window.slidebankViewer.drawer.canvas;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0, squares = 0, painted = 0, coloured = 0;
  const count = data.length / 4;
  for (let i = 0; i < data.length; i += 4) {
    const r = data[i], g = data[i + 1], b = data[i + 2], a = data[i + 3];
    const grey = (r + g + b) / 3;
    sum += grey;
    squares += grey * grey;
    if (a > 0) painted += 1;
    if (Math.max(r, g, b) - Math.min(r, g, b) > 40) coloured += 1;
  }
  const mean = sum / count;
  return {width: canvas.width, height: canvas.height, painted: painted / count,
          coloured: coloured / count, std: Math.sqrt(squares / count - mean * mean)};
}"""


@dataclass
class Problems:
    """What went wrong in the browser while a page was used."""

    failed_requests: list[str] = field(default_factory=list)
    error_responses: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    tiles: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        def on_request_failed(request: Request) -> None:
            self.failed_requests.append(f"{request.url}: {request.failure}")

        def on_response(response: Response) -> None:
            if response.status >= 400:
                self.error_responses.append(f"{response.status} {response.url}")
            if "/deepzoom/" in response.url and response.url.endswith(".jpeg"):
                self.tiles.append(response.url)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.console_errors.append(f"{message.text} ({message.location})")

        page.on("request", lambda request: self.requested.append(request.url))
        page.on("requestfailed", on_request_failed)
        page.on("response", on_response)
        page.on("console", on_console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def assert_none(self) -> None:
        assert self.failed_requests == [], "requests failed"
        assert self.error_responses == [], "responses with an error status"
        assert self.console_errors == [], "errors on the console"
        assert self.page_errors == [], "uncaught script errors"


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Playwright]:
    if not CHROMIUM.is_file():
        message = f"Chromium not found at {CHROMIUM} (make test installs Debian's chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright_driver: Playwright, tmp_path: Path) -> Iterator[BrowserContext]:
    """Chromium with a fresh user-data directory for each test."""
    context = playwright_driver.chromium.launch_persistent_context(
        tmp_path / "chromium-profile",
        executable_path=str(CHROMIUM),
        args=LAUNCH_ARGS,
        headless=True,
        viewport={"width": VIEWPORT["width"], "height": VIEWPORT["height"]},
    )
    context.set_default_timeout(30_000)
    try:
        yield context
    finally:
        context.close()


def watched_page(browser: BrowserContext) -> tuple[Page, Problems]:
    page = browser.new_page()
    problems = Problems()
    problems.watch(page)
    return page, problems


def settle(page: Page) -> None:
    page.wait_for_function(SETTLED, polling=100)
    page.evaluate(TWO_FRAMES)


def image_zoom(page: Page) -> float:
    return float(page.evaluate(IMAGE_ZOOM))


def hold_zoom_key(page: Page, beyond: float) -> None:
    """Hold "=" until the image zoom passes ``beyond``, as a user holds it until close
    enough. OpenSeadragon zooms a little every frame while the key is down, so a fixed hold
    zooms less on a loaded machine; 10 s without getting there fails the test."""
    page.keyboard.down("Equal")
    try:
        page.wait_for_function(f"() => ({IMAGE_ZOOM})() > {beyond}", polling=50, timeout=10_000)
    finally:
        page.keyboard.up("Equal")


def screenshot(page: Page, name: str) -> np.ndarray:
    """Saves the page as test-artifacts/web/NAME.png and returns its pixels."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = page.screenshot(path=ARTIFACTS / f"{name}.png")
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_the_slide_viewer_shows_tiles_at_every_zoom_without_a_failure(
    browser: BrowserContext, live_server: str, served: ServedRepository
) -> None:
    page, problems = watched_page(browser)
    page.goto(f"{live_server}/slides/{served.demo_id}")
    settle(page)

    # The viewer has the keyboard focus on load, so its keys work at once.
    assert page.evaluate("() => window.slidebankViewer.canvas === document.activeElement")
    fit_zoom = image_zoom(page)
    assert 0 < fit_zoom < 1
    assert page.locator("#scalebar").is_visible()
    screenshot(page, "viewer-fit")

    # OpenSeadragon's own keyboard zoom (= zooms in while held), then ours: 1 for one image
    # pixel per screen pixel.
    hold_zoom_key(page, fit_zoom * 1.2)
    settle(page)
    assert image_zoom(page) > fit_zoom * 1.2
    page.keyboard.press("1")
    settle(page)
    assert image_zoom(page) == pytest.approx(1.0, rel=1e-3)

    # At 1:1 the tiles come from the full-resolution level of the DeepZoom pyramid
    # (8192 px wide: level 13).
    assert any(f"/deepzoom/{served.demo_id}_files/13/" in url for url in problems.tiles)

    canvas = page.evaluate(CANVAS_PIXELS)
    assert canvas["width"] > 0
    assert canvas["height"] > 0
    assert canvas["painted"] > 0.99, "the canvas should be covered by tiles at 1:1"
    assert canvas["std"] > 10, f"the canvas looks blank: {canvas}"
    assert canvas["coloured"] > 0.05, f"no stained tissue on the canvas: {canvas}"

    # The scale bar: 0.499 µm per pixel at 1:1 and at most 160 px give 50 µm, about 100 px.
    assert page.locator("#scalebar .label").inner_text() == "50 µm"
    bar_width = page.locator("#scalebar .bar").bounding_box()
    assert bar_width is not None
    assert bar_width["width"] == pytest.approx(50 / 0.499, abs=2)
    assert page.locator("#zoom-readout").inner_text().startswith("20.0×")

    pixels = screenshot(page, "viewer-1to1")  # test-artifacts/web/viewer-1to1.png
    stage = pixels[60:-60, 40 : VIEWPORT["width"] - 400]  # the viewer, away from its controls
    assert float(stage.std()) > 10, "the screenshot of the viewer looks blank"

    # The Fit button goes back to the whole slide.
    page.get_by_role("button", name="Fit").click()
    settle(page)
    assert image_zoom(page) == pytest.approx(fit_zoom, rel=1e-3)

    problems.assert_none()


def test_the_slide_browser_and_dataset_list_load_cleanly(
    browser: BrowserContext, live_server: str, served: ServedRepository
) -> None:
    page, problems = watched_page(browser)
    page.goto(f"{live_server}/")
    page.get_by_role("link", name="Slidebank demo").click()
    page.wait_for_load_state("networkidle")
    assert page.url.endswith("/datasets/demo")  # the dataset's landing page
    page.get_by_role("link", name="Browse the slides").click()
    page.wait_for_load_state("networkidle")
    assert "dataset=demo" in page.url

    thumbnail = page.locator(f'img[src="/api/slides/{served.demo_id}/thumbnail"]')
    thumbnail.wait_for()
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle()
    )
    screenshot(page, "slides")

    page.get_by_role("link", name=served.demo_id).first.click()
    settle(page)
    assert page.url.endswith(f"/slides/{served.demo_id}")
    problems.assert_none()


def test_the_api_documentation_renders_offline(browser: BrowserContext, live_server: str) -> None:
    page, problems = watched_page(browser)
    page.goto(f"{live_server}/docs")
    # Swagger UI, served by this server, renders the operations of the OpenAPI document.
    page.locator(".opblock-summary-path", has_text="/api/slides/{slide_id}/region").first.wait_for()
    assert all(url.startswith(live_server) for url in problems.requested)
    problems.assert_none()
