"""Controlled access in a real browser, the story of the issue: a researcher requests access, a
committee member approves, the researcher views the slide; after revocation the viewer gets no
more tiles.

Debian's Chromium driven by Playwright, as in ``test_browser.py`` (whose helpers and
``playwright_driver`` fixture, with its skip outside CI, this module shares), against a server
of its own on a loopback port: its repository is fresh, under ``tmp_path``, because the test
makes the demo dataset controlled. Two browser contexts are two people, each with their own
session cookie.

Screenshots are kept as artifacts in ``test-artifacts/web/`` (git-ignored):
``access-refused.png``, ``access-requested.png``, ``access-committee.png``,
``access-granted.png`` and ``access-revoked.png``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Response, expect

from slidebank.access.policy import COMMAND_LINE
from slidebank.catalog.queries import SlideFilter
from slidebank.config import Settings
from slidebank.services import accounts, browsing, ingesting, samples
from slidebank.services.repository import open_repository
from slidebank.web.app import create_app
from slidebank.web.auth import CREDENTIAL_TTL_S
from tests.served import free_port
from tests.web.test_browser import (
    CANVAS_PIXELS,
    CHROMIUM,
    IMAGE_ZOOM,
    LAUNCH_ARGS,
    VIEWPORT,
    Problems,
    hold_zoom_key,
    playwright_driver,
    screenshot,
    settle,
)

__all__ = ["playwright_driver"]  # the fixture, shared with test_browser.py

# A real browser's timing: not beside other tests (make test).
pytestmark = pytest.mark.alone

RESEARCHER = ("researcher", "a researcher's passphrase")
COMMITTEE = ("committee", "the committee's passphrase")
PROJECT = "FHL2 expression in colonic glands"
REFUSED = (403, 404)
TILE = "/deepzoom/"


@dataclass(frozen=True)
class Site:
    """The server of this test: its base URL and the demo slide's id."""

    url: str
    slide_id: str


def _prepare(home: Path, database_url: str) -> tuple[Settings, str]:
    """A fresh repository: the demo slide in dataset "demo", controlled; a researcher; a
    committee member of "demo". Everything through the services, as the command line does."""
    settings = Settings(home=home, database_url=database_url)
    repository = open_repository(settings)
    try:
        ingesting.ingest_paths(
            repository, [samples.demo_slides(home)], "demo", samples.demo_sidecar(home)
        )
        accounts.set_policy(repository, COMMAND_LINE, "demo", "controlled")
        accounts.add_user(repository, COMMAND_LINE, *RESEARCHER)
        accounts.add_user(repository, COMMAND_LINE, *COMMITTEE)
        accounts.add_role(repository, COMMAND_LINE, "demo", COMMITTEE[0], "committee")
        slides = browsing.list_slides(repository, COMMAND_LINE, SlideFilter(dataset="demo"))
    finally:
        repository.close()
    assert len(slides) == 1, f"expected the one demo slide, found {slides}"
    return settings, slides[0]["id"]


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[Site]:
    """The story runs on each catalogue: SQLite and PostgreSQL (conftest's database_url)."""
    settings, slide_id = _prepare(tmp_path / "repo", database_url)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start within 30 s")
        time.sleep(0.05)
    try:
        yield Site(f"http://127.0.0.1:{port}", slide_id)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def chromium(playwright_driver: Playwright) -> Iterator[Browser]:
    browser = playwright_driver.chromium.launch(
        executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
    )
    try:
        yield browser
    finally:
        browser.close()


def new_person(browser: Browser) -> BrowserContext:
    """A browser context of its own (cookies, cache): one person at their computer."""
    context = browser.new_context(
        viewport={"width": VIEWPORT["width"], "height": VIEWPORT["height"]}
    )
    context.set_default_timeout(15_000)
    return context


def sign_in(page: Page, site: Site, who: tuple[str, str]) -> None:
    name, password = who
    page.goto(f"{site.url}/sign-in")
    form = page.locator("form[action='/sign-in']")
    form.get_by_label("User name").fill(name)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    expect(page.locator(".who a[href='/account']"), f"{name} should be signed in").to_have_text(
        name
    )


def tile_responses(page: Page) -> list[tuple[int, str]]:
    """The status and URL of every DeepZoom tile the page is answered from now on."""
    seen: list[tuple[int, str]] = []

    def on_response(response: Response) -> None:
        if TILE in response.url and "_files/" in response.url:
            seen.append((response.status, response.url))

    page.on("response", on_response)
    return seen


def wait_for_quiet(page: Page, seen: list[Any], at_least: int, timeout_s: float = 10) -> None:
    """Until ``seen`` holds ``at_least`` items and has not grown for half a second."""
    deadline = time.monotonic() + timeout_s
    count, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        page.wait_for_timeout(100)  # lets Playwright deliver the page's events
        if len(seen) != count:
            count, since = len(seen), time.monotonic()
        elif count >= at_least and time.monotonic() - since >= 0.5:
            return
    raise AssertionError(f"expected at least {at_least} tile responses, got {seen}")


def my_request_status(page: Page, site: Site) -> str:
    """The status of the researcher's request for "demo", as their account page shows it."""
    page.goto(f"{site.url}/account")
    rows = page.get_by_test_id("my-requests").locator("tbody tr", has_text=PROJECT)
    expect(rows, "the account page should list the request once").to_have_count(1)
    return rows.locator("td[class^='status-']").inner_text().strip()


def granted_row(page: Page) -> Any:
    """The researcher's row in the committee page's table of approved requests."""
    section = page.locator("section", has=page.get_by_role("heading", name="Approved"))
    rows = section.locator("tbody tr", has_text=RESEARCHER[0])
    expect(rows, "the committee page should list the approved request once").to_have_count(1)
    return rows


def test_a_researcher_is_granted_access_views_the_slide_and_loses_it_on_revocation(
    chromium: Browser, site: Site
) -> None:
    researcher = new_person(chromium)
    committee = new_person(chromium)
    slide_url = f"{site.url}/slides/{site.slide_id}"

    # 1. Signed in but without a grant: no slide, no tiles; the dataset page offers the form.
    page = researcher.new_page()
    sign_in(page, site, RESEARCHER)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    refused = page.goto(slide_url)
    assert refused is not None
    assert refused.status in REFUSED, f"the slide page should be refused, got {refused.status}"
    expect(page.locator("#viewer")).to_have_count(0)
    screenshot(page, "access-refused")
    page.goto(f"{site.url}/datasets/demo")
    expect(page.get_by_test_id("policy")).to_have_text("controlled")
    tiles_asked = [url for url in requested if TILE in url]
    assert tiles_asked == [], "a researcher without a grant should not even be offered tiles"

    access = page.get_by_test_id("access")
    expect(access.get_by_role("heading", name="Request access")).to_be_visible()
    access.get_by_label("Project title").fill(PROJECT)
    access.get_by_label("Purpose").fill("Compare FHL2 staining across the cores of the array.")
    access.get_by_label("Institution").fill("Institute of Pathology")
    access.get_by_label("Duration (days)").fill("90")
    access.get_by_label("I accept the terms of use").check()
    access.get_by_role("button", name="Send request").click()
    page.wait_for_url(f"{site.url}/account")
    assert my_request_status(page, site) == "pending"
    screenshot(page, "access-requested")

    # 2. The committee member approves it, with an end date of their own.
    desk = committee.new_page()
    sign_in(desk, site, COMMITTEE)
    desk.goto(f"{site.url}/committee")
    pending = desk.locator("article.request", has_text=PROJECT)
    expect(pending, "the committee should see the pending request").to_have_count(1)
    expect(pending).to_contain_text(RESEARCHER[0])
    ends_on = (date.today() + timedelta(days=30)).isoformat()
    approve = pending.locator("form", has=desk.get_by_role("button", name="Approve"))
    approve.get_by_label("Grant ends on").fill(ends_on)
    approve.get_by_role("button", name="Approve").click()
    desk.wait_for_url(f"{site.url}/committee")
    expect(desk.locator("article.request", has_text=PROJECT)).to_have_count(0)
    cells = granted_row(desk).locator("td")
    expect(cells.nth(1)).to_have_text("demo")
    expect(cells.nth(3)).to_have_text(ends_on)
    expect(cells.nth(4)).to_have_text("active")
    screenshot(desk, "access-committee")

    # 3. The researcher views the slide: tiles, painted canvas, nothing failing.
    viewer = researcher.new_page()
    problems = Problems()
    problems.watch(viewer)
    tiles = tile_responses(viewer)
    shown = viewer.goto(slide_url)
    assert shown is not None
    assert shown.status == 200, f"the granted slide page answered {shown.status}"
    settle(viewer)
    fit_zoom = float(viewer.evaluate(IMAGE_ZOOM))
    hold_zoom_key(viewer, fit_zoom * 1.2)  # zoom in a little, as someone looking closer does
    settle(viewer)
    assert float(viewer.evaluate(IMAGE_ZOOM)) > fit_zoom * 1.2, "the viewer did not zoom in"
    assert tiles, "the viewer loaded no tiles"
    assert all(status == 200 for status, _ in tiles), f"tiles not served: {tiles}"
    canvas = viewer.evaluate(CANVAS_PIXELS)
    assert canvas["painted"] > 0.5, f"the canvas is hardly covered by tiles: {canvas}"
    assert canvas["std"] > 10, f"the canvas looks blank: {canvas}"
    screenshot(viewer, "access-granted")
    problems.assert_none()
    loaded = {url for _, url in tiles}
    assert my_request_status(page, site) == "approved"

    # 4. The committee member revokes the grant.
    desk.goto(f"{site.url}/committee")
    row = granted_row(desk)
    row.get_by_placeholder("Reason").fill("The project ended early.")
    row.get_by_role("button", name="Revoke").click()
    desk.wait_for_url(f"{site.url}/committee")
    expect(granted_row(desk).locator("td").nth(4)).to_have_text("ended or revoked")
    revoked_at = time.monotonic()

    # 5. Once the server's cache of credentials has expired at the latest, the open viewer
    # gets no new tile: neither for a region it had not loaded ...
    viewer.wait_for_timeout(max(0.0, revoked_at + CREDENTIAL_TTL_S + 0.5 - time.monotonic()) * 1000)
    after = tile_responses(viewer)
    viewer.evaluate(
        """() => {
          const viewport = window.slidebankViewer.viewport;
          const size = window.slidebankViewer.world.getItemAt(0).getContentSize();
          viewport.zoomTo(viewport.imageToViewportZoom(1), null, true);
          viewport.panTo(viewport.imageToViewportCoordinates(size.x * 0.85, size.y * 0.85), true);
        }"""
    )
    wait_for_quiet(viewer, after, at_least=1)
    new = [(status, url) for status, url in after if url not in loaded]
    assert new, f"the viewer asked for no tile it had not loaded before: {after}"
    served_anyway = [(status, url) for status, url in new if status not in REFUSED]
    assert served_anyway == [], "tiles served after the grant was revoked"
    screenshot(viewer, "access-revoked")

    # ... nor, past the browser's cache, one it had loaded while the grant held; while the
    # session itself is still good (the account page below), so it is the grant that ended.
    again = sorted(loaded)[:4]
    statuses = viewer.evaluate(
        """async (urls) => Promise.all(urls.map(async url =>
             (await fetch(url, {cache: "no-store", credentials: "same-origin"})).status))""",
        again,
    )
    assert all(status in REFUSED for status in statuses), (
        f"tiles refetched after the revocation answered {dict(zip(again, statuses, strict=True))}"
    )

    # A reload of the slide page is refused too.
    reloaded = viewer.reload()
    assert reloaded is not None
    assert reloaded.status in REFUSED, f"the reloaded slide page answered {reloaded.status}"
    expect(viewer.locator("#viewer")).to_have_count(0)

    assert problems.page_errors == [], "the viewer should take refused tiles without a script error"
    assert my_request_status(page, site) == "approved (grant revoked)"
    researcher.close()
    committee.close()
