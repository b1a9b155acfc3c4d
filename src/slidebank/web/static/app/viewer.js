/* Slidebank slide viewer: OpenSeadragon on the DeepZoom tiles, with a 1:1 / fit toolbar,
 * a scale bar from the slide's µm per pixel, and the cursor position in level-0 pixels.
 *
 * Keyboard (when the viewer has focus, which it gets on load): OpenSeadragon's own keys —
 * arrows or WASD pan, + / - (and Shift+W / Shift+S) zoom, 0 fits, R rotates — and ours:
 * 1 shows one image pixel per screen pixel, 0 fits also when the focus is elsewhere on the page.
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

  function updateScale() {
    const zoom = imageZoom();
    if (!isFinite(zoom) || zoom <= 0) return;
    const percent = zoom * 100;
    const shown = percent >= 10 ? percent.toFixed(0) : percent.toPrecision(2);
    zoomReadout.textContent = config.objectivePower
      ? `${(zoom * config.objectivePower).toPrecision(3)}× · ${shown}%`
      : `${shown}%`;
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
