/* Slidebank slide viewer: OpenSeadragon on the DeepZoom tiles, with a 1:1 / fit toolbar,
 * a scale bar from the slide's µm per pixel, and the cursor position in level-0 pixels.
 * The toolbar, scale bar and cursor readout are inside the viewer's element (the template
 * puts them there), so they stay in OpenSeadragon's full page mode.
 *
 * Keyboard (when the viewer has focus, which it gets on load): OpenSeadragon's own keys —
 * arrows or WASD pan, + / - (and Shift+W / Shift+S) zoom, 0 fits, R rotates — and ours:
 * 1 shows one image pixel per screen pixel, 0 fits also when the focus is elsewhere on the
 * page, Escape leaves full page. OpenSeadragon's buttons are reached with Tab and pressed
 * with Enter or Space.
 */
(function () {
  "use strict";

  const configElement = document.getElementById("viewer-config");
  const container = document.getElementById("viewer");
  if (!configElement || !container) {
    return;
  }
  const config = JSON.parse(configElement.textContent);

  function showProblem(title, text) {
    const box = document.createElement("div");
    box.className = "viewer missing";
    box.setAttribute("role", "alert");
    const heading = document.createElement("h2");
    heading.textContent = title;
    const paragraph = document.createElement("p");
    paragraph.textContent = text;
    box.append(heading, paragraph);
    container.replaceWith(box);
    for (const id of ["scalebar", "cursor"]) {
      const element = document.getElementById(id);
      if (element) element.hidden = true;
    }
  }

  if (typeof window.OpenSeadragon === "undefined") {
    showProblem(
      "Viewer assets are missing",
      "OpenSeadragon did not load from /static/vendor/openseadragon/. Install it with " +
        "`make install` (npm ci --prefix src/slidebank/web/static) and reload this page."
    );
    return;
  }
  const OSD = window.OpenSeadragon;

  const viewer = OSD({
    element: container,
    tileSources: config.tileSource,
    prefixUrl: config.prefixUrl,
    // The 2D canvas drawer: it works the same with and without a GPU (WebGL falls back with
    // console noise on machines without one), and its pixels can be read back for tests.
    drawer: "canvas",
    showNavigator: true,
    navigatorPosition: "TOP_RIGHT",
    navigatorSizeRatio: 0.18,
    navigationControlAnchor: OSD.ControlAnchor.BOTTOM_RIGHT,
    showRotationControl: true,
    // Zoom past 1:1 (4 screen pixels per image pixel) to look closely at nuclei.
    maxZoomPixelRatio: 4,
    visibilityRatio: 0.2,
    animationTime: 0.5,
    zoomPerScroll: 1.4,
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
    crossOriginPolicy: false,
  });
  window.slidebankViewer = viewer; // for the browser tests and the console

  // The canvas takes the keyboard (arrows pan, + and - zoom): "application" tells screen
  // readers to pass those keys on, and the label says what it is.
  viewer.canvas.setAttribute("role", "application");
  viewer.canvas.setAttribute("aria-roledescription", "slide viewer");
  viewer.canvas.setAttribute(
    "aria-label",
    "Slide image. Arrow keys pan, plus and minus zoom, 0 fits, 1 shows 1:1, R rotates."
  );

  /* OpenSeadragon's buttons are divs of four images, each image with the tooltip as its
   * alternative text, and none of them focusable: a screen reader reads each button as
   * images, and Tab never reaches them. Made into focusable buttons named by their tooltip;
   * OpenSeadragon itself presses them on Enter, Space is added here. */
  function accessibleButton(button) {
    if (!button || !button.element) return;
    const element = button.element;
    element.setAttribute("role", "button");
    element.setAttribute("tabindex", "0");
    element.setAttribute("aria-label", button.tooltip);
    element.classList.add("osd-button");
    for (const image of element.querySelectorAll("img")) {
      image.alt = "";
      image.setAttribute("aria-hidden", "true");
    }
    element.addEventListener("keydown", (event) => {
      if (event.key !== " ") return;
      event.preventDefault(); // no page scroll
      // What OpenSeadragon raises for Enter: "click" (a step of zoom) and "release" (home,
      // full page, rotate, flip act on release; the zoom buttons stop zooming on it).
      button.raiseEvent("click", { originalEvent: event });
      button.raiseEvent("release", { originalEvent: event });
    });
  }
  for (const name of [
    "zoomInButton",
    "zoomOutButton",
    "homeButton",
    "fullPageButton",
    "rotateLeftButton",
    "rotateRightButton",
    "flipButton",
  ]) {
    accessibleButton(viewer[name]);
  }
  if (viewer.buttonGroup && viewer.buttonGroup.element) {
    viewer.buttonGroup.element.setAttribute("role", "toolbar");
    viewer.buttonGroup.element.setAttribute("aria-label", "Zoom, rotate and full page");
  }

  const zoomReadout = document.getElementById("zoom-readout");
  const cursorReadout = document.getElementById("cursor");
  const scalebar = document.getElementById("scalebar");
  const scalebarBar = scalebar.querySelector(".bar");
  const scalebarLabel = scalebar.querySelector(".label");

  /** Screen (CSS) pixels per level-0 image pixel at the current, animated zoom. */
  function imageZoom() {
    return viewer.viewport.viewportToImageZoom(viewer.viewport.getZoom(true));
  }

  function oneToOne() {
    viewer.viewport.zoomTo(viewer.viewport.imageToViewportZoom(1));
  }

  function fit() {
    viewer.viewport.goHome();
  }

  // The scale bar is written by hand: there is no well-kept OpenSeadragon scale-bar package
  // on npm (the known plugins are unmaintained forks that patch old OpenSeadragon versions).
  const SCALEBAR_MAX_PX = 160;

  /** The longest round length (1, 2 or 5 × 10^n µm) that fits in ``maxMicrons``. */
  function roundLength(maxMicrons) {
    const power = Math.pow(10, Math.floor(Math.log10(maxMicrons)));
    for (const step of [5, 2, 1]) {
      if (step * power <= maxMicrons) return step * power;
    }
    return power;
  }

  function lengthLabel(microns) {
    const clean = (value) => String(parseFloat(value.toPrecision(3)));
    return microns >= 1000 ? `${clean(microns / 1000)} mm` : `${clean(microns)} µm`;
  }

  /** Magnification for the readout: three significant digits ("20.0", "2.05"), whole
   * numbers from 100 up; toPrecision alone would write 1072 as "1.07e+3" (a 16 px slide
   * fitted to the window). */
  function magnificationText(value) {
    return value >= 100 ? Math.round(value).toLocaleString("en") : value.toPrecision(3);
  }

  function percentText(percent) {
    return percent >= 10 ? Math.round(percent).toLocaleString("en") : percent.toPrecision(2);
  }

  function updateScale() {
    const zoom = imageZoom();
    if (!isFinite(zoom) || zoom <= 0) return;
    const percent = percentText(zoom * 100);
    zoomReadout.textContent = config.objectivePower
      ? `${magnificationText(zoom * config.objectivePower)}× · ${percent}%`
      : `${percent}%`;
    if (!config.mpp) {
      scalebar.hidden = true;
      return;
    }
    const micronsPerScreenPixel = config.mpp / zoom;
    const microns = roundLength(micronsPerScreenPixel * SCALEBAR_MAX_PX);
    scalebarBar.style.width = `${Math.round(microns / micronsPerScreenPixel)}px`;
    scalebarLabel.textContent = lengthLabel(microns);
    scalebar.hidden = false;
  }

  viewer.addHandler("open", () => {
    updateScale();
    viewer.canvas.focus();
  });
  viewer.addHandler("animation", updateScale);
  viewer.addHandler("viewport-change", updateScale);
  viewer.addHandler("resize", updateScale);
  viewer.addHandler("open-failed", (event) => {
    showProblem("The slide could not be opened", String(event.message || event.source));
  });

  // The cursor's position on the slide, in level-0 pixels.
  new OSD.MouseTracker({
    element: viewer.canvas,
    moveHandler(event) {
      if (viewer.world.getItemCount() === 0) return;
      const point = viewer.viewport.viewerElementToImageCoordinates(event.position);
      const x = Math.floor(point.x);
      const y = Math.floor(point.y);
      if (x < 0 || y < 0 || x >= config.width || y >= config.height) {
        cursorReadout.textContent = "";
        return;
      }
      cursorReadout.textContent = `x ${x.toLocaleString("en")}  y ${y.toLocaleString("en")} px`;
    },
    leaveHandler() {
      cursorReadout.textContent = "";
    },
  });

  document.getElementById("one-to-one").addEventListener("click", () => {
    oneToOne();
    viewer.canvas.focus();
  });
  document.getElementById("fit").addEventListener("click", () => {
    fit();
    viewer.canvas.focus();
  });

  // Escape leaves full page (and the browser's full screen, which OpenSeadragon enters with
  // it where it can). Listened to on the window, after the document's listeners: the
  // annotation layer uses Escape first (to cancel a drawing, clear a selection) and marks
  // the event as used when it did.
  window.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented || !viewer.isFullPage()) return;
    if (OSD.isFullScreen()) viewer.setFullScreen(false);
    else viewer.setFullPage(false);
    event.preventDefault();
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target instanceof HTMLElement && target.closest("input, textarea, select, [contenteditable]")) {
      return;
    }
    const inViewer = viewer.canvas.contains(target);
    if (event.key === "1") {
      oneToOne();
      event.preventDefault();
    } else if (event.key === "0" && !inViewer) {
      // In the viewer OpenSeadragon fits on 0 itself.
      fit();
      event.preventDefault();
    }
  });
})();
