/* Slidebank annotations over the slide viewer: the slide's annotation sets drawn on one canvas
 * over OpenSeadragon, coloured by class; a panel to show and hide sets and classes; drawing
 * and editing tools for whoever may write annotations.
 *
 * Coordinates: annotations are in level-0 image pixels. One affine transform from image
 * pixels to the viewer element's CSS pixels is taken from OpenSeadragon for each drawn frame
 * (so rotation and flipping follow the tiles), and inverted for the pointer.
 *
 * Level of detail, per set and per view (the view OpenSeadragon is heading to, so that a
 * zoom fetches once, for where it ends):
 *   - A set's annotations in the window to fetch (the view plus a margin) are estimated from
 *     its overview: the density grid of the whole slide at a coarse level (at most 2 × 2
 *     tiles), fetched once for every set of more than FEATURE_BUDGET annotations. Smaller
 *     sets are always drawn as shapes. Until the overview arrives, the set's count spread
 *     evenly over the slide stands in for it.
 *   - Estimate <= FEATURE_BUDGET: shapes, from /annotations?x0&y0&x1&y1&sets&simplify, the
 *     tolerance being one screen pixel in level-0 pixels. The answer covers the view and a
 *     margin, so small pans need no request.
 *   - Otherwise a heat map from /annotations/density, in cells of 2^k level-0 pixels, the
 *     smallest power of two of at least DENSITY_CELL_PX screen pixels (16-32 px on screen),
 *     fetched in tiles of TILE_CELLS × TILE_CELLS cells on that fixed grid and kept, so that
 *     panning a zoomed-out slide fetches only the tiles that come into view.
 * A set keeps showing what it showed until the new level of detail has arrived. Requests
 * that the view has moved on from are aborted; updates run at most every THROTTLE_MS while
 * the view moves and once more when its animation finishes.
 *
 * For tests and the console: window.slidebankAnnotations.frames lists every completed update
 * of a set, {ms, kind: "features" | "density", count, set}, ms counted from the request's
 * start until the canvas has been drawn with its answer; idle() tells whether nothing is
 * pending; modes() gives what each set shows.
 */
(function () {
  "use strict";

  const configElement = document.getElementById("annotation-config");
  const panel = document.getElementById("annotations-panel");
  const viewer = window.slidebankViewer;
  if (!configElement || !panel) return;
  if (!viewer) {
    panel.hidden = true; // viewer.js explains what is missing
    return;
  }
  const config = JSON.parse(configElement.textContent);
  const SLIDE = config.slide;
  const WIDTH = config.width;
  const HEIGHT = config.height;
  const USER = config.user;
  const MAY_DRAW = Boolean(config.mayDraw && USER);

  const FEATURE_BUDGET = 3000;
  const DENSITY_CELL_PX = 16;
  const TILE_CELLS = 32;
  const WINDOW_MARGIN = 0.15;
  const THROTTLE_MS = 120;
  const MAX_TILES_PER_SET = 512;
  const POINT_RADIUS = 4;
  const HIT_TOLERANCE_PX = 6;
  const CLOSE_DISTANCE_PX = 4;
  const DOUBLE_CLICK_PX = 8;
  const DOUBLE_CLICK_MS = 500;
  const HANDLE_RADIUS = 5; // the vertex handles of the selection, CSS px
  const HANDLE_HIT_PX = 9;
  const UNCLASSIFIED = "";
  const UNCLASSIFIED_COLOUR = "#b8b8c0";
  // Fallback colours for classes the label schema does not colour.
  const PALETTE = [
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#42d4f4",
    "#f032e6", "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324",
  ];
  // The heat map's ramp, from sparse to dense.
  const HEAT = ["#313695", "#4575b4", "#74add1", "#abd9e9", "#fee090", "#fdae61", "#f46d43", "#d73027"];
  const HEAT_ALPHA = 0.5;

  // ---------------------------------------------------------------- small helpers

  const thousands = (n) => Number(n).toLocaleString("en").replace(/,/g, "\u202f");

  function rgbOf(hex) {
    const value = parseInt(hex.slice(1), 16);
    return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
  }

  function rgba(hex, alpha) {
    const [r, g, b] = rgbOf(hex);
    return `rgba(${r}, ${g}, ${b}, ${alpha})`;
  }

  function paletteColour(name) {
    let hash = 2166136261;
    for (let i = 0; i < name.length; i++) {
      hash = Math.imul(hash ^ name.charCodeAt(i), 16777619);
    }
    return PALETTE[(hash >>> 0) % PALETTE.length];
  }

  function element(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (key === "className") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (value === true) node.setAttribute(key, "");
      else if (value !== false && value !== null && value !== undefined) node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  const isAbort = (error) => error && error.name === "AbortError";

  /** A JSON request; failures become an ApiError with the problem details' ``detail``. */
  async function api(url, options = {}) {
    const headers = { Accept: "application/json" };
    const init = { method: options.method || "GET", headers, credentials: "same-origin" };
    // Ahead of the tile images that OpenSeadragon asks for at the same moment: the browser
    // gives a host only a few connections.
    if (options.priority) init.priority = options.priority;
    if (options.signal) init.signal = options.signal;
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    if (init.method !== "GET" && config.csrfToken) headers["X-CSRF-Token"] = config.csrfToken;
    const response = await fetch(url, init);
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`.trim();
      try {
        const problem = await response.json();
        if (problem && typeof problem.detail === "string" && problem.detail) detail = problem.detail;
        else if (problem && problem.title) detail = problem.title;
      } catch (ignored) {
        // not JSON: keep the status line
      }
      throw new ApiError(detail, response.status);
    }
    return response.json();
  }

  // ---------------------------------------------------------------- classes and sets

  /** name → {name, colour, visible, schema} ("" is the unclassified). */
  const classes = new Map();
  for (const item of config.classes) {
    classes.set(item.name, {
      name: item.name,
      colour: item.color || paletteColour(item.name),
      visible: true,
      schema: true,
    });
  }

  function classOf(label) {
    const name = label === null || label === undefined ? UNCLASSIFIED : String(label);
    let found = classes.get(name);
    if (!found) {
      found = {
        name,
        colour: name === UNCLASSIFIED ? UNCLASSIFIED_COLOUR : paletteColour(name),
        visible: true,
        schema: false,
      };
      classes.set(name, found);
      classesChanged();
    }
    if (!found.fill) {
      found.fill = rgba(found.colour, 0.25);
      found.stroke = rgba(found.colour, 0.95);
    }
    return found;
  }

  const classTitle = (name) => (name === UNCLASSIFIED ? "Unclassified" : name);

  /** id → the state of one set. */
  const sets = new Map();

  function addSet(info) {
    const set = {
      id: info.id,
      info,
      visible: true,
      editable: Boolean(
        USER && MAY_DRAW && info.owner_user_id === USER.id && info.kind !== "reference"
      ),
      features: null, // {window, simplify, items, groups, truncated, started}
      featuresFetch: null, // {controller, window, simplify}
      tiles: new Map(), // "k:tx:ty" → tile
      tileFetches: new Map(), // "k:tx:ty" → {controller, groups, pinned}
      want: null, // what the latest update asked for
      shown: null, // "features" | "density"
      shownLevel: null,
      overview: null, // {level, cell, columns, rows, grid: Float64Array, maxDensity}
    };
    sets.set(info.id, set);
    return set;
  }
  for (const info of config.sets) addSet(info);

  // ---------------------------------------------------------------- the canvas

  const layer = document.createElement("canvas");
  layer.className = "annotation-layer";
  layer.setAttribute("aria-hidden", "true");
  viewer.canvas.appendChild(layer);
  const context = layer.getContext("2d");
  let pixelRatio = window.devicePixelRatio || 1;
  let opened = false;

  function resizeLayer() {
    pixelRatio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(viewer.canvas.clientWidth * pixelRatio));
    const height = Math.max(1, Math.round(viewer.canvas.clientHeight * pixelRatio));
    if (layer.width !== width || layer.height !== height) {
      layer.width = width;
      layer.height = height;
    }
    requestDraw();
  }

  /** The affine map from level-0 image pixels to the viewer element's CSS pixels, now. */
  function transform() {
    const viewport = viewer.viewport;
    const item = viewer.world.getItemAt(0);
    const at = (x, y) => viewport.pixelFromPoint(item.imageToViewportCoordinates(x, y, true), true);
    const origin = at(0, 0);
    const alongX = at(1024, 0);
    const alongY = at(0, 1024);
    const m = {
      a: (alongX.x - origin.x) / 1024,
      b: (alongX.y - origin.y) / 1024,
      c: (alongY.x - origin.x) / 1024,
      d: (alongY.y - origin.y) / 1024,
      e: origin.x,
      f: origin.y,
    };
    if (viewport.getFlip()) {
      // The drawer mirrors the canvas about its centre.
      const width = viewport.getContainerSize().x;
      m.a = -m.a;
      m.c = -m.c;
      m.e = width - m.e;
    }
    return m;
  }

  function toImage(m, x, y) {
    const det = m.a * m.d - m.b * m.c;
    const dx = x - m.e;
    const dy = y - m.f;
    return { x: (m.d * dx - m.c * dy) / det, y: (m.a * dy - m.b * dx) / det };
  }

  /** The image rectangle (level-0 px) that the viewer shows now, and the px per screen px. */
  function currentView(m) {
    const width = viewer.canvas.clientWidth;
    const height = viewer.canvas.clientHeight;
    const corners = [toImage(m, 0, 0), toImage(m, width, 0), toImage(m, 0, height), toImage(m, width, height)];
    return boundsOf(corners, 1 / Math.hypot(m.a, m.b));
  }

  /** The same for the view OpenSeadragon is animating to. */
  function targetView() {
    const viewport = viewer.viewport;
    const item = viewer.world.getItemAt(0);
    const box = viewport.getBounds(false).getBoundingBox();
    const rect = item.viewportToImageRectangle(box);
    const s = 1 / item.viewportToImageZoom(viewport.getZoom(false));
    return { x0: rect.x, y0: rect.y, x1: rect.x + rect.width, y1: rect.y + rect.height, s };
  }

  function boundsOf(points, s) {
    const xs = points.map((p) => p.x);
    const ys = points.map((p) => p.y);
    return { x0: Math.min(...xs), y0: Math.min(...ys), x1: Math.max(...xs), y1: Math.max(...ys), s };
  }

  function clampToSlide(view) {
    const box = {
      x0: Math.max(0, view.x0),
      y0: Math.max(0, view.y0),
      x1: Math.min(WIDTH, view.x1),
      y1: Math.min(HEIGHT, view.y1),
    };
    return box.x1 > box.x0 && box.y1 > box.y0 ? box : null;
  }

  const covers = (outer, inner) =>
    outer.x0 <= inner.x0 && outer.y0 <= inner.y0 && outer.x1 >= inner.x1 && outer.y1 >= inner.y1;

  const overlaps = (box, view) =>
    box[0] <= view.x1 && box[2] >= view.x0 && box[1] <= view.y1 && box[3] >= view.y0;

  // ---------------------------------------------------------------- drawing

  let drawQueued = false;
  const afterDraw = [];

  function requestDraw(then) {
    if (then) afterDraw.push(then);
    if (!drawQueued) {
      drawQueued = true;
      requestAnimationFrame(draw);
    }
  }

  function draw() {
    drawQueued = false;
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.clearRect(0, 0, layer.width, layer.height);
    if (opened && viewer.world.getItemCount() > 0) {
      const m = transform();
      const view = currentView(m);
      context.setTransform(pixelRatio, 0, 0, pixelRatio, 0, 0);
      context.lineJoin = "round";
      for (const set of sets.values()) {
        if (!set.visible) continue;
        if (set.shown === "density") drawDensity(set, m, view);
        else if (set.shown === "features") drawFeatures(set.features, m, view);
      }
      drawDrafts(m);
      drawSelection(m);
      drawInProgress(m);
    }
    for (const then of afterDraw.splice(0)) then();
    settleIdle();
  }

  function ringPath(ring, m, close) {
    const { a, b, c, d, e, f } = m;
    context.moveTo(a * ring[0] + c * ring[1] + e, b * ring[0] + d * ring[1] + f);
    for (let i = 2; i < ring.length; i += 2) {
      const x = ring[i];
      const y = ring[i + 1];
      context.lineTo(a * x + c * y + e, b * x + d * y + f);
    }
    if (close) context.closePath();
  }

  function pointsPath(points, m, radius) {
    const { a, b, c, d, e, f } = m;
    for (let i = 0; i < points.length; i += 2) {
      const x = a * points[i] + c * points[i + 1] + e;
      const y = b * points[i] + d * points[i + 1] + f;
      context.moveTo(x + radius, y);
      context.arc(x, y, radius, 0, 2 * Math.PI);
    }
  }

  function drawFeatures(data, m, view) {
    if (!data) return;
    for (const [label, group] of data.groups) {
      const style = classOf(label);
      if (!style.visible) continue;
      if (group.polygons.length) {
        context.beginPath();
        for (const item of group.polygons) {
          if (!overlaps(item.box, view)) continue;
          for (const ring of item.rings) ringPath(ring, m, true);
        }
        context.fillStyle = style.fill;
        context.fill("evenodd");
        context.lineWidth = 1.25;
        context.strokeStyle = style.stroke;
        context.stroke();
      }
      if (group.lines.length) {
        context.beginPath();
        for (const item of group.lines) {
          if (!overlaps(item.box, view)) continue;
          for (const ring of item.rings) ringPath(ring, m, false);
        }
        context.lineWidth = 2;
        context.strokeStyle = style.stroke;
        context.stroke();
      }
      if (group.points.length) {
        context.beginPath();
        for (const item of group.points) {
          if (overlaps(item.box, view)) pointsPath(item.points, m, POINT_RADIUS);
        }
        context.fillStyle = style.colour;
        context.fill();
        context.lineWidth = 1;
        context.strokeStyle = "rgba(0, 0, 0, 0.6)";
        context.stroke();
      }
    }
  }

  function drawDensity(set, m, view) {
    const overview = set.overview;
    const level = set.shownLevel;
    const cell = 2 ** level;
    const side = TILE_CELLS * cell;
    // Counts per cell are coloured against the densest overview cell scaled to this cell size.
    const full = overview ? overview.maxDensity * cell * cell : 0;
    const paths = HEAT.map(() => new Path2D());
    const { a, b, c, d, e, f } = m;
    const corner = (path, x, y, first) => {
      const px = a * x + c * y + e;
      const py = b * x + d * y + f;
      if (first) path.moveTo(px, py);
      else path.lineTo(px, py);
    };
    const first = tileRange(view, level);
    for (let ty = first.ty0; ty <= first.ty1; ty++) {
      for (let tx = first.tx0; tx <= first.tx1; tx++) {
        const tile = set.tiles.get(`${level}:${tx}:${ty}`);
        if (!tile) continue;
        const cells = tile.cells;
        const peak = full > 0 ? full : tile.peak;
        for (let i = 0; i < cells.length; i += 3) {
          const x = tx * side + cells[i] * cell;
          const y = ty * side + cells[i + 1] * cell;
          const share = Math.min(1, Math.sqrt(cells[i + 2] / peak));
          const path = paths[Math.min(HEAT.length - 1, Math.floor(share * HEAT.length))];
          corner(path, x, y, true);
          corner(path, x + cell, y, false);
          corner(path, x + cell, y + cell, false);
          corner(path, x, y + cell, false);
          path.closePath();
        }
      }
    }
    paths.forEach((path, i) => {
      context.fillStyle = rgba(HEAT[i], HEAT_ALPHA);
      context.fill(path);
    });
  }

  // ---------------------------------------------------------------- features

  function parseGeometry(geometry) {
    const flat = (coordinates) => {
      const out = new Float64Array(coordinates.length * 2);
      coordinates.forEach((p, i) => {
        out[2 * i] = p[0];
        out[2 * i + 1] = p[1];
      });
      return out;
    };
    switch (geometry && geometry.type) {
      case "Point":
        return { kind: "point", points: flat([geometry.coordinates]) };
      case "MultiPoint":
        return { kind: "point", points: flat(geometry.coordinates) };
      case "LineString":
        return { kind: "line", rings: [flat(geometry.coordinates)] };
      case "MultiLineString":
        return { kind: "line", rings: geometry.coordinates.map(flat) };
      case "Polygon":
        return { kind: "polygon", rings: geometry.coordinates.map(flat) };
      case "MultiPolygon":
        return { kind: "polygon", rings: geometry.coordinates.flat(1).map(flat) };
      default:
        return null;
    }
  }

  function boxOf(arrays) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const values of arrays) {
      for (let i = 0; i < values.length; i += 2) {
        if (values[i] < x0) x0 = values[i];
        if (values[i] > x1) x1 = values[i];
        if (values[i + 1] < y0) y0 = values[i + 1];
        if (values[i + 1] > y1) y1 = values[i + 1];
      }
    }
    return [x0, y0, x1, y1];
  }

  /** A drawable record of a GeoJSON feature. */
  function record(feature, set) {
    const parsed = parseGeometry(feature.geometry);
    if (!parsed) return null;
    const properties = feature.properties || {};
    const label = properties.label === null || properties.label === undefined ? UNCLASSIFIED : String(properties.label);
    classOf(label);
    return {
      number: feature.id,
      set,
      label,
      shape: properties.shape || parsed.kind,
      kind: parsed.kind,
      rings: parsed.rings || [],
      points: parsed.points || new Float64Array(0),
      box: boxOf(parsed.rings || [parsed.points]),
    };
  }

  function grouped(items) {
    const groups = new Map();
    for (const item of items) {
      if (item.removed) continue;
      let group = groups.get(item.label);
      if (!group) {
        group = { polygons: [], lines: [], points: [] };
        groups.set(item.label, group);
      }
      group[item.kind === "polygon" ? "polygons" : item.kind === "line" ? "lines" : "points"].push(item);
    }
    return groups;
  }

  function fetchFeatures(set, window, simplify) {
    const controller = new AbortController();
    const request = { controller, window, simplify };
    set.featuresFetch = request;
    const started = performance.now();
    const query = new URLSearchParams({
      x0: window.x0.toFixed(1),
      y0: window.y0.toFixed(1),
      x1: window.x1.toFixed(1),
      y1: window.y1.toFixed(1),
      sets: String(set.id),
      simplify: simplify.toPrecision(3),
    });
    track(
      api(`/api/slides/${encodeURIComponent(SLIDE)}/annotations?${query}`, { signal: controller.signal, priority: "high" })
        .then((answer) => {
          if (set.featuresFetch !== request) return;
          set.featuresFetch = null;
          const fetched = performance.now() - started;
          const items = [];
          for (const feature of answer.features) {
            const item = record(feature, set);
            if (item) items.push(item);
          }
          applyPending(set, items);
          if (selected && selected.item.set === set) {
            const same = items.find((item) => item.number === selected.item.number);
            if (same) selected.item = same;
          }
          set.features = { window, simplify, items, groups: grouped(items), truncated: answer.truncated, started };
          refreshShown(set);
          requestDraw(() =>
            recordFrame({ ms: performance.now() - started, fetchMs: fetched, kind: "features", count: items.length, set: set.id })
          );
        })
        .catch((error) => {
          if (set.featuresFetch === request) set.featuresFetch = null;
          if (!isAbort(error)) showError(`Annotations of “${set.info.name}” could not be read: ${error.message}`);
        })
    );
  }

  // ---------------------------------------------------------------- density tiles

  const levelFor = (s) => Math.max(0, Math.ceil(Math.log2(DENSITY_CELL_PX * s)));
  const overviewLevel = Math.max(0, Math.ceil(Math.log2(Math.max(WIDTH, HEIGHT) / (2 * TILE_CELLS))));

  function tileRange(box, level) {
    const side = TILE_CELLS * 2 ** level;
    const clamp = (value, max) => Math.min(Math.max(value, 0), max);
    const lastX = Math.ceil(WIDTH / side) - 1;
    const lastY = Math.ceil(HEIGHT / side) - 1;
    return {
      tx0: clamp(Math.floor(box.x0 / side), lastX),
      ty0: clamp(Math.floor(box.y0 / side), lastY),
      tx1: clamp(Math.ceil(box.x1 / side) - 1, lastX),
      ty1: clamp(Math.ceil(box.y1 / side) - 1, lastY),
    };
  }

  function tileKeys(box, level) {
    const range = tileRange(box, level);
    const keys = [];
    for (let ty = range.ty0; ty <= range.ty1; ty++) {
      for (let tx = range.tx0; tx <= range.tx1; tx++) keys.push(`${level}:${tx}:${ty}`);
    }
    return keys;
  }

  /** Fetches the tiles of ``keys`` that are neither kept nor on their way, as one group: the
   * group's frame is recorded when the last of them is drawn. */
  function fetchTiles(set, keys, pinned) {
    const group = { started: performance.now(), remaining: 0, cells: 0, cancelled: false, set: set.id, pinned };
    for (const key of keys) {
      if (set.tiles.has(key)) {
        const tile = set.tiles.get(key);
        set.tiles.delete(key); // most recently used last
        set.tiles.set(key, tile);
        continue;
      }
      const existing = set.tileFetches.get(key);
      if (existing) {
        // On its way for an earlier update, whose frame it counts in.
        existing.pinned = existing.pinned || pinned;
        continue;
      }
      group.remaining += 1;
      const controller = new AbortController();
      const fetchState = { controller, groups: [group], pinned };
      set.tileFetches.set(key, fetchState);
      const [level, tx, ty] = key.split(":").map(Number);
      const cell = 2 ** level;
      const side = TILE_CELLS * cell;
      const query = new URLSearchParams({
        x0: String(tx * side),
        y0: String(ty * side),
        x1: String((tx + 1) * side), // on the grid of kept counts (not cut at the edge)
        y1: String((ty + 1) * side),
        cell: String(cell),
        sets: String(set.id),
      });
      track(
        api(`/api/slides/${encodeURIComponent(SLIDE)}/annotations/density?${query}`, {
          signal: controller.signal,
          priority: "high",
        })
          .then((answer) => {
            if (set.tileFetches.get(key) !== fetchState) return;
            set.tileFetches.delete(key);
            const cells = new Int32Array(answer.cells.length * 3);
            let peak = 1;
            answer.cells.forEach((entry, i) => {
              cells[3 * i] = entry[0];
              cells[3 * i + 1] = entry[1];
              cells[3 * i + 2] = entry[2];
              if (entry[2] > peak) peak = entry[2];
            });
            set.tiles.set(key, { level, tx, ty, cells, peak, pinned: fetchState.pinned });
            evictTiles(set);
            if (level === overviewLevel) buildOverview(set);
            refreshShown(set);
            requestDraw();
            for (const group of fetchState.groups) {
              group.cells += answer.cells.length;
              group.remaining -= 1;
              if (group.remaining === 0 && !group.cancelled) {
                const fetched = performance.now() - group.started;
                requestDraw(() => {
                  const frame = { ms: performance.now() - group.started, fetchMs: fetched, kind: "density", count: group.cells, set: set.id };
                  if (group.pinned) frame.overview = true;
                  recordFrame(frame);
                });
              }
            }
          })
          .catch((error) => {
            if (set.tileFetches.get(key) === fetchState) set.tileFetches.delete(key);
            for (const group of fetchState.groups) group.cancelled = true;
            if (!isAbort(error)) showError(`The heat map of “${set.info.name}” could not be read: ${error.message}`);
          })
      );
    }
  }

  function evictTiles(set) {
    for (const [key, tile] of set.tiles) {
      if (set.tiles.size <= MAX_TILES_PER_SET) break;
      if (!tile.pinned) set.tiles.delete(key);
    }
  }

  function abortTiles(set, keep) {
    for (const [key, fetchState] of set.tileFetches) {
      if (fetchState.pinned || keep.has(key)) continue;
      fetchState.controller.abort();
      for (const group of fetchState.groups) group.cancelled = true;
      set.tileFetches.delete(key);
    }
  }

  function abortFeatures(set) {
    if (set.featuresFetch) {
      set.featuresFetch.controller.abort();
      set.featuresFetch = null;
    }
  }

  // ---------------------------------------------------------------- level of detail

  const needsOverview = (set) => set.info.annotations > FEATURE_BUDGET;

  function overviewKeys() {
    return tileKeys({ x0: 0, y0: 0, x1: WIDTH, y1: HEIGHT }, overviewLevel);
  }

  function ensureOverview(set) {
    if (!needsOverview(set) || set.overview) return;
    if (set.overviewRequested) return;
    set.overviewRequested = true;
    fetchTiles(set, overviewKeys(), true);
  }

  /** The overview's grid of counts, once all its tiles are there. */
  function buildOverview(set) {
    const keys = overviewKeys();
    if (!keys.every((key) => set.tiles.has(key))) return;
    const cell = 2 ** overviewLevel;
    const columns = Math.ceil(WIDTH / cell);
    const rows = Math.ceil(HEIGHT / cell);
    const grid = new Float64Array(columns * rows);
    let maxDensity = 0;
    for (const key of keys) {
      const tile = set.tiles.get(key);
      for (let i = 0; i < tile.cells.length; i += 3) {
        const column = tile.tx * TILE_CELLS + tile.cells[i];
        const row = tile.ty * TILE_CELLS + tile.cells[i + 1];
        if (column >= columns || row >= rows) continue;
        const count = tile.cells[i + 2];
        grid[row * columns + column] += count;
        const area = (Math.min(WIDTH, (column + 1) * cell) - column * cell) * (Math.min(HEIGHT, (row + 1) * cell) - row * cell);
        if (area > 0) maxDensity = Math.max(maxDensity, count / area);
      }
    }
    set.overview = { cell, columns, rows, grid, maxDensity };
  }

  /** How many of the set's annotations lie in ``box``: from the overview when there is one,
   * else the set's count spread evenly over the slide. */
  function estimate(set, box) {
    const overview = set.overview;
    if (!overview) {
      if (!needsOverview(set)) return set.info.annotations;
      return (set.info.annotations * (box.x1 - box.x0) * (box.y1 - box.y0)) / (WIDTH * HEIGHT);
    }
    const { cell, columns, rows, grid } = overview;
    let total = 0;
    const c0 = Math.max(0, Math.floor(box.x0 / cell));
    const c1 = Math.min(columns - 1, Math.floor(box.x1 / cell));
    const r0 = Math.max(0, Math.floor(box.y0 / cell));
    const r1 = Math.min(rows - 1, Math.floor(box.y1 / cell));
    for (let row = r0; row <= r1; row++) {
      const overlapY = Math.min(box.y1, (row + 1) * cell) - Math.max(box.y0, row * cell);
      for (let column = c0; column <= c1; column++) {
        const count = grid[row * columns + column];
        if (!count) continue;
        const overlapX = Math.min(box.x1, (column + 1) * cell) - Math.max(box.x0, column * cell);
        total += (count * Math.max(0, overlapX) * Math.max(0, overlapY)) / (cell * cell);
      }
    }
    return total;
  }

  function padded(view, box) {
    const marginX = (view.x1 - view.x0) * WINDOW_MARGIN;
    const marginY = (view.y1 - view.y0) * WINDOW_MARGIN;
    return clampToSlide({ x0: box.x0 - marginX, y0: box.y0 - marginY, x1: box.x1 + marginX, y1: box.y1 + marginY });
  }

  function plan(set, view, box) {
    ensureOverview(set);
    const window = padded(view, box);
    if (estimate(set, window) <= FEATURE_BUDGET) {
      set.want = { mode: "features", box, s: view.s };
      abortTiles(set, new Set());
      const kept = set.features;
      if (kept && covers(kept.window, box) && kept.simplify <= view.s * 1.5) {
        refreshShown(set);
        return;
      }
      const coming = set.featuresFetch;
      if (coming && covers(coming.window, box) && coming.simplify <= view.s * 1.5) return;
      abortFeatures(set);
      fetchFeatures(set, window, view.s);
    } else {
      const level = levelFor(view.s);
      const keys = tileKeys(box, level);
      set.want = { mode: "density", level, keys };
      abortFeatures(set);
      abortTiles(set, new Set(keys));
      fetchTiles(set, keys, false);
      refreshShown(set);
    }
  }

  /** Switches what a set shows once what its latest update asked for has arrived. */
  function refreshShown(set) {
    const want = set.want;
    if (!want) return;
    let changed = false;
    if (want.mode === "features" && set.features && covers(set.features.window, want.box)) {
      changed = set.shown !== "features";
      set.shown = "features";
    } else if (want.mode === "density" && want.keys.every((key) => set.tiles.has(key))) {
      changed = set.shown !== "density" || set.shownLevel !== want.level;
      set.shown = "density";
      set.shownLevel = want.level;
    } else {
      return;
    }
    dropSavedDrafts(set);
    if (changed) renderSets();
  }

  let updateTimer = null;
  let lastUpdate = -Infinity;

  function scheduleUpdate(now) {
    if (now) {
      if (updateTimer !== null) clearTimeout(updateTimer);
      updateTimer = null;
      update();
      return;
    }
    if (updateTimer !== null) return;
    const wait = Math.max(0, lastUpdate + THROTTLE_MS - performance.now());
    updateTimer = setTimeout(() => {
      updateTimer = null;
      update();
    }, wait);
  }

  function update() {
    lastUpdate = performance.now();
    if (!opened || viewer.world.getItemCount() === 0) return;
    const view = targetView();
    const box = clampToSlide(view);
    for (const set of sets.values()) {
      if (!set.visible || !box) {
        abortFeatures(set);
        abortTiles(set, new Set());
        continue;
      }
      plan(set, view, box);
    }
    settleIdle();
  }

  // ---------------------------------------------------------------- idleness and frames

  let inflight = 0;
  const frames = [];

  function track(promise) {
    inflight += 1;
    promise.finally(() => {
      inflight -= 1;
      settleIdle();
    });
  }

  function recordFrame(frame) {
    frame.ms = Math.round(frame.ms * 10) / 10;
    frame.fetchMs = Math.round(frame.fetchMs * 10) / 10;
    frames.push(frame);
  }

  function idle() {
    return opened && inflight === 0 && updateTimer === null && !drawQueued && !saving;
  }

  function settleIdle() {
    layer.dataset.idle = String(idle());
  }

  // ---------------------------------------------------------------- panel

  const errorBox = element("div", { className: "ann-error", role: "alert", hidden: true });
  const errorText = element("span");
  const errorClose = element("button", { type: "button", className: "ann-dismiss", "aria-label": "Dismiss", text: "×" });
  errorBox.append(errorText, errorClose);
  errorClose.addEventListener("click", () => {
    errorBox.hidden = true;
  });

  function showError(message) {
    errorText.textContent = message;
    errorBox.hidden = false;
  }

  const setList = element("ul", { className: "ann-sets", "aria-label": "Annotation sets" });
  const classList = element("ul", { className: "ann-classes", "aria-label": "Classes" });
  const classNote = element("p", { className: "muted ann-note", text: "Heat maps count every class." });

  function renderSets() {
    setList.replaceChildren();
    if (sets.size === 0) {
      setList.append(element("li", { className: "muted", text: "No annotation sets on this slide yet." }));
    }
    for (const set of sets.values()) {
      const box = element("input", { type: "checkbox", "data-set": String(set.id) });
      box.checked = set.visible;
      box.addEventListener("change", () => {
        set.visible = box.checked;
        if (!set.visible && selected && selected.set === set) select(null);
        scheduleUpdate(true);
        requestDraw();
      });
      const own = set.editable ? element("span", { className: "ann-own", text: "yours" }) : "";
      const showing = set.visible && set.shown
        ? element("span", { className: `ann-lod ann-lod-${set.shown}`, text: set.shown === "density" ? "heat map" : "shapes" })
        : "";
      setList.append(
        element(
          "li",
          {},
          element("label", {}, box, element("span", { className: "ann-name", text: set.info.name })),
          " ",
          own,
          element("span", {
            className: "muted ann-meta",
            text: `${thousands(set.info.annotations)} · ${set.info.kind}`,
          }),
          showing
        )
      );
    }
    classNote.hidden = ![...sets.values()].some((set) => set.visible && set.shown === "density");
  }

  let classesQueued = false;
  function classesChanged() {
    if (classesQueued) return;
    classesQueued = true;
    queueMicrotask(() => {
      classesQueued = false;
      renderClasses();
      renderClassPickers();
    });
  }

  function swatch(colour) {
    const mark = element("span", { className: "ann-swatch", "aria-hidden": "true" });
    mark.style.backgroundColor = colour;
    return mark;
  }

  function renderClasses() {
    classList.replaceChildren();
    const names = [...classes.keys()].sort((x, y) => (x === UNCLASSIFIED) - (y === UNCLASSIFIED) || x.localeCompare(y));
    if (names.length === 0) classList.append(element("li", { className: "muted", text: "No classes." }));
    for (const name of names) {
      const item = classes.get(name);
      const box = element("input", { type: "checkbox", "data-class": name });
      box.checked = item.visible;
      box.addEventListener("change", () => {
        item.visible = box.checked;
        if (!item.visible && selected && selected.item.label === name) select(null);
        requestDraw();
      });
      classList.append(
        element("li", {}, element("label", {}, box, swatch(item.colour), element("span", { text: classTitle(name) })))
      );
    }
  }

  // ---------------------------------------------------------------- drawing tools (may_draw)

  const TOOLS = [
    { name: "navigate", label: "Navigate", key: "n", hint: "" },
    { name: "point", label: "Point", key: "p", hint: "Click to place a point." },
    { name: "rectangle", label: "Rectangle", key: "b", hint: "Drag to draw a rectangle." },
    {
      name: "polygon",
      label: "Polygon",
      key: "g",
      hint:
        "Click the vertices; double-click, Enter or a click on the first vertex closes the polygon. " +
        "Backspace removes the last vertex, Escape cancels.",
    },
  ];
  let tool = "navigate";
  const toolButtons = new Map();
  const classPicker = element("select", { id: "ann-class", name: "class" });
  const pickerSwatch = swatch(UNCLASSIFIED_COLOUR);
  const newClassInput = element("input", { type: "text", id: "ann-new-class", placeholder: "New class", hidden: true });
  const newClassButton = element("button", { type: "button", text: "Add", hidden: true });
  const hint = element("div", { className: "draw-hint", "aria-live": "polite", hidden: true });
  const NEW_CLASS = "\u0000new";
  let currentClass = config.classes.length ? config.classes[0].name : UNCLASSIFIED;

  const selectionBox = element("div", { className: "ann-selection", hidden: true });
  const selectionText = element("p", { className: "ann-selected" });
  const selectionPicker = element("select", { id: "ann-selection-class", "aria-label": "Class of the selected annotation" });
  const deleteButton = element("button", { type: "button", text: "Delete" });
  const selectionHint = element("p", { className: "muted ann-note ann-edit-hint" });
  selectionBox.append(
    selectionText,
    element("div", { className: "ann-row" }, element("label", { for: "ann-selection-class", text: "Class" }), selectionPicker, deleteButton),
    selectionHint
  );
  const pendingText = element("span", { className: "ann-pending", "aria-live": "polite" });
  const saveButton = element("button", { type: "button", className: "primary", text: "Save", disabled: true });
  const discardButton = element("button", { type: "button", text: "Discard", disabled: true });

  function fillClassOptions(select, chosen, withNew) {
    select.replaceChildren();
    const names = [...classes.keys()].filter((name) => name !== UNCLASSIFIED).sort((x, y) => x.localeCompare(y));
    for (const name of names) select.append(element("option", { value: name, text: name }));
    select.append(element("option", { value: UNCLASSIFIED, text: "Unclassified" }));
    if (withNew) select.append(element("option", { value: NEW_CLASS, text: "New class…" }));
    select.value = chosen;
  }

  function renderClassPickers() {
    if (!MAY_DRAW) return;
    fillClassOptions(classPicker, currentClass, true);
    pickerSwatch.style.backgroundColor = classOf(currentClass).colour;
    if (selected) {
      fillClassOptions(selectionPicker, selected.item.label, false);
    }
  }

  function setTool(name) {
    if (!MAY_DRAW) return;
    cancelInProgress();
    tool = name;
    for (const [toolName, button] of toolButtons) button.setAttribute("aria-pressed", String(toolName === name));
    const about = TOOLS.find((t) => t.name === name);
    hint.textContent = about.hint;
    hint.hidden = !about.hint;
    viewer.canvas.classList.toggle("drawing", name !== "navigate");
    requestDraw();
  }

  function buildPanel() {
    panel.replaceChildren(element("h2", { text: "Annotations" }), errorBox);
    if (MAY_DRAW) {
      const toolbar = element("div", { className: "draw-tools", role: "toolbar", "aria-label": "Drawing tools" });
      for (const about of TOOLS) {
        const button = element("button", {
          type: "button",
          "data-tool": about.name,
          "aria-pressed": String(about.name === tool),
          title: `${about.label} (key ${about.key.toUpperCase()})`,
        }, about.label + " ", element("kbd", { text: about.key.toUpperCase() }));
        button.addEventListener("click", () => {
          setTool(about.name);
          viewer.canvas.focus();
        });
        toolButtons.set(about.name, button);
        toolbar.append(button);
      }
      const picker = element(
        "div",
        { className: "ann-row" },
        element("label", { for: "ann-class", text: "Class" }),
        pickerSwatch,
        classPicker,
        newClassInput,
        newClassButton
      );
      classPicker.addEventListener("change", () => {
        if (classPicker.value === NEW_CLASS) {
          newClassInput.hidden = false;
          newClassButton.hidden = false;
          newClassInput.focus();
          return;
        }
        currentClass = classPicker.value;
        pickerSwatch.style.backgroundColor = classOf(currentClass).colour;
      });
      const addClass = () => {
        const name = newClassInput.value.trim();
        if (!name) return;
        classOf(name);
        currentClass = name;
        newClassInput.value = "";
        newClassInput.hidden = true;
        newClassButton.hidden = true;
        renderClasses();
        renderClassPickers();
      };
      newClassButton.addEventListener("click", addClass);
      newClassInput.addEventListener("keydown", (event) => {
        if (event.key === "Enter") {
          event.preventDefault();
          addClass();
        } else if (event.key === "Escape") {
          newClassInput.hidden = true;
          newClassButton.hidden = true;
          classPicker.value = currentClass;
        }
      });
      const changes = element("div", { className: "ann-row ann-changes" }, pendingText, saveButton, discardButton);
      saveButton.addEventListener("click", save);
      discardButton.addEventListener("click", discard);
      const ownName = element("p", { className: "muted ann-note" });
      ownName.textContent = `New annotations go into your set “${USER.name}”.`;
      panel.append(toolbar, picker, ownName, changes, selectionBox);
      selectionPicker.addEventListener("change", () => relabelSelected(selectionPicker.value));
      deleteButton.addEventListener("click", deleteSelected);
    } else if (!USER) {
      panel.append(element("p", { className: "muted ann-note", text: "Sign in as an annotator of this dataset to draw." }));
    }
    panel.append(
      element("h3", { text: "Sets" }),
      setList,
      element("h3", { text: "Classes" }),
      classList,
      classNote
    );
    // Inside the viewer's element, so that the hint stays in OpenSeadragon's full page mode.
    document.getElementById("viewer").append(hint);
    renderSets();
    renderClasses();
    renderClassPickers();
    renderPending();
  }

  // ---------------------------------------------------------------- drafts, edits, saving

  let drafts = []; // {key, shape, kind, label, geometry, rings, points, box, savedTo?}
  let draftCounter = 0;
  const edits = new Map(); // set id → {replace: Map number → feature, remove: Set number}
  let saving = false;

  function changesOf(set) {
    let found = edits.get(set.id);
    if (!found) {
      found = { replace: new Map(), remove: new Set() };
      edits.set(set.id, found);
    }
    return found;
  }

  function pendingCount() {
    let count = drafts.filter((d) => !d.savedTo).length;
    for (const change of edits.values()) count += change.replace.size + change.remove.size;
    return count;
  }

  function renderPending() {
    if (!MAY_DRAW) return;
    const count = pendingCount();
    pendingText.textContent = saving
      ? "Saving…"
      : count === 0
        ? "No unsaved changes"
        : `${count} unsaved change${count === 1 ? "" : "s"}`;
    saveButton.disabled = saving || count === 0;
    discardButton.disabled = saving || count === 0;
  }

  function draftOf(shape, geometry, label) {
    const parsed = parseGeometry(geometry);
    draftCounter += 1;
    return {
      key: `draft-${draftCounter}`,
      number: null,
      set: null,
      shape,
      kind: parsed.kind,
      label,
      geometry,
      rings: parsed.rings || [],
      points: parsed.points || new Float64Array(0),
      box: boxOf(parsed.rings || [parsed.points]),
    };
  }

  function addDraft(shape, geometry) {
    classOf(currentClass);
    drafts.push(draftOf(shape, geometry, currentClass));
    renderPending();
    requestDraw();
  }

  function featureOf(item, geometry) {
    return {
      type: "Feature",
      geometry,
      properties: { label: item.label === UNCLASSIFIED ? null : item.label, shape: item.shape },
    };
  }

  /** Pending changes shown on freshly fetched annotations too. */
  function applyPending(set, items) {
    const change = edits.get(set.id);
    if (!change) return;
    for (const item of items) {
      if (change.remove.has(item.number)) item.removed = true;
      const replaced = change.replace.get(item.number);
      if (!replaced) continue;
      const label = replaced.properties.label === null ? UNCLASSIFIED : replaced.properties.label;
      if (label !== item.label) {
        item.originalLabel = item.label;
        item.label = label;
      }
      reshape(item, replaced.geometry);
    }
  }

  /** Draws ``item`` as ``geometry`` from now on; what it was is kept for Discard. */
  function reshape(item, geometry) {
    const parsed = parseGeometry(geometry);
    if (!parsed) return;
    if (item.set && item.originalShape === undefined) {
      item.originalShape = { rings: item.rings, points: item.points, box: item.box };
    }
    item.rings = parsed.rings || [];
    item.points = parsed.points || new Float64Array(0);
    item.box = boxOf(parsed.rings || [parsed.points]);
    if (!item.set) item.geometry = geometry;
  }

  function regroup(set) {
    if (set.features) set.features.groups = grouped(set.features.items);
  }

  function dropSavedDrafts(set) {
    const before = drafts.length;
    drafts = drafts.filter((draft) => draft.savedTo !== set.id || draft.savedAt > (set.features ? set.features.started : Infinity));
    if (drafts.length !== before) requestDraw();
  }

  async function ownSet() {
    const mine = [...sets.values()].find((set) => set.info.name === USER.name && set.info.owner_user_id === USER.id);
    if (mine) return mine;
    const url = `/api/slides/${encodeURIComponent(SLIDE)}/annotation-sets`;
    let info;
    try {
      info = await api(url, { method: "POST", body: { name: USER.name } });
    } catch (error) {
      if (error.status !== 409) throw error;
      info = (await api(url)).find((found) => found.name === USER.name);
      if (!info || info.owner_user_id !== USER.id) {
        throw new ApiError(`This slide has a set named “${USER.name}” that is not yours.`, 409);
      }
    }
    const set = addSet(info);
    set.editable = info.kind !== "reference";
    renderSets();
    return set;
  }

  function invalidate(set) {
    abortFeatures(set);
    abortTiles(set, new Set());
    for (const fetchState of set.tileFetches.values()) fetchState.controller.abort();
    set.tileFetches.clear();
    set.features = null;
    set.tiles.clear();
    set.overview = null;
    set.overviewRequested = false;
    set.want = null;
    set.shown = null;
  }

  async function postEdit(set, body) {
    const revision = await api(`/api/annotation-sets/${set.id}/edits`, { method: "POST", body });
    set.info.annotations += revision.added - revision.removed;
    edits.delete(set.id);
    return revision;
  }

  async function save() {
    if (saving || pendingCount() === 0) return;
    saving = true;
    errorBox.hidden = true;
    renderPending();
    settleIdle();
    const touched = [];
    try {
      const adding = drafts.filter((draft) => !draft.savedTo);
      if (adding.length) {
        const own = await ownSet();
        const change = edits.get(own.id);
        const body = { add: adding.map((draft) => featureOf(draft, draft.geometry)) };
        if (change) {
          body.replace = Object.fromEntries(change.replace);
          body.remove = [...change.remove];
        }
        await postEdit(own, body);
        const now = performance.now();
        for (const draft of adding) {
          draft.savedTo = own.id;
          draft.savedAt = now;
        }
        touched.push(own);
      }
      for (const [setId, change] of [...edits]) {
        const set = sets.get(setId);
        if (!set || (change.replace.size === 0 && change.remove.size === 0)) {
          edits.delete(setId);
          continue;
        }
        await postEdit(set, { replace: Object.fromEntries(change.replace), remove: [...change.remove] });
        touched.push(set);
      }
    } catch (error) {
      showError(`Not saved: ${error.message}`);
    } finally {
      saving = false;
      for (const set of touched) invalidate(set);
      select(null);
      renderSets();
      renderPending();
      scheduleUpdate(true);
      requestDraw();
    }
  }

  function discard() {
    drafts = drafts.filter((draft) => draft.savedTo);
    edits.clear();
    for (const set of sets.values()) {
      if (!set.features) continue;
      for (const item of set.features.items) {
        item.removed = false;
        if (item.originalLabel !== undefined) {
          item.label = item.originalLabel;
          delete item.originalLabel;
        }
        if (item.originalShape !== undefined) {
          Object.assign(item, item.originalShape);
          delete item.originalShape;
        }
      }
      regroup(set);
    }
    select(null);
    renderPending();
    requestDraw();
  }

  // ---------------------------------------------------------------- selection

  // {item, exact: GeoJSON geometry or null (drafts: their own), shape: its vertices to edit
  // (editableShape) once the exact geometry is there, active: the index of the chosen vertex}
  let selected = null;

  function select(item) {
    if (item && selected && selected.item === item) return;
    vertexDrag = null;
    selected = item ? { item, exact: item.set ? null : item.geometry, shape: null, active: null } : null;
    selectionBox.hidden = !selected;
    selectionHint.textContent = "";
    if (selected) {
      const what = item.set
        ? `${item.shape} #${item.number} in “${item.set.info.name}”`
        : `New ${item.shape} (not saved yet)`;
      selectionText.textContent = what;
      fillClassOptions(selectionPicker, item.label, false);
      const pending = item.set && edits.has(item.set.id) ? edits.get(item.set.id).replace.get(item.number) : null;
      if (pending) selected.exact = pending.geometry;
      else if (item.set) fetchExact(selected);
      if (selected.exact) startShapeEdit(selected);
    }
    requestDraw();
  }

  // ---------------------------------------------------------------- editing the shape

  /** The vertices of a selected polygon (its exterior ring), rectangle (its four corners) or
   * point that its handles move: {type, ring: [[x, y], ...] (not closed), holes}, or null. */
  function editableShape(item, geometry) {
    if (!geometry || (item.set && !item.set.editable)) return null;
    if (geometry.type === "Point") return { type: "point", ring: [geometry.coordinates.slice(0, 2)], holes: [] };
    if (geometry.type !== "Polygon" || !geometry.coordinates.length) return null;
    const ring = geometry.coordinates[0].map((p) => [p[0], p[1]]);
    const last = ring[ring.length - 1];
    if (ring.length > 1 && last[0] === ring[0][0] && last[1] === ring[0][1]) ring.pop();
    if (ring.length < 3) return null;
    const holes = geometry.coordinates.slice(1);
    const straight = (p, q) => p[0] === q[0] || p[1] === q[1];
    const rectangle =
      item.shape === "rectangle" &&
      ring.length === 4 &&
      ring.every((p, i) => straight(p, ring[(i + 1) % 4])) &&
      ring[0][0] !== ring[2][0] &&
      ring[0][1] !== ring[2][1];
    return { type: rectangle ? "rectangle" : "polygon", ring, holes };
  }

  function startShapeEdit(selection) {
    selection.shape = editableShape(selection.item, selection.exact);
    if (!selection.shape || selected !== selection) return;
    selectionHint.textContent =
      selection.shape.type === "polygon"
        ? "Drag a vertex to move it; double-click an edge to add one; Alt-click a vertex, or Delete after choosing it, removes it."
        : selection.shape.type === "rectangle"
          ? "Drag a corner to resize the rectangle."
          : "Drag the point to move it.";
    requestDraw();
  }

  function geometryOf(shape) {
    if (shape.type === "point") return { type: "Point", coordinates: [shape.ring[0][0], shape.ring[0][1]] };
    const ring = shape.ring.map((p) => [p[0], p[1]]);
    ring.push([ring[0][0], ring[0][1]]);
    return { type: "Polygon", coordinates: [ring, ...shape.holes] };
  }

  /** The selection's edited shape becomes its pending change (drafts: their geometry). */
  function shapeChanged(selection) {
    const item = selection.item;
    const geometry = geometryOf(selection.shape);
    selection.exact = geometry;
    reshape(item, geometry);
    if (item.set) changesOf(item.set).replace.set(item.number, featureOf(item, geometry));
    renderPending();
    requestDraw();
  }

  const editing = () =>
    Boolean(
      tool === "navigate" &&
        selected &&
        selected.shape &&
        !selected.item.removed &&
        (!selected.item.set || selected.item.set.visible) &&
        classOf(selected.item.label).visible
    );

  /** The index of the selection's handle under a pointer event, or null. */
  function handleAt(originalEvent) {
    if (!editing()) return null;
    const rect = viewer.canvas.getBoundingClientRect();
    const x = originalEvent.clientX - rect.left;
    const y = originalEvent.clientY - rect.top;
    const { a, b, c, d, e, f } = transform();
    const ring = selected.shape.ring;
    for (let i = ring.length - 1; i >= 0; i--) {
      const [vx, vy] = ring[i];
      if (Math.hypot(a * vx + c * vy + e - x, b * vx + d * vy + f - y) <= HANDLE_HIT_PX) return i;
    }
    return null;
  }

  /** The edge of the selected polygon near an image position: {index of its first vertex,
   * the nearest point on it}, or null. */
  function edgeAt(p) {
    if (!editing() || selected.shape.type !== "polygon") return null;
    const ring = selected.shape.ring;
    const tolerance = HIT_TOLERANCE_PX / Math.hypot(p.m.a, p.m.b);
    let best = null;
    for (let i = 0; i < ring.length; i++) {
      const [ax, ay] = ring[i];
      const [bx, by] = ring[(i + 1) % ring.length];
      const length = (bx - ax) ** 2 + (by - ay) ** 2;
      const t = length ? Math.max(0, Math.min(1, ((p.x - ax) * (bx - ax) + (p.y - ay) * (by - ay)) / length)) : 0;
      const at = { x: ax + t * (bx - ax), y: ay + t * (by - ay) };
      const distance = Math.hypot(p.x - at.x, p.y - at.y);
      if (distance <= tolerance && (!best || distance < best.distance)) best = { index: i, at, distance };
    }
    return best;
  }

  function insertVertex(edge) {
    selected.shape.ring.splice(edge.index + 1, 0, [edge.at.x, edge.at.y]);
    selected.active = edge.index + 1;
    shapeChanged(selected);
  }

  function removeVertex(index) {
    const shape = selected.shape;
    if (shape.type !== "polygon" || index === null || index >= shape.ring.length) return;
    if (shape.ring.length <= 3) {
      showError("A polygon needs at least three vertices.");
      return;
    }
    shape.ring.splice(index, 1);
    selected.active = null;
    shapeChanged(selected);
  }

  /** Moves the dragged handle by how far the pointer has moved since the press. */
  function dragVertex(p) {
    const drag = vertexDrag;
    const shape = selected.shape;
    const x = Math.min(WIDTH, Math.max(0, drag.from[0] + p.x - drag.start.x));
    const y = Math.min(HEIGHT, Math.max(0, drag.from[1] + p.y - drag.start.y));
    const ring = shape.ring;
    ring[drag.index] = [x, y];
    if (shape.type === "rectangle") {
      // The opposite corner stays; the neighbours follow, so the edges stay on the axes.
      const opposite = ring[(drag.index + 2) % 4];
      ring[drag.sharesX] = [x, opposite[1]];
      ring[drag.sharesY] = [opposite[0], y];
    }
    shapeChanged(selected);
  }

  /** The stored geometry of a selected annotation (what the viewer drew may be simplified). */
  function fetchExact(selection) {
    const item = selection.item;
    const [x0, y0, x1, y1] = item.box;
    const query = new URLSearchParams({
      x0: String(Math.max(0, x0 - 1)),
      y0: String(Math.max(0, y0 - 1)),
      x1: String(Math.min(WIDTH, x1 + 1)),
      y1: String(Math.min(HEIGHT, y1 + 1)),
      sets: String(item.set.id),
    });
    selection.exactPromise = api(`/api/slides/${encodeURIComponent(SLIDE)}/annotations?${query}`).then((answer) => {
      const found = answer.features.find((feature) => feature.id === item.number);
      if (!found) throw new ApiError(`annotation ${item.number} is no longer in the set`, 404);
      if (!selection.shape) {
        selection.exact = found.geometry;
        startShapeEdit(selection);
      }
      return selection.exact;
    });
    track(selection.exactPromise.catch((error) => showError(`Cannot edit this annotation: ${error.message}`)));
  }

  async function relabelSelected(label) {
    if (!selected) return;
    const selection = selected;
    const item = selection.item;
    if (!item.set) {
      item.label = label;
      classOf(label);
      requestDraw();
      return;
    }
    try {
      const geometry = selection.exact || (await selection.exactPromise);
      if (item.originalLabel === undefined) item.originalLabel = item.label;
      item.label = label;
      changesOf(item.set).replace.set(item.number, featureOf(item, geometry));
      regroup(item.set);
      renderPending();
      requestDraw();
    } catch (error) {
      showError(`Cannot change the class: ${error.message}`);
    }
  }

  function deleteSelected() {
    if (!selected) return;
    const item = selected.item;
    if (item.set) {
      const change = changesOf(item.set);
      change.replace.delete(item.number);
      change.remove.add(item.number);
      item.removed = true;
      regroup(item.set);
    } else {
      drafts = drafts.filter((draft) => draft !== item);
    }
    select(null);
    renderPending();
  }

  function pointInRing(ring, x, y) {
    let inside = false;
    for (let i = 0, j = ring.length - 2; i < ring.length; j = i, i += 2) {
      const xi = ring[i], yi = ring[i + 1], xj = ring[j], yj = ring[j + 1];
      if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }

  function nearSegment(ring, x, y, tolerance) {
    for (let i = 2; i < ring.length; i += 2) {
      const ax = ring[i - 2], ay = ring[i - 1], bx = ring[i], by = ring[i + 1];
      const length = (bx - ax) ** 2 + (by - ay) ** 2;
      const t = length ? Math.max(0, Math.min(1, ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / length)) : 0;
      if (Math.hypot(x - (ax + t * (bx - ax)), y - (ay + t * (by - ay))) <= tolerance) return true;
    }
    return false;
  }

  function hits(item, x, y, tolerance) {
    const [x0, y0, x1, y1] = item.box;
    if (x < x0 - tolerance || x > x1 + tolerance || y < y0 - tolerance || y > y1 + tolerance) return false;
    if (!classOf(item.label).visible) return false;
    if (item.kind === "point") {
      for (let i = 0; i < item.points.length; i += 2) {
        if (Math.hypot(x - item.points[i], y - item.points[i + 1]) <= tolerance) return true;
      }
      return false;
    }
    if (item.kind === "line") return item.rings.some((ring) => nearSegment(ring, x, y, tolerance));
    let inside = false;
    for (const ring of item.rings) if (pointInRing(ring, x, y)) inside = !inside;
    return inside || item.rings.some((ring) => nearSegment(ring, x, y, tolerance));
  }

  /** The topmost annotation the user may edit under an image position. */
  function pick(x, y, m) {
    const tolerance = HIT_TOLERANCE_PX / Math.hypot(m.a, m.b);
    for (let i = drafts.length - 1; i >= 0; i--) {
      if (!drafts[i].savedTo && hits(drafts[i], x, y, tolerance)) return drafts[i];
    }
    for (const set of [...sets.values()].reverse()) {
      if (!set.editable || !set.visible || set.shown !== "features" || !set.features) continue;
      const items = set.features.items;
      for (let i = items.length - 1; i >= 0; i--) {
        if (!items[i].removed && hits(items[i], x, y, tolerance)) return items[i];
      }
    }
    return null;
  }

  // ---------------------------------------------------------------- pointer input

  let vertices = []; // the polygon being drawn, image px
  let dragStart = null; // the rectangle being drawn
  let pointer = null; // the last pointer position, image px
  let lastVertexAt = -Infinity;
  let closedAt = null; // {x, y, at}: the last vertex and time of the polygon closed last
  let vertexDrag = null; // {index, from: [x, y], start: image px, sharesX, sharesY} while dragging a handle
  let onHandle = false; // the current press began on a handle of the selection
  let lastEdgeClick = null; // {x, y, at}: to tell a double-click on an edge of the selection

  function imagePoint(originalEvent, clamp = true) {
    const rect = viewer.canvas.getBoundingClientRect();
    const m = transform();
    const p = toImage(m, originalEvent.clientX - rect.left, originalEvent.clientY - rect.top);
    if (!clamp) return { x: p.x, y: p.y, m };
    return { x: Math.min(WIDTH, Math.max(0, p.x)), y: Math.min(HEIGHT, Math.max(0, p.y)), m };
  }

  function screenDistance(m, a, b) {
    return Math.hypot(m.a * (a.x - b.x) + m.c * (a.y - b.y), m.b * (a.x - b.x) + m.d * (a.y - b.y));
  }

  function cancelInProgress() {
    vertices = [];
    dragStart = null;
    requestDraw();
  }

  /** Closes the polygon being drawn; ``at`` is where the click that closed it was. */
  function closePolygon(at = vertices[vertices.length - 1]) {
    const distinct = vertices.filter((v, i) => i === 0 || v.x !== vertices[i - 1].x || v.y !== vertices[i - 1].y);
    if (distinct.length < 3) {
      showError("A polygon needs at least three vertices.");
      return;
    }
    errorBox.hidden = true;
    const ring = distinct.map((v) => [v.x, v.y]);
    ring.push(ring[0]);
    closedAt = { x: at.x, y: at.y, at: performance.now() };
    vertices = [];
    addDraft("polygon", { type: "Polygon", coordinates: [ring] });
  }

  /** Whether a click at ``p`` is what is left of the double-click that has just closed a
   * polygon (its second click, or OpenSeadragon's double-click event after it): not the
   * first vertex of a new polygon, nor a second attempt to close one. */
  function closingEcho(p) {
    return (
      closedAt !== null &&
      vertices.length === 0 &&
      performance.now() - closedAt.at < DOUBLE_CLICK_MS &&
      screenDistance(p.m, closedAt, p) < DOUBLE_CLICK_PX
    );
  }

  if (MAY_DRAW) {
    viewer.addHandler("canvas-press", (event) => {
      onHandle = false;
      vertexDrag = null;
      if (tool === "navigate") {
        const index = handleAt(event.originalEvent);
        if (index === null) return;
        onHandle = true;
        selected.active = index;
        if (!event.originalEvent.altKey) {
          const ring = selected.shape.ring;
          const p = imagePoint(event.originalEvent, false);
          vertexDrag = { index, from: ring[index].slice(), start: { x: p.x, y: p.y } };
          if (selected.shape.type === "rectangle") {
            const next = (index + 1) % 4;
            const previous = (index + 3) % 4;
            const nextSharesX = Math.abs(ring[next][0] - ring[index][0]) < Math.abs(ring[next][1] - ring[index][1]);
            vertexDrag.sharesX = nextSharesX ? next : previous;
            vertexDrag.sharesY = nextSharesX ? previous : next;
          }
        }
        requestDraw();
        return;
      }
      if (tool !== "rectangle") return;
      const p = imagePoint(event.originalEvent);
      dragStart = { x: p.x, y: p.y };
      pointer = dragStart;
    });
    viewer.addHandler("canvas-drag", (event) => {
      if (onHandle) {
        event.preventDefaultAction = true; // the handle moves, not the slide
        if (vertexDrag && selected && selected.shape) dragVertex(imagePoint(event.originalEvent, false));
        return;
      }
      if (tool === "navigate") return;
      event.preventDefaultAction = true; // no panning while a tool is active
      if (tool === "rectangle" && dragStart) {
        pointer = imagePoint(event.originalEvent);
        requestDraw();
      }
    });
    viewer.addHandler("canvas-drag-end", (event) => {
      if (tool !== "navigate" || onHandle) event.preventDefaultAction = true;
    });
    viewer.addHandler("canvas-release", (event) => {
      if (vertexDrag) {
        vertexDrag = null;
        requestDraw();
        return;
      }
      if (tool !== "rectangle" || !dragStart) return;
      const end = imagePoint(event.originalEvent);
      const start = dragStart;
      dragStart = null;
      if (screenDistance(end.m, start, end) < CLOSE_DISTANCE_PX) {
        requestDraw();
        return;
      }
      const x0 = Math.min(start.x, end.x), x1 = Math.max(start.x, end.x);
      const y0 = Math.min(start.y, end.y), y1 = Math.max(start.y, end.y);
      addDraft("rectangle", {
        type: "Polygon",
        coordinates: [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
      });
    });
    viewer.addHandler("canvas-click", (event) => {
      if (tool !== "navigate") event.preventDefaultAction = true;
      if (onHandle) {
        // A click on a handle chooses its vertex (for Delete); with Alt it removes it.
        if (event.quick && event.originalEvent.altKey && editing()) removeVertex(selected.active);
        return;
      }
      if (!event.quick) return;
      const p = imagePoint(event.originalEvent);
      if (tool === "point") {
        addDraft("point", { type: "Point", coordinates: [p.x, p.y] });
      } else if (tool === "polygon") {
        // A second click on the last vertex soon after it (a double-click: OpenSeadragon's
        // own detection misses one that follows other clicks quickly) or a click on the first
        // vertex closes the polygon.
        if (closingEcho(p)) return;
        const now = performance.now();
        const last = vertices[vertices.length - 1];
        const again = last && screenDistance(p.m, last, p) < DOUBLE_CLICK_PX;
        const onFirst = vertices.length >= 3 && screenDistance(p.m, vertices[0], p) < DOUBLE_CLICK_PX;
        if (again && now - lastVertexAt < DOUBLE_CLICK_MS) {
          if (vertices.length >= 3) closePolygon(p);
        } else if (onFirst) {
          closePolygon(p);
        } else if (!last || screenDistance(p.m, last, p) >= CLOSE_DISTANCE_PX) {
          vertices.push({ x: p.x, y: p.y });
        }
        lastVertexAt = now;
        requestDraw();
      } else if (tool === "navigate") {
        // A double-click on an edge of the selected polygon inserts a vertex there (told
        // here, as for drawing: OpenSeadragon's detection misses some).
        const edge = edgeAt(p);
        const now = performance.now();
        const again =
          edge && lastEdgeClick && now - lastEdgeClick.at < DOUBLE_CLICK_MS && screenDistance(p.m, lastEdgeClick, p) < DOUBLE_CLICK_PX;
        lastEdgeClick = edge && !again ? { x: p.x, y: p.y, at: now } : null;
        if (again) {
          insertVertex(edge);
          return;
        }
        if (selected && selected.active !== null) {
          selected.active = null;
          requestDraw();
        }
        select(pick(p.x, p.y, p.m));
      }
    });
    viewer.addHandler("canvas-double-click", (event) => {
      if (tool === "navigate") {
        // No zoom for a double-click that edits the selection.
        if (handleAt(event.originalEvent) !== null || edgeAt(imagePoint(event.originalEvent, false))) {
          event.preventDefaultAction = true;
        }
        return;
      }
      event.preventDefaultAction = true; // no zoom
      if (tool === "polygon" && vertices.length) closePolygon(imagePoint(event.originalEvent));
    });
    viewer.canvas.addEventListener("pointermove", (event) => {
      viewer.canvas.classList.toggle("ann-on-handle", Boolean(vertexDrag) || handleAt(event) !== null);
      if (tool === "polygon" && vertices.length) {
        pointer = imagePoint(event);
        requestDraw();
      }
    });

    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      const target = event.target;
      if (target instanceof HTMLElement && target.closest("input, textarea, select, [contenteditable]")) return;
      // OpenSeadragon's buttons are divs with role="button" (viewer.js makes them focusable).
      const onButton = target instanceof HTMLElement && target.closest("button, [role='button']");
      const key = event.key;
      const chosen = TOOLS.find((t) => t.key === key.toLowerCase());
      if (chosen && !event.shiftKey) {
        setTool(chosen.name);
        event.preventDefault();
      } else if (key === "Enter" && !onButton && tool === "polygon" && vertices.length) {
        closePolygon();
        event.preventDefault();
      } else if (key === "Backspace" && tool === "polygon" && vertices.length) {
        vertices.pop();
        requestDraw();
        event.preventDefault();
      } else if ((key === "Delete" || key === "Backspace") && !onButton && editing() && selected.active !== null && selected.shape.type === "polygon") {
        removeVertex(selected.active);
        event.preventDefault();
      } else if (key === "Escape") {
        // Escape undoes one thing at a time; when there is nothing left here to undo it is
        // left to the viewer (which leaves full page), so it is marked as used only here.
        if (vertices.length || dragStart) cancelInProgress();
        else if (selected && selected.active !== null) {
          selected.active = null;
          requestDraw();
        } else if (selected) select(null);
        else if (tool !== "navigate") setTool("navigate");
        else return;
        event.preventDefault();
      } else if ((key === "Delete" || key === "Backspace") && selected && !onButton) {
        deleteSelected();
        event.preventDefault();
      }
    });

    window.addEventListener("beforeunload", (event) => {
      if (pendingCount() > 0) {
        event.preventDefault();
        event.returnValue = "";
      }
    });
  }

  function drawItems(items, m, dashed) {
    for (const item of items) {
      const style = classOf(item.label);
      if (!style.visible) continue;
      context.setLineDash(dashed ? [5, 4] : []);
      context.beginPath();
      if (item.kind === "point") {
        pointsPath(item.points, m, POINT_RADIUS + 1);
        context.fillStyle = style.colour;
        context.fill();
        context.lineWidth = 1.5;
        context.strokeStyle = "rgba(255, 255, 255, 0.9)";
        context.stroke();
      } else {
        for (const ring of item.rings) ringPath(ring, m, item.kind === "polygon");
        if (item.kind === "polygon") {
          context.fillStyle = style.fill;
          context.fill("evenodd");
        }
        context.lineWidth = 2;
        context.strokeStyle = style.stroke;
        context.stroke();
      }
    }
    context.setLineDash([]);
  }

  function drawDrafts(m) {
    if (drafts.length) drawItems(drafts, m, true);
  }

  function drawSelection(m) {
    if (!selected || selected.item.removed) return;
    const item = selected.item;
    if (item.set && !item.set.visible) return;
    context.beginPath();
    if (item.kind === "point") pointsPath(item.points, m, POINT_RADIUS + 4);
    else for (const ring of item.rings) ringPath(ring, m, item.kind === "polygon");
    context.lineWidth = 4;
    context.strokeStyle = "rgba(255, 255, 255, 0.85)";
    context.stroke();
    context.lineWidth = 2;
    context.strokeStyle = classOf(item.label).colour;
    context.stroke();
    if (!editing()) return;
    const { a, b, c, d, e, f } = m;
    const r = HANDLE_RADIUS;
    selected.shape.ring.forEach(([x, y], i) => {
      const sx = a * x + c * y + e;
      const sy = b * x + d * y + f;
      context.beginPath();
      context.rect(sx - r, sy - r, 2 * r, 2 * r);
      context.fillStyle = i === selected.active ? classOf(item.label).colour : "rgba(255, 255, 255, 0.95)";
      context.fill();
      context.lineWidth = 1.5;
      context.strokeStyle = "rgba(0, 0, 0, 0.85)";
      context.stroke();
    });
  }

  function drawInProgress(m) {
    const drawing = (tool === "polygon" && vertices.length) || (tool === "rectangle" && dragStart && pointer);
    if (!drawing) return;
    const colour = classOf(currentClass).colour;
    context.lineWidth = 2;
    context.strokeStyle = colour;
    context.setLineDash([6, 4]);
    if (tool === "polygon" && vertices.length) {
      const ring = new Float64Array((vertices.length + (pointer ? 1 : 0)) * 2);
      vertices.forEach((v, i) => {
        ring[2 * i] = v.x;
        ring[2 * i + 1] = v.y;
      });
      if (pointer) {
        ring[ring.length - 2] = pointer.x;
        ring[ring.length - 1] = pointer.y;
      }
      context.beginPath();
      ringPath(ring, m, false);
      context.stroke();
      context.beginPath();
      pointsPath(ring.subarray(0, vertices.length * 2), m, 3);
      context.fillStyle = colour;
      context.fill();
    } else if (tool === "rectangle" && dragStart && pointer) {
      const ring = Float64Array.of(
        dragStart.x, dragStart.y, pointer.x, dragStart.y, pointer.x, pointer.y, dragStart.x, pointer.y
      );
      context.beginPath();
      ringPath(ring, m, true);
      context.stroke();
    }
    context.setLineDash([]);
  }

  // ---------------------------------------------------------------- wiring

  buildPanel();

  function start() {
    if (opened) return;
    opened = true;
    resizeLayer();
    scheduleUpdate(true);
  }

  viewer.addHandler("open", start);
  viewer.addHandler("viewport-change", () => {
    requestDraw();
    scheduleUpdate(false);
  });
  viewer.addHandler("animation", () => requestDraw());
  viewer.addHandler("animation-finish", () => {
    requestDraw();
    scheduleUpdate(true);
  });
  viewer.addHandler("resize", () => {
    resizeLayer();
    scheduleUpdate(false);
  });
  new ResizeObserver(resizeLayer).observe(viewer.canvas);
  if (viewer.world.getItemCount() > 0) start();

  window.slidebankAnnotations = {
    frames,
    idle,
    modes: () => Object.fromEntries([...sets.values()].map((set) => [set.id, set.visible ? set.shown : null])),
    sets: () => [...sets.values()].map((set) => ({ ...set.info, visible: set.visible, shown: set.shown })),
    pending: pendingCount,
    drawing: () => vertices.length, // vertices of the polygon being drawn
    drafts: () => drafts.filter((draft) => !draft.savedTo).map((draft) => ({ shape: draft.shape, label: draft.label, geometry: draft.geometry })),
    layer,
    setTool,
    // The vertices the selection's handles move (level-0 px), or null when none are shown.
    handles: () => (editing() ? selected.shape.ring.map((p) => [p[0], p[1]]) : null),
  };
  settleIdle();
})();
