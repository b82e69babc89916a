/* District operator console: plain JavaScript, no build step, nothing loaded from elsewhere.
 *
 * Public data (site plan, lots, lockers, zones, signs) comes from /v1/site and
 * the live feed /v1/live/events (Server-Sent Events); the selected sign also
 * follows its own display feed /v1/displays/{id}/events. With an API key
 * (kept in sessionStorage, sent as X-API-Key) the page asks the operator
 * endpoints (devices, alerts, history, analytics) and, for an admin key, the sign
 * overrides and their audit log. docs/console.md describes it.
 */
"use strict";
(function () {
  const KEY_STORE = "district.apiKey";
  const FEEDS = ["lots", "lockers", "zones", "displays"];
  const BASE = new URL("..", document.baseURI); // the console lives at <api>/console/
  const HISTORY = {
    lot: { template: "/v1/parking/lots/{}/history", path: (id) => `v1/parking/lots/${encodeURIComponent(id)}/history` },
    zone: { template: "/v1/zones/{}/history", path: (id) => `v1/zones/${encodeURIComponent(id)}/history` },
    bank: { template: "/v1/lockers/{}/history", path: (id) => `v1/lockers/${encodeURIComponent(id)}/history` },
  };
  const SPANS = { "24h": [86400, "5m"], "7d": [7 * 86400, "1h"], "30d": [30 * 86400, "1d"] };
  const ALERTS_PATH = "/v1/alerts";
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"];

  const S = {
    plan: null,
    tz: "UTC",
    paths: null, // the API's paths from /openapi.json; null: unknown (ask and handle 404)
    lots: [], lockers: [], zones: [], displays: [],
    receivedAt: {},
    role: "public",
    devices: null, alerts: null, audit: null, alertsMissing: false,
    selectedSign: null, signFeed: null, signState: null,
    history: { kind: null, id: null, chart: null, data: null },
    analytics: { index: null, choice: null },
    forecast: { chart: null, seq: 0 },
    live: null, poll: null,
    marks: {},
  };

  // -- small helpers ---------------------------------------------------------------------------

  const $ = (sel) => document.querySelector(sel);

  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid instanceof Node ? kid : String(kid));
    return e;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid instanceof Node ? kid : String(kid));
    return e;
  }

  const dash = "–";
  const num = (v) => (v === null || v === undefined ? dash : String(v));
  const badge = (text, cls) => h("span", { class: `badge ${cls}`, text });
  const url = (path) => new URL(path.replace(/^\//, ""), BASE).toString();

  function fmtAge(sec) {
    if (sec === null || sec === undefined || !Number.isFinite(sec)) return dash;
    if (sec < 90) return `${Math.round(sec)} s`;
    if (sec < 5400) return `${Math.round(sec / 60)} min`;
    if (sec < 172800) return `${(sec / 3600).toFixed(1)} h`;
    return `${Math.round(sec / 86400)} d`;
  }

  /** ``value`` (an ISO time, a Date or epoch milliseconds) in the site's time zone, en-GB, with these Intl
   *  options: the one place a time is put into words (fmtTime, timeTicks and the forecast's hourOf, clockOf, dayOf). */
  const siteTime = (value, options) => new Date(value).toLocaleString("en-GB", { timeZone: S.tz, ...options });

  function fmtTime(iso) {
    if (!iso) return dash;
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return siteTime(d, { day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  /** A live value's age now: its age_s when it arrived plus the time since. */
  function ageNow(resource, ageS) {
    if (ageS === null || ageS === undefined) return null;
    return ageS + (Date.now() - (S.receivedAt[resource] || Date.now())) / 1000;
  }

  function apiKey() {
    try {
      return sessionStorage.getItem(KEY_STORE) || "";
    } catch (e) {
      return "";
    }
  }

  /** One API call; never throws: {status, data} (status 0 when the server could not be reached). */
  async function api(path, { auth = false, method = "GET", body = null } = {}) {
    const headers = { Accept: "application/json" };
    const key = apiKey();
    if (auth && !key) return { status: 401, data: { detail: "no API key in use" } }; // the key was forgotten meanwhile
    if (auth) headers["X-API-Key"] = key;
    if (body !== null) headers["Content-Type"] = "application/json";
    let r;
    try {
      r = await fetch(url(path), {
        method, headers, body: body === null ? undefined : JSON.stringify(body), cache: "no-store",
      });
    } catch (err) {
      return { status: 0, data: null };
    }
    let data = null;
    if ((r.headers.get("content-type") || "").includes("json")) {
      try {
        data = await r.json();
      } catch (err) {
        data = null;
      }
    }
    return { status: r.status, data };
  }

  const norm = (p) => p.replace(/\{[^}]*\}/g, "{}");
  /** Whether the API has ``template`` (true/false), or null when its schema could not be read. */
  function hasPath(template) {
    return S.paths === null ? null : S.paths.has(norm(template));
  }

  function detailOf(r) {
    const d = r.data && r.data.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((x) => x.msg || JSON.stringify(x)).join("; ");
    return `HTTP ${r.status}`;
  }

  function gate(id, text, unavailable) {
    const g = $(id);
    g.textContent = text;
    g.classList.toggle("unavailable", !!unavailable);
    g.hidden = !text;
  }

  const RANK = { public: 0, display: 1, operator: 2, admin: 3 };
  const atLeast = (role) => (RANK[S.role] || 0) >= RANK[role];

  // -- classes for states ---------------------------------------------------------------------

  function lotClass(lot) {
    if (lot.state === "open" && lot.total > 0 && lot.free / lot.total < 0.1) return "st-low";
    return `st-${lot.state}`;
  }
  const bankClass = (bank) => `st-${bank.state}`;
  function zoneClass(zone) {
    if (zone.state === "nodata") return "lv-nodata";
    return zone.level ? `lv-${zone.level}` : "lv-ok";
  }
  // The k rule (issue 14): a figure under k people is withheld and said so, never shown as 0; a published
  // occupancy is rounded to a multiple of k (occupancy_state "coarsened"), so it reads "about".
  function occupancyText(z) {
    if (z.occupancy_state === "suppressed") return "< k";
    if (z.occupancy === null || z.occupancy === undefined) return dash;
    return z.occupancy_state === "coarsened" ? `about ${z.occupancy}` : String(z.occupancy);
  }
  function peopleText(z) {
    if (z.occupancy_state === "suppressed") return "fewer than k people";
    if (z.occupancy === null || z.occupancy === undefined) return "no estimate";
    return `${occupancyText(z)} people`;
  }
  const occupancyTitle = (z) => (z.occupancy_state === "coarsened"
    ? `rounded to a multiple of ${z.occupancy_base} people (the k rule)` : null);
  const flowText = (f) => (!f || f.state === "nodata" ? dash : f.state === "suppressed" ? "< k" : `${f.entries ?? "< k"} / ${f.exits ?? "< k"}`);
  const levelWord = (z) => (z.state === "nodata" ? "no data" : z.level ? z.level.replace("_", " ") : dash);

  // -- the site plan -------------------------------------------------------------------------------

  /** Equirectangular projection around the site's centre, in metres (x east, y south). */
  function projector(center) {
    const kx = 111320 * Math.cos((center.lat * Math.PI) / 180);
    const ky = 110540;
    return (p) => [(p.lng - center.lng) * kx, -(p.lat - center.lat) * ky];
  }

  /** Push overlapping boxes apart (deterministic); each keeps a leader line to its true point. */
  function spread(items, gap) {
    for (let iter = 0; iter < 200; iter++) {
      let moved = false;
      for (let i = 0; i < items.length; i++) {
        for (let j = i + 1; j < items.length; j++) {
          const a = items[i], b = items[j];
          const ox = (a.w + b.w) / 2 + gap - Math.abs(a.x - b.x);
          const oy = (a.h + b.h) / 2 + gap - Math.abs(a.y - b.y);
          if (ox <= 0 || oy <= 0) continue;
          moved = true;
          if (ox < oy) {
            const d = (a.x < b.x || (a.x === b.x && i < j) ? -1 : 1) * (ox / 2 + 0.01);
            a.x += d; b.x -= d;
          } else {
            const d = (a.y < b.y || (a.y === b.y && i < j) ? -1 : 1) * (oy / 2 + 0.01);
            a.y += d; b.y -= d;
          }
        }
      }
      if (!moved) break;
    }
  }

  function buildPlan(plan) {
    const svg = $("#plan");
    svg.replaceChildren();
    S.marks = {};
    const P = projector(plan.center);
    const pts = [];
    for (const l of plan.lots) { pts.push(P(l.coords)); for (const e of l.entrances) pts.push(P(e.coords)); }
    for (const b of plan.lockers) pts.push(P(b.coords));
    for (const z of plan.zones) if (z.coords) pts.push(P(z.coords));
    for (const d of plan.displays) pts.push(P(d.coords));
    if (!pts.length) pts.push([0, 0]);
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
    const span = Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys), 200);
    const u = span / 21; // the plan's unit: marker sizes follow the site's extent
    const textW = (text, size) => String(text).length * size * 0.6;

    const zoneLayer = s("g", { class: "zones" });
    const linkLayer = s("g", { class: "links" });
    const markLayer = s("g", { class: "marks" });
    svg.append(zoneLayer, linkLayer, markLayer);
    const boxes = [];
    const circles = [];

    for (const z of plan.zones) {
      if (!z.coords) continue;
      const [x, y] = P(z.coords);
      const r = Math.min(6 * u, Math.max(2.2 * u, 2.6 * u * Math.sqrt((z.capacity || 1000) / 1000)));
      const g = s("g", { class: "mark zone lv-nodata", "data-kind": "zone", "data-id": z.id });
      const title = s("title", null, z.name);
      g.append(title, s("circle", { class: "area", cx: x, cy: y, r, "stroke-width": u * 0.08 }));
      zoneLayer.append(g);
      circles.push([x, y, r]);
      // Its label is a box of its own, kept clear of the markers.
      const lg = s("g", { class: "mark zone-label", "data-kind": "zone", "data-id": z.id });
      const name = s("text", { class: "label", "font-size": 0.62 * u, y: -0.38 * u, "font-weight": 600 }, z.name);
      const sub = s("text", { class: "sub", "font-size": 0.5 * u, y: 0.4 * u }, "no data");
      lg.append(name, sub);
      markLayer.append(lg);
      const w = Math.max(textW(z.name, 0.62 * u), textW("0000 people · very high", 0.5 * u));
      boxes.push({ g: lg, ax: x, ay: y - r, x, y: y - r - 0.9 * u, w, h: 1.7 * u, leader: false });
      S.marks[`zone:${z.id}`] = { g, title, sub, label: lg };
      g.addEventListener("click", () => selectHistory("zone", z.id, true));
      lg.addEventListener("click", () => selectHistory("zone", z.id, true));
    }

    function marker(kind, id, coords, name, w, hgt, valueSize, onClick) {
      const [x, y] = P(coords);
      const g = s("g", { class: `mark ${kind} st-nodata`, "data-kind": kind, "data-id": id });
      const title = s("title", null, name);
      const box = s("rect", {
        class: "box", x: -w / 2, y: -hgt / 2, width: w, height: hgt, rx: 0.2 * u, "stroke-width": 0.1 * u,
      });
      const value = s("text", { class: "value", "font-size": valueSize, y: 0.02 * u }, dash);
      const label = s("text", { class: "label", "font-size": 0.5 * u, y: hgt / 2 + 0.45 * u }, name);
      g.append(title, box, value, label);
      markLayer.append(g);
      const lw = Math.max(w, textW(name, 0.5 * u));
      boxes.push({ g, ax: x, ay: y, x, y: y + 0.45 * u, w: lw, h: hgt + 0.9 * u, dy: -0.45 * u, leader: true });
      g.addEventListener("click", onClick);
      return { g, title, value, box };
    }

    for (const l of plan.lots) {
      const [x, y] = P(l.coords);
      for (const e of l.entrances) {
        const [ex, ey] = P(e.coords);
        linkLayer.append(s("line", { class: "entrance-link", x1: x, y1: y, x2: ex, y2: ey, "stroke-width": 0.06 * u }));
        linkLayer.append(s("circle", { class: "entrance", cx: ex, cy: ey, r: 0.22 * u, "stroke-width": 0.06 * u },
          s("title", null, e.name || "entrance")));
      }
      S.marks[`lot:${l.id}`] = marker("lot", l.id, l.coords, l.name, 3.0 * u, 1.6 * u, 1.0 * u,
        () => selectHistory("lot", l.id, true));
    }
    for (const b of plan.lockers) {
      S.marks[`bank:${b.id}`] = marker("bank", b.id, b.coords, b.name, 2.2 * u, 1.4 * u, 0.85 * u,
        () => selectHistory("bank", b.id, true));
    }
    for (const d of plan.displays) {
      const label = d.name && d.name.length <= 26 ? d.name : d.id;
      S.marks[`sign:${d.id}`] = marker("sign", d.id, d.coords, label, 3.0 * u, 1.1 * u, 0.75 * u,
        () => selectSign(d.id, true));
    }

    spread(boxes, 0.25 * u);
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    const grow = (x0, y0, x1, y1) => {
      minX = Math.min(minX, x0); minY = Math.min(minY, y0); maxX = Math.max(maxX, x1); maxY = Math.max(maxY, y1);
    };
    for (const [x, y, r] of circles) grow(x - r, y - r, x + r, y + r);
    for (const [x, y] of pts) grow(x, y, x, y);
    for (const b of boxes) {
      const cy = b.y + (b.dy || 0);
      b.g.setAttribute("transform", `translate(${b.x.toFixed(2)} ${cy.toFixed(2)})`);
      grow(b.x - b.w / 2, b.y - b.h / 2, b.x + b.w / 2, b.y + b.h / 2);
      if (b.leader && Math.hypot(b.x - b.ax, cy - b.ay) > 0.3 * u) {
        linkLayer.append(s("line", { class: "leader", x1: b.ax, y1: b.ay, x2: b.x, y2: cy, "stroke-width": 0.06 * u }));
        linkLayer.append(s("circle", { class: "anchor", cx: b.ax, cy: b.ay, r: 0.14 * u }));
      }
    }
    const pad = 1.2 * u;
    minX -= pad; minY -= pad + 1.2 * u; maxX += pad; maxY += pad + 1.2 * u;
    svg.setAttribute("viewBox", `${minX} ${minY} ${maxX - minX} ${maxY - minY}`);
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");

    // A scale bar (bottom left) and north (top right): an equirectangular plan is true to scale at this size.
    const nice = [20, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000];
    const len = nice.reduce((best, n) => (Math.abs(n - span / 5) < Math.abs(best - span / 5) ? n : best), nice[0]);
    const sx = minX + pad, sy = maxY - 0.8 * u;
    svg.append(s("g", { class: "scale" },
      s("line", { x1: sx, y1: sy, x2: sx + len, y2: sy, "stroke-width": 0.12 * u }),
      s("line", { x1: sx, y1: sy - 0.3 * u, x2: sx, y2: sy + 0.3 * u, "stroke-width": 0.1 * u }),
      s("line", { x1: sx + len, y1: sy - 0.3 * u, x2: sx + len, y2: sy + 0.3 * u, "stroke-width": 0.1 * u }),
      s("text", { x: sx + len / 2, y: sy - 0.5 * u, "font-size": 0.5 * u }, len >= 1000 ? `${len / 1000} km` : `${len} m`)));
    const nx = maxX - pad, ny = minY + 1.4 * u;
    svg.append(s("g", { class: "north" },
      s("path", { d: `M ${nx} ${ny - 1.0 * u} L ${nx - 0.35 * u} ${ny} L ${nx + 0.35 * u} ${ny} Z`, fill: "#1d2733" }),
      s("text", { x: nx, y: ny + 0.6 * u, "font-size": 0.55 * u }, "N")));
  }

  function setMark(key, cls, value, title) {
    const m = S.marks[key];
    if (!m) return;
    const kind = m.g.getAttribute("data-kind");
    const selected = m.g.classList.contains("selected");
    const alerted = m.g.classList.contains("alerted");
    m.g.setAttribute("class", `mark ${kind} ${cls}${selected ? " selected" : ""}${alerted ? " alerted" : ""}`);
    if (m.value) {
      m.value.textContent = value;
      // A long sign text is squeezed into its box rather than spilling over its neighbours.
      const size = Number(m.value.getAttribute("font-size"));
      const room = Number(m.box.getAttribute("width")) * 0.88;
      if (String(value).length * size * 0.62 > room) {
        m.value.setAttribute("textLength", room);
        m.value.setAttribute("lengthAdjust", "spacingAndGlyphs");
      } else {
        m.value.removeAttribute("textLength");
        m.value.removeAttribute("lengthAdjust");
      }
    }
    m.title.textContent = title;
  }

  function updatePlan() {
    for (const l of S.lots) {
      const shown = l.state === "closed" ? "closed" : l.state === "nodata" ? dash : String(l.free);
      setMark(`lot:${l.id}`, lotClass(l), shown,
        `${l.name}: ${l.free} free of ${l.total} (${l.occupied} occupied, ${l.unknown} unknown), ${l.state}`);
      const m = S.marks[`lot:${l.id}`];
      if (m) m.g.setAttribute("data-free", String(l.free));
    }
    for (const b of S.lockers) {
      setMark(`bank:${b.id}`, bankClass(b), b.state === "nodata" ? dash : String(b.free),
        `${b.name}: ${b.free} free of ${b.total} compartments, ${b.state}`);
    }
    for (const z of S.zones) {
      const m = S.marks[`zone:${z.id}`];
      if (!m) continue;
      const selected = m.g.classList.contains("selected");
      m.g.setAttribute("class", `mark zone ${zoneClass(z)}${selected ? " selected" : ""}`);
      m.title.textContent = `${z.name}: ${z.state === "nodata" ? "no data" : `${peopleText(z)}, ${levelWord(z)}`}`;
      m.sub.textContent = z.state === "nodata" ? "no data" : `${peopleText(z)} · ${levelWord(z)}`;
    }
    for (const d of S.displays) {
      setMark(`sign:${d.display_id}`, `st-${d.state}`, d.text === "" ? " " : d.text,
        `${d.name || d.display_id}: shows "${d.text}" (${d.state}, mode ${d.mode})`);
    }
    markAlerts();
  }

  /** Plan markers (and device rows) an alert is about: its lot (a bay's alert too), bank, zone, sign or device. */
  function alertedKeys() {
    const hit = new Set();
    for (const a of S.alerts || []) {
      const subj = a.subject || {};
      const id = String(subj.id);
      if (subj.type === "bay") hit.add(`lot:${id.split(".")[0]}`); // "<lot>.<bay>"
      const kind = { lot: "lot", zone: "zone", locker_bank: "bank", bank: "bank", display: "sign", device: "device" }[subj.type];
      if (kind) hit.add(`${kind}:${id}`);
    }
    return hit;
  }

  function markAlerts() {
    const hit = alertedKeys();
    for (const [key, m] of Object.entries(S.marks)) m.g.classList.toggle("alerted", hit.has(key));
    for (const tr of document.querySelectorAll("#devices-table tbody tr")) {
      tr.classList.toggle("alerted", hit.has(`device:${tr.dataset.id}`));
    }
  }

  function markSelected() {
    const picked = new Set();
    if (S.history.kind) picked.add(`${S.history.kind}:${S.history.id}`);
    if (S.selectedSign) picked.add(`sign:${S.selectedSign}`);
    for (const [key, m] of Object.entries(S.marks)) m.g.classList.toggle("selected", picked.has(key));
  }

  // -- tables ------------------------------------------------------------------------------------

  function trendText(t) {
    if (!t || t.direction === "unknown") return dash;
    const arrow = { filling: "↘ filling", emptying: "↗ emptying", steady: "→ steady" }[t.direction] || t.direction;
    return t.free_change ? `${arrow} (${t.free_change > 0 ? "+" : ""}${t.free_change})` : arrow;
  }

  function renderLots() {
    $("#lots-table tbody").replaceChildren(...S.lots.map((l) => {
      const tr = h("tr", { "data-id": l.id, class: "selectable" },
        h("td", { title: l.address || "" }, l.name),
        h("td", { class: "num", "data-field": "free" }, l.free),
        h("td", { class: "num", "data-field": "occupied" }, l.occupied),
        h("td", { class: "num", "data-field": "unknown" }, l.unknown),
        h("td", { class: "num", "data-field": "total" }, l.total),
        h("td", { "data-field": "state" }, badge(l.state, lotClass(l))),
        h("td", null, trendText(l.trend)),
        h("td", { class: "num" }, fmtAge(ageNow("lots", l.age_s))));
      tr.classList.toggle("selected", S.history.kind === "lot" && S.history.id === l.id);
      tr.addEventListener("click", () => selectHistory("lot", l.id, true));
      return tr;
    }));
  }

  function renderLockers() {
    $("#lockers-table tbody").replaceChildren(...S.lockers.map((b) => {
      const sizes = b.sizes.map((z) => `${z.size} ${z.free}/${z.total}`).join(" · ");
      const doors = b.doors_open.length ? b.doors_open.map((d) => `${d.compartment_id} (${fmtAge(d.open_s)})`).join(", ") : dash;
      const tr = h("tr", { "data-id": b.id, class: "selectable" },
        h("td", null, b.name),
        h("td", { class: "num", "data-field": "free" }, b.free),
        h("td", { class: "num", "data-field": "occupied" }, b.occupied),
        h("td", { class: "num", "data-field": "out_of_service" }, b.out_of_service),
        h("td", { class: "num", "data-field": "unknown" }, b.unknown),
        h("td", null, sizes),
        h("td", null, doors),
        h("td", { "data-field": "state" }, badge(b.state.replace(/_/g, " "), bankClass(b))));
      tr.classList.toggle("selected", S.history.kind === "bank" && S.history.id === b.id);
      tr.addEventListener("click", () => selectHistory("bank", b.id, true));
      return tr;
    }));
  }

  function renderZones() {
    $("#zones-table tbody").replaceChildren(...S.zones.map((z) => {
      const flow = flowText(z.last_15m);
      const cams = `${z.cameras.working}/${z.cameras.configured} working${z.cameras.broken.length ? `; broken: ${z.cameras.broken.join(", ")}` : ""}`;
      const tr = h("tr", { "data-id": z.id, class: "selectable" },
        h("td", null, z.name),
        h("td", { class: "num", "data-field": "occupancy", title: occupancyTitle(z) }, occupancyText(z)),
        h("td", { class: "num" }, num(z.capacity)),
        h("td", { "data-field": "level" }, badge(levelWord(z), zoneClass(z))),
        h("td", null, z.trend === "unknown" ? dash : z.trend === "suppressed" ? "< k people" : z.trend),
        h("td", { class: "num" }, flow),
        h("td", null, cams));
      tr.classList.toggle("selected", S.history.kind === "zone" && S.history.id === z.id);
      tr.addEventListener("click", () => selectHistory("zone", z.id, true));
      return tr;
    }));
  }

  function renderSigns() {
    $("#signs-table tbody").replaceChildren(...S.displays.map((d) => {
      const tr = h("tr", { "data-id": d.display_id, class: "selectable" },
        h("td", { title: d.display_id }, d.name || d.display_id),
        h("td", null, h("span", { class: `led st-${d.state}`, "data-field": "text" }, d.text === "" ? " " : d.text)),
        h("td", { "data-field": "state" }, badge(d.state, `st-${d.state}`)),
        h("td", { "data-field": "mode" }, d.mode),
        h("td", { class: "num" }, fmtAge(d.data_age_s)),
        h("td", null, d.override ? `${fmtTime(d.override.until)} (${d.override.by})` : dash));
      tr.classList.toggle("selected", S.selectedSign === d.display_id);
      tr.addEventListener("click", () => selectSign(d.display_id, false));
      return tr;
    }));
  }

  /** The kind column: the site configuration's kind; for a device it does not list (/v1/devices says
   *  ``configured: false``, ``kind: null``), that, with a title saying what is known. The gateway's own status is
   *  one such: it reports the firmware ``district-gateway <version>`` (gateway/intake.py) and is part of the
   *  system, not a field device left out of the configuration. */
  function kindCell(d) {
    if (d.kind) return h("td", null, d.kind);
    if (/^district-gateway\b/.test(d.firmware || "")) {
      return h("td", { class: "muted", title: "Not listed in the site configuration, which lists field devices: its status"
        + ` reports the gateway's firmware (${d.firmware}), so this is the district gateway, part of the system itself.` },
      "gateway (not in site config)");
    }
    return h("td", { class: "muted", title: "Heard on the broker but not listed in the site configuration, so its kind"
      + " is not known here; a field device is added to the site's devices." }, "not in site config");
  }

  function renderDevices() {
    const table = $("#devices-table");
    if (!atLeast("operator") || !S.devices) {
      table.hidden = true;
      $("#devices-table tbody").replaceChildren();
      if (atLeast("operator")) gate("#devices-gate", "Loading device health…", true);
      else gate("#devices-gate", apiKey() ? "This key is not an operator key: device health needs one." :
        "Operator key needed to see device health.");
      return;
    }
    gate("#devices-gate", "");
    table.hidden = false;
    $("#devices-table tbody").replaceChildren(...S.devices.map((d) => h("tr", { "data-id": d.id },
      h("td", { title: d.description || "" }, d.id),
      kindCell(d),
      h("td", { "data-field": "state" }, badge(d.state, d.state), d.reason ? ` ${d.reason}` : ""),
      h("td", null, d.last_heard_age_s === null ? "never" : `${fmtAge(d.last_heard_age_s)} ago`),
      h("td", { class: "num" }, d.battery_pct === null || d.battery_pct === undefined ? dash : `${Math.round(d.battery_pct)} %`),
      h("td", { class: "num" }, d.signal_dbm === null || d.signal_dbm === undefined ? dash : `${d.signal_dbm} dBm`),
      h("td", { class: "num" }, num(d.outbox_pending)),
      h("td", { class: "num" }, d.clock_offset_s === null || d.clock_offset_s === undefined ? dash : `${d.clock_offset_s.toFixed(2)} s`),
      h("td", null, d.firmware || dash),
      h("td", null, d.cameras.length ? d.cameras.map((c) =>
        `${c.camera_id}: ${c.state}, ${c.fps.toFixed(1)} fps, ${c.dropped_frames} dropped`).join("; ") : dash))));
    markAlerts();
  }

  function renderAlerts() {
    const table = $("#alerts-table");
    const pill = $("#alert-count");
    table.hidden = true;
    pill.hidden = true;
    if (S.alertsMissing || hasPath(ALERTS_PATH) === false) {
      gate("#alerts-gate", "Alerts are not available on this server.", true);
      return;
    }
    if (!atLeast("operator")) {
      gate("#alerts-gate", "Operator key needed to see alerts.");
      return;
    }
    if (S.alerts === null) return; // the gate says why (set where the answer came)
    gate("#alerts-gate", S.alerts.length ? "" : "No alerts.", !S.alerts.length);
    const rank = { critical: 0, warning: 1, info: 2 };
    const sorted = [...S.alerts].sort((a, b) => (rank[a.severity] ?? 3) - (rank[b.severity] ?? 3));
    table.hidden = !sorted.length;
    $("#alerts-table tbody").replaceChildren(...sorted.map((a) => h("tr", { "data-id": a.id },
      h("td", null, badge(a.severity, a.severity)),
      h("td", null, a.kind),
      h("td", null, a.subject ? `${a.subject.type} ${a.subject.id}` : dash),
      h("td", null, fmtTime(a.since)),
      h("td", null, a.text))));
    pill.hidden = false;
    pill.textContent = `${sorted.length} alert${sorted.length === 1 ? "" : "s"}`;
    pill.classList.toggle("quiet", !sorted.length);
  }

  function renderAudit() {
    const table = $("#audit-table");
    if (!atLeast("admin") || !S.audit) {
      table.hidden = true;
      gate("#audit-gate", "Admin key needed to see the audit log.");
      return;
    }
    gate("#audit-gate", S.audit.length ? "" : "No overrides yet.", !S.audit.length);
    table.hidden = !S.audit.length;
    $("#audit-table tbody").replaceChildren(...S.audit.map((e) => h("tr", { "data-id": e.id },
      h("td", null, fmtTime(e.at)), h("td", null, e.display_id), h("td", null, e.action), h("td", null, e.by),
      h("td", null, e.mode || dash), h("td", null, e.text || dash), h("td", null, e.until ? fmtTime(e.until) : dash),
      h("td", null, e.reason || dash))));
  }

  function render(resource) {
    if (resource === "lots") renderLots();
    else if (resource === "lockers") renderLockers();
    else if (resource === "zones") renderZones();
    else if (resource === "displays") renderSigns();
    updatePlan();
  }

  // -- the live feed -------------------------------------------------------------------------------

  function setLive(state, text) {
    document.body.dataset.live = state;
    $("#live-status").textContent = text;
  }

  function accept(resource, data) {
    S[resource] = data;
    S.receivedAt[resource] = Date.now();
    render(resource);
  }

  function connectLive() {
    const es = new EventSource(url("v1/live/events"));
    S.live = es;
    es.onopen = () => {
      setLive("open", "live");
      stopPolling();
    };
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        // The server refused the stream (a proxy, a restart): poll, and try the stream again later.
        setLive("polling", "polling");
        startPolling();
        setTimeout(connectLive, 15000);
      } else {
        setLive("reconnecting", "reconnecting…");
      }
    };
    for (const name of FEEDS) {
      es.addEventListener(name, (ev) => {
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch (err) {
          return;
        }
        accept(name, data);
      });
    }
  }

  async function pollOnce() {
    const paths = { lots: "v1/parking/lots", lockers: "v1/lockers", zones: "v1/zones", displays: "v1/displays" };
    for (const [name, path] of Object.entries(paths)) {
      const r = await api(path);
      if (r.status === 200) accept(name, r.data);
    }
  }

  function startPolling() {
    if (S.poll === null) {
      pollOnce();
      S.poll = setInterval(pollOnce, 5000);
    }
  }

  function stopPolling() {
    if (S.poll !== null) {
      clearInterval(S.poll);
      S.poll = null;
    }
  }

  // -- keys and roles -----------------------------------------------------------------------------

  function setRole(role, message) {
    S.role = role;
    document.body.dataset.role = role;
    const pill = $("#role");
    pill.textContent = role;
    pill.dataset.role = role;
    $("#key-message").textContent = message || "";
    $("#api-key").placeholder = apiKey() ? "a key is in use" : "none: public data only";
  }

  /** What the key in use may see: the server says (/v1/whoami), or, on a server without it, we ask around. */
  async function applyKey() {
    S.devices = null;
    S.alerts = null;
    S.audit = null;
    if (!apiKey()) {
      setRole("public", "");
      renderOperator();
      return;
    }
    if (hasPath("/v1/whoami") !== false) {
      const me = await api("v1/whoami", { auth: true });
      if (me.status === 200 && me.data && RANK[me.data.role] !== undefined) {
        if (!me.data.key_known) {
          setRole("public", "the server does not know this key (unknown, revoked or mistyped)");
        } else {
          setRole(me.data.role, me.data.name ? `key "${me.data.name}"` : "");
        }
        renderOperator();
        await refreshOperator();
        return;
      }
    }
    // No /v1/whoami: operator if /v1/devices answers, admin if the audit log does too.
    const dev = await api("v1/devices", { auth: true });
    if (dev.status !== 200) {
      setRole("public", dev.status === 401 || dev.status === 403 ? detailOf(dev) : `could not check the key (${detailOf(dev)})`);
      renderOperator();
      return;
    }
    S.devices = dev.data;
    const audit = await api("v1/displays/audit?limit=50", { auth: true });
    if (audit.status === 200) {
      S.audit = audit.data;
      setRole("admin", "");
    } else {
      setRole("operator", "");
    }
    renderOperator();
    await refreshOperator();
  }

  function renderOperator() {
    renderDevices();
    renderAlerts();
    renderAudit();
    updateOverrideGate();
    loadHistory();
    loadAnalytics();
  }

  async function refreshOperator() {
    if (!atLeast("operator")) return;
    const dev = await api("v1/devices", { auth: true });
    if (dev.status === 401 || dev.status === 403) return applyKey(); // the key was revoked meanwhile
    if (dev.status === 200) S.devices = dev.data;
    renderDevices();
    if (!S.alertsMissing && hasPath(ALERTS_PATH) !== false) {
      const r = await api("v1/alerts", { auth: true });
      if (r.status === 200) S.alerts = Array.isArray(r.data) ? r.data : r.data && r.data.alerts ? r.data.alerts : [];
      else if (r.status === 404) {
        S.alertsMissing = true;
        S.alerts = null;
      } else if (r.status === 401 || r.status === 403) gate("#alerts-gate", "Operator key needed to see alerts.");
      renderAlerts();
      markAlerts();
    }
    if (atLeast("admin")) {
      const r = await api("v1/displays/audit?limit=50", { auth: true });
      if (r.status === 200) S.audit = r.data;
      renderAudit();
    }
  }

  // -- history --------------------------------------------------------------------------------------

  function fillHistoryChoices(plan) {
    const sel = $("#history-of");
    const group = (label, kind, items) => h("optgroup", { label },
      ...items.map((it) => h("option", { value: `${kind}:${it.id}` }, it.name)));
    sel.replaceChildren(group("Parking", "lot", plan.lots), group("Zones", "zone", plan.zones),
      group("Pickup lockers", "bank", plan.lockers));
    const first = plan.lots[0] ? ["lot", plan.lots[0].id] : plan.zones[0] ? ["zone", plan.zones[0].id] :
      plan.lockers[0] ? ["bank", plan.lockers[0].id] : [null, null];
    S.history.kind = first[0];
    S.history.id = first[1];
    if (first[0]) sel.value = `${first[0]}:${first[1]}`;
  }

  function selectHistory(kind, id, scroll) {
    S.history.kind = kind;
    S.history.id = id;
    $("#history-of").value = `${kind}:${id}`;
    markSelected();
    render("lots"); render("lockers"); render("zones");
    loadHistory();
    if (scroll) $("#history-section").scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  const TIME_KEYS = ["start", "time", "at", "t", "from", "bucket", "interval_start", "timestamp", "ts"];
  const SKIP_KEYS = new Set([...TIME_KEYS, "end", "to", "stop", "interval_end"]);

  function rowsOf(data) {
    if (Array.isArray(data)) return data;
    if (!data || typeof data !== "object") return null;
    for (const k of ["points", "series", "intervals", "buckets", "items", "rows", "values", "data"]) {
      if (Array.isArray(data[k])) return data[k];
    }
    for (const v of Object.values(data)) if (Array.isArray(v) && v.length && typeof v[0] === "object") return v;
    return null;
  }

  /** Time series from a history answer, whatever its exact shape: rows with a time and numbers (one level deep). */
  function parseHistory(data) {
    const rows = rowsOf(data);
    if (!rows) return null;
    const parsed = [];
    const names = [];
    for (const row of rows) {
      if (!row || typeof row !== "object") continue;
      const tk = TIME_KEYS.find((k) => k in row);
      if (!tk) continue;
      const t = typeof row[tk] === "number" ? row[tk] : Date.parse(row[tk]) / 1000;
      if (!Number.isFinite(t)) continue;
      const vals = {};
      for (const [k, v] of Object.entries(row)) {
        if (SKIP_KEYS.has(k)) continue;
        if (typeof v === "number" || v === null) vals[k] = v;
        else if (v && typeof v === "object" && !Array.isArray(v)) {
          for (const [k2, v2] of Object.entries(v)) if (typeof v2 === "number" || v2 === null) vals[`${k}.${k2}`] = v2;
        }
      }
      for (const k of Object.keys(vals)) if (!names.includes(k)) names.push(k);
      // A zone bucket's parts withheld under k (docs/history.md): null, drawn as gaps, read as "< k".
      parsed.push([t, vals, new Set(Array.isArray(row.withheld) ? row.withheld : [])]);
    }
    parsed.sort((a, b) => a[0] - b[0]);
    const withheld = names.filter((n) => parsed.some(([, , w]) => w.has(n)));
    // ``samples`` counts the snapshots behind a bucket: bookkeeping, not a quantity on the chart's axis (a lot
    // with no data in the span would otherwise draw a line of 0 snapshots instead of saying it has no history).
    const shown = names.filter((n) => n !== "samples"
      && (parsed.some(([, v]) => typeof v[n] === "number") || withheld.includes(n))).slice(0, COLORS.length);
    return {
      xs: parsed.map((p) => p[0]),
      names: shown,
      ys: shown.map((n) => parsed.map(([, v]) => (typeof v[n] === "number" ? v[n] : null))),
      withheld: parsed.map(([, , w]) => w),
    };
  }

  function clearChart() {
    if (S.history.chart) {
      S.history.chart.destroy();
      S.history.chart = null;
    }
    $("#history-chart").replaceChildren();
  }

  /** Axis labels in the site's time zone, 24-hour: times within a day, dates across days. */
  function timeTicks(splits) {
    const spanS = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
    const opts = spanS > 2 * 86400 ? { day: "2-digit", month: "short" } : { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    let lastDay = null;
    return splits.map((ts) => {
      const text = siteTime(ts * 1000, opts);
      if (spanS > 2 * 86400) return text;
      const day = siteTime(ts * 1000, { day: "2-digit", month: "short" });
      const withDay = day !== lastDay ? `${text}\n${day}` : text;
      lastDay = day;
      return withDay;
    });
  }

  /**
   * What the k rule did to a history answer (zone footfall, docs/history.md): a line saying how many
   * buckets are suppressed (drawn as gaps, never 0) and how many coarsened; null when it did nothing.
   */
  function privacyNote(data) {
    const rows = rowsOf(data) || [];
    const count = (state) => rows.filter((r) => r && r.state === state).length;
    const suppressed = count("suppressed");
    const coarsened = count("coarsened");
    const parts = (r) => [...(r.withheld || []), ...(r.lines || []).flatMap((l) => l.withheld || [])];
    const partial = rows.filter((r) => r && (r.state === "ok" || r.state === "coarsened") && parts(r).length).length;
    if (!suppressed && !coarsened && !partial) return null;
    const k = data && data.privacy && Number.isFinite(data.privacy.k) ? ` = ${data.privacy.k}` : "";
    const said = [];
    if (suppressed) {
      said.push(`${suppressed} ${suppressed === 1 ? "bucket" : "buckets"} suppressed: fewer than k${k} people,`
        + " left as gaps, never 0");
    }
    if (coarsened) {
      said.push(`${coarsened} coarsened: merged with neighbouring buckets to reach k${k} people, drawn at the`
        + " start of the merged interval");
    }
    if (partial) {
      said.push(`${partial} with entries, exits (in all or on a line) or mean occupancy withheld: < k${k} people, or withheld so`
        + " that one under k cannot be had by subtraction; left as gaps, read \u201c< k\u201d, never 0");
    }
    return h("p", { id: "history-k", class: "muted", "data-suppressed": String(suppressed),
      "data-coarsened": String(coarsened), "data-withheld": String(partial) }, `${said.join("; ")}.`);
  }

  /** Human names for the fields of the history answers (server/models.py: LotHistoryBucket, ZoneHistoryBucket,
   *  LockerHistoryBucket), by what is charted; a ``field.stat`` name reads "field words (stat)". */
  const SERIES_WORDS = {
    lot: { free: "free bays", occupied: "occupied bays", unknown: "bays without a reading" },
    zone: { entries: "entries", exits: "exits", occupancy_mean: "people in the zone (mean)" },
    bank: {
      free: "free compartments", occupied: "occupied compartments", deposits: "deposits", pickups: "pickups",
      mean_dwell_s: "mean dwell (s)",
    },
  };
  function seriesLabel(kind, name) {
    const dot = name.indexOf(".");
    const [field, stat] = dot < 0 ? [name, null] : [name.slice(0, dot), name.slice(dot + 1)];
    const word = (SERIES_WORDS[kind] || {})[field] || field.replace(/_/g, " ");
    return stat ? `${word} (${stat})` : word;
  }

  function drawChart(series, title, note, kind) {
    clearChart();
    const box = $("#history-chart");
    if (!series || !series.xs.length || !series.names.length) {
      const text = note && note.dataset.suppressed !== "0"
        ? `Nothing to draw for ${title}: every bucket with data is under the privacy threshold.`
        : `No history for ${title} in this span.`;
      box.append(h("p", { class: "muted", "data-empty": "1" }, text));
      if (note) box.append(note);
      return;
    }
    if (typeof window.uPlot !== "function") {
      box.append(h("p", { class: "muted" }, "The chart library did not load."));
      return;
    }
    const opts = {
      title,
      width: Math.max(320, box.clientWidth || 800),
      height: 280,
      scales: { x: { time: true } },
      tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1e3), S.tz),
      axes: [{ values: (u, splits) => timeTicks(splits) }, {}],
      series: [{}].concat(series.names.map((n, i) => {
        const minmax = /(^|\.)(min|max)$/.test(n);
        // The legend reads a withheld part as "< k" (the live zones' word), not as a missing value.
        const value = (u, v, si, di) => (v === null && di !== null && series.withheld && series.withheld[di]
          && series.withheld[di].has(n) ? "< k" : v === null || v === undefined ? "--" : String(v));
        return { label: seriesLabel(kind, n), stroke: COLORS[i % COLORS.length], width: minmax ? 1 : 2, dash: minmax ? [4, 4] : undefined,
          value };
      })),
    };
    S.history.chart = new window.uPlot(opts, [series.xs, ...series.ys], box);
    box.dataset.points = String(series.xs.length);
    if (note) box.append(note);
  }

  async function loadHistory() {
    const { kind, id } = S.history;
    if (!kind) {
      gate("#history-gate", "Nothing on this site has history.", true);
      return;
    }
    const spec = HISTORY[kind];
    if (hasPath(spec.template) === false) {
      clearChart();
      gate("#history-gate", `History is not available on this server (no ${spec.template.replace("{}", "{id}")}).`, true);
      return;
    }
    if (!atLeast("operator")) {
      clearChart();
      gate("#history-gate", "Operator key needed to see history.");
      return;
    }
    const [spanS, every] = SPANS[$("#history-span").value] || SPANS["24h"];
    const to = new Date();
    const from = new Date(to.getTime() - spanS * 1000);
    const q = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), every });
    const r = await api(`${spec.path(id)}?${q}`, { auth: true });
    if (S.history.kind !== kind || S.history.id !== id) return; // another was chosen meanwhile
    const title = $("#history-of").selectedOptions[0] ? $("#history-of").selectedOptions[0].textContent : id;
    if (r.status === 200) {
      gate("#history-gate", "");
      const span = $("#history-span").selectedOptions[0].textContent;
      drawChart(parseHistory(r.data), `${title}, ${span}`, privacyNote(r.data), kind);
    } else if (r.status === 401 || r.status === 403) {
      clearChart();
      gate("#history-gate", "Operator key needed to see history.");
    } else if (r.status === 404 && hasPath(spec.template) !== true) {
      clearChart();
      gate("#history-gate", "History is not available on this server.", true);
    } else {
      clearChart();
      gate("#history-gate", `History could not be loaded: ${detailOf(r)}`, true);
    }
  }

  // -- analytics (docs/analytics.md) ------------------------------------------------------------------

  const ANALYTICS_INDEX = "/v1/analytics";
  const STATE_WORDS = {
    nodata: "no data",
    coarsened: "coarsened: merged into a wider interval to reach k",
    ok: "ok",
  };
  /** What the k rule counts for a figure (docs/analytics.md): people for a zone's footfall, for a lot the most
   *  vehicles parked at once; an area's lags rest on the fewer of its arrivals (vehicles) and entries (people). */
  const COUNTED = { zone: "people", lot: "vehicles", arrivals: "vehicles", lags: "arrivals or entries" };
  const stateWord = (state, counted) =>
    (state === "suppressed" ? `suppressed: fewer than k ${counted}` : STATE_WORDS[state] || state);
  const K_NOTE = {
    zone: "people",
    lot: "vehicles parked at once",
    area: "vehicles (the lots' arrivals) or people (the zones' entries)",
  };

  function fillAnalyticsChoices(index) {
    const sel = $("#analytics-of");
    const keep = sel.value;
    const group = (label, kind, items) => h("optgroup", { label },
      ...items.map((it) => h("option", { value: `${kind}:${it.id}` }, it.name || it.id)));
    sel.replaceChildren(
      group("Zones", "zone", index.zones), group("Parking lots", "lot", index.lots), group("Areas", "area", index.areas));
    if (keep && [...sel.options].some((o) => o.value === keep)) sel.value = keep;
  }

  function fmtValue(cell, unit, counted) {
    if (!cell || cell.value === null || cell.value === undefined) return stateWord(cell ? cell.state : "nodata", counted);
    if (unit === "share") return `${(cell.value * 100).toFixed(1)} %`;
    if (unit === "seconds") return `${(cell.value / 60).toFixed(1)} min`;
    if (unit === "percent") return `${cell.value > 0 ? "+" : ""}${cell.value.toFixed(1)} %`;
    if (unit === "r") return cell.value.toFixed(3);
    return String(Math.round(cell.value * 10) / 10);
  }

  function fmtCounts(cell) {
    if (!cell || !cell.counts) return dash;
    return Object.entries(cell.counts).map(([k, v]) => `${k.replace(/_/g, " ")} ${Math.round(v * 10) / 10}`).join(", ");
  }

  /** One figure's row; ``counted``: what its k rule counts (COUNTED), said when it is suppressed. */
  function analyticsRow(name, cell, unit, extra, counted = COUNTED.zone) {
    const state = cell ? cell.state : "nodata";
    const interval = cell && cell.start ? `${fmtTime(cell.start)} to ${fmtTime(cell.end)}` : dash;
    const withheld = state === "suppressed" || state === "nodata";
    return h("tr", { "data-figure": name, "data-state": state },
      h("td", {}, name),
      h("td", { class: `num${withheld ? ` ${state}` : ""}` }, extra || fmtValue(cell, unit, counted)),
      h("td", { class: "state" }, stateWord(state, counted)),
      h("td", {}, interval),
      h("td", {}, fmtCounts(cell)));
  }

  function peakRow(name, body, which, counted) {
    const label = which === "hour" ? body.peak_hour : body.peak_day;
    const cells = which === "hour" ? body.hours : body.days;
    const cell = cells.find((c) => c.label === label) || null;
    if (!cell) {
      const anyData = cells.some((c) => c.state !== "nodata");
      return analyticsRow(name, { state: anyData ? "suppressed" : "nodata", start: body.window.start, end: body.window.end,
        value: null, counts: null }, null, null, counted);
    }
    // "13:00: 195.7 occupied bays (mean)": the API's unit may carry its own brackets.
    const shown = `${which === "hour" ? `${label}:00` : label}: ${fmtValue(cell)} ${body.unit}`;
    return analyticsRow(name, cell, null, shown, counted);
  }

  async function loadAnalytics() {
    const table = $("#analytics-table");
    if (hasPath(ANALYTICS_INDEX) === false) {
      table.hidden = true;
      gate("#analytics-gate", "Analytics are not available on this server.", true);
      return;
    }
    if (!atLeast("operator")) {
      table.hidden = true;
      $("#analytics-k").hidden = true;
      gate("#analytics-gate", "Operator key needed to see analytics.");
      return;
    }
    if (!S.analytics.index) {
      const r = await api("v1/analytics", { auth: true });
      if (r.status !== 200) {
        table.hidden = true;
        gate("#analytics-gate", `Analytics could not be loaded: ${detailOf(r)}`, true);
        return;
      }
      S.analytics.index = r.data;
      fillAnalyticsChoices(r.data);
    }
    const index = S.analytics.index;
    const choice = $("#analytics-of").value;
    if (!choice) {
      gate("#analytics-gate", "Nothing on this site to analyse.", true);
      return;
    }
    const [kind, ...rest] = choice.split(":");
    const id = rest.join(":");
    const days = Number($("#analytics-span").value) || 7;
    const to = new Date();
    const from = new Date(to.getTime() - days * 86400 * 1000);
    const span = new URLSearchParams({ from: from.toISOString(), to: to.toISOString() });
    const enc = encodeURIComponent(id);
    const rows = [];
    const errors = [];
    const get = async (path) => {
      const r = await api(path, { auth: true });
      if (r.status === 200) return r.data;
      errors.push(`${path.split("?")[0]}: ${detailOf(r)}`);
      return null;
    };
    if (kind === "zone" || kind === "lot") {
      const base = kind === "zone" ? `v1/analytics/zones/${enc}` : `v1/analytics/lots/${enc}`;
      const peaks = await get(`${base}/peaks?${span}`);
      const counted = COUNTED[kind];
      if (peaks) rows.push(peakRow("Peak hour", peaks, "hour", counted), peakRow("Peak day", peaks, "day", counted));
      const change = await get(`${base}/change`);
      if (change) {
        for (const c of change.changes) {
          rows.push(analyticsRow(c.label === "week_on_week" ? "Week on week" : "Year on year", c, "percent", null, counted));
        }
      }
      if (kind === "zone") {
        const zone = index.zones.find((z) => z.id === id);
        if (zone && zone.street_line) {
          const cr = await get(`${base}/capture-rate?${span}&every=1d`);
          if (cr) rows.push(analyticsRow("Capture rate", cr.total, "share"));
        }
        const dwell = await get(`${base}/dwell-time?${span}&every=1d`);
        if (dwell) rows.push(analyticsRow("Dwell time (Little's law)", dwell.total, "seconds"));
        if (index.boundaries.some((b) => b.from_zone === id || b.to_zone === id)) {
          const flows = await get(`v1/analytics/flows?${span}&every=1d`);
          for (const f of flows ? flows.flows : []) {
            if (f.from_zone === id || f.to_zone === id) rows.push(analyticsRow(`Flow ${f.from_zone} → ${f.to_zone}`, f.total, null));
          }
        }
      }
    } else if (kind === "area") {
      const pf = await get(`v1/analytics/areas/${enc}/parking-footfall?${span}`);
      if (pf) {
        rows.push(analyticsRow("Arrivals at the lots (vehicles)", pf.arrivals, null, null, COUNTED.arrivals));
        rows.push(analyticsRow("Entries into the zones", pf.entries, null));
        const best = pf.best ? pf.lags.find((c) => c.label === String(pf.best.lag_h)) : null;
        rows.push(best
          ? analyticsRow("Footfall follows parking by", best, null, `${pf.best.lag_h} h (r ${pf.best.r.toFixed(3)})`, COUNTED.lags)
          : analyticsRow("Footfall follows parking by", pf.lags[0] || null, null, null, COUNTED.lags));
      }
    }
    if ($("#analytics-of").value !== choice) return; // another was chosen meanwhile
    $("#analytics-k").textContent = `No figure rests on fewer than k = ${index.privacy.k} ${K_NOTE[kind]}: smaller ones are`
      + " coarsened or suppressed, never shown as 0.";
    $("#analytics-k").hidden = false;
    table.querySelector("tbody").replaceChildren(...rows);
    table.hidden = rows.length === 0;
    gate("#analytics-gate", errors.length ? `Some figures could not be loaded: ${errors.join("; ")}` : "", errors.length > 0);
  }

  // -- forecasts (docs/forecast.md) ----------------------------------------------------------------------

  const FORECAST = {
    zone: { template: "/v1/zones/{}/forecast", path: (id) => `v1/zones/${encodeURIComponent(id)}/forecast` },
    lot: { template: "/v1/parking/lots/{}/forecast", path: (id) => `v1/parking/lots/${encodeURIComponent(id)}/forecast` },
  };
  /** The server's default refresh (DISTRICT_SERVER_FORECAST_REFRESH_S), for a server that does not say its own. */
  const FORECAST_REFRESH_S = 3600;
  const FORECAST_WORDS = {
    pending: "no forecast yet: the server's first run has not finished",
    insufficient_history: "not enough history yet",
    unavailable: "forecast unavailable",
  };

  function fillForecastChoices(plan) {
    const sel = $("#forecast-of");
    const group = (label, kind, items) => h("optgroup", { label },
      ...items.map((it) => h("option", { value: `${kind}:${it.id}` }, it.name)));
    sel.replaceChildren(group("Zones", "zone", plan.zones), group("Parking lots", "lot", plan.lots));
    const first = plan.zones[0] ? `zone:${plan.zones[0].id}` : plan.lots[0] ? `lot:${plan.lots[0].id}` : "";
    if (first) sel.value = first;
  }

  function clearForecast() {
    if (S.forecast.chart) {
      S.forecast.chart.destroy();
      S.forecast.chart = null;
    }
    $("#forecast-chart").replaceChildren();
    $("#forecast-chart").classList.remove("stale");
    for (const id of ["#forecast-stale", "#forecast-summary", "#forecast-arrival-answer"]) {
      $(id).hidden = true;
      $(id).textContent = "";
    }
  }

  /** Whether a forecast is stale: the server says so (its clock), or ``made_at`` is older than twice the
   *  server's refresh interval by this browser's clock at ``nowMs`` (a server whose own clock is wrong). */
  function forecastStale(data, nowMs) {
    const t = Date.parse(data.made_at);
    return data.stale === true || !Number.isFinite(t) || (nowMs - t) / 1000 > 2 * forecastRefresh(data);
  }
  const forecastRefresh = (data) => (data.refresh_s > 0 ? data.refresh_s : FORECAST_REFRESH_S);

  const bandText = (b, pct) => `${b.mean} (${pct} %: ${b.lower}${dash}${b.upper})`;
  const hourOf = (iso) => siteTime(iso, {
    weekday: "short", day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  });
  const clockOf = (iso) => siteTime(iso, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  const dayOf = (iso) => siteTime(iso, { day: "2-digit", month: "short", year: "numeric" });

  /** The point forecast as a line, its interval as a filled band (uPlot ``bands``), in the site's time. */
  function drawForecastChart(xs, bands, title, what, pct) {
    const box = $("#forecast-chart");
    if (typeof window.uPlot !== "function") {
      box.append(h("p", { class: "muted" }, "The chart library did not load."));
      return;
    }
    const edge = { stroke: "rgba(31, 119, 180, 0.45)", width: 1 };
    const opts = {
      title,
      width: Math.max(320, box.clientWidth || 800),
      height: 260,
      scales: { x: { time: true } },
      tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1e3), S.tz),
      axes: [{ values: (u, splits) => timeTicks(splits) }, {}],
      series: [{}, { label: `${pct} % lower`, ...edge }, { label: `${pct} % upper`, ...edge },
        { label: what, stroke: COLORS[0], width: 2 }],
      bands: [{ series: [2, 1], fill: "rgba(31, 119, 180, 0.18)" }],
    };
    const cols = [xs, bands.map((b) => b.lower), bands.map((b) => b.upper), bands.map((b) => b.mean)];
    S.forecast.chart = new window.uPlot(opts, cols, box);
    box.dataset.points = String(xs.length);
  }

  function showForecast(kind, id, data, asked) {
    clearForecast();
    const section = $("#forecast-section");
    section.dataset.status = data.status;
    const points = Array.isArray(data.points) ? data.points : [];
    if (data.status !== "ok" || !points.length) {
      // No chart and no number: a forecast that is not there is said in words, never drawn as 0.
      const words = FORECAST_WORDS[data.status] || `no forecast (${data.status})`;
      gate("#forecast-gate", data.detail ? `${words}: ${data.detail}` : words, true);
      return;
    }
    gate("#forecast-gate", "");
    const pct = Math.round((data.coverage || 0.8) * 100);
    const made = `made at ${fmtTime(data.made_at)}, from history since ${dayOf(data.history_from)}, ${pct} % interval`;
    const stale = forecastStale(data, Date.now());
    section.dataset.stale = stale ? "1" : "0";
    if (stale) {
      const st = $("#forecast-stale");
      const every = forecastRefresh(data);
      st.textContent = `stale: made at ${fmtTime(data.made_at)}, over ${fmtAge(2 * every)} ago (the server`
        + ` refreshes every ${fmtAge(every)}): the figures below are old, not a current forecast.`;
      st.hidden = false;
      $("#forecast-chart").classList.add("stale");
    } else if (data.detail) {
      // The latest refresh failed and the server kept its last forecast (still fresh): say so, draw it as it is.
      const st = $("#forecast-stale");
      st.textContent = `Not refreshed: ${data.detail}.`;
      st.hidden = false;
    }
    const xs = points.map((p) => Date.parse(p.start) / 1000);
    const name = $("#forecast-of").selectedOptions[0] ? $("#forecast-of").selectedOptions[0].textContent : id;
    const summary = $("#forecast-summary");
    if (kind === "zone") {
      const bands = points.map((p) => p.entries);
      let top = 0;
      for (let i = 1; i < bands.length; i++) if (bands[i].mean > bands[top].mean) top = i;
      const p = points[top];
      summary.replaceChildren(h("span", { id: "forecast-peak", "data-start": p.start, "data-mean": String(p.entries.mean),
        "data-lower": String(p.entries.lower), "data-upper": String(p.entries.upper) },
      `Busiest expected hour: ${hourOf(p.start)}${dash}${clockOf(p.end)}, ${bandText(p.entries, pct)} entries`),
      `; ${made}.`);
      drawForecastChart(xs, bands, `${name}: expected entries per hour, next ${points.length} h`, "expected entries", pct);
    } else {
      summary.replaceChildren(h("span", { id: "forecast-total", "data-total": String(data.total) },
        `${data.total} bays in all`), `; ${made}.`);
      const answer = $("#forecast-arrival-answer");
      const a = data.arrival;
      answer.dataset.asked = asked || "";
      if (a) {
        answer.dataset.free = a.free ? String(a.free.mean) : "";
        answer.textContent = a.free
          ? `Expected free at your arrival (${hourOf(a.at)}): ${bandText(a.free, pct)}`
          : `Arrival at ${hourOf(a.at)}: outside the forecast.`;
        answer.hidden = false;
      }
      drawForecastChart(xs, points.map((p) => p.free),
        `${name}: expected free bays of ${data.total}, next ${Math.round(points.length / 4)} h`, "expected free bays", pct);
    }
    summary.hidden = false;
  }

  async function loadForecast() {
    const choice = $("#forecast-of").value;
    const seq = ++S.forecast.seq;
    if (!choice) {
      clearForecast();
      gate("#forecast-gate", "Nothing on this site to forecast.", true);
      return;
    }
    const [kind, ...rest] = choice.split(":");
    const id = rest.join(":");
    const spec = FORECAST[kind];
    $("#forecast-arrival-label").hidden = kind !== "lot";
    if (hasPath(spec.template) === false) {
      clearForecast();
      gate("#forecast-gate", "Forecasts are not available on this server.", true);
      return;
    }
    let path = spec.path(id);
    let asked = null;
    if (kind === "lot") {
      asked = new Date(Date.now() + (Number($("#forecast-arrival").value) || 30) * 60000).toISOString();
      path += `?${new URLSearchParams({ arrival: asked })}`;
    }
    const r = await api(path);
    if (seq !== S.forecast.seq) return; // another was asked meanwhile
    if (r.status === 200 && r.data) {
      showForecast(kind, id, r.data, asked);
      return;
    }
    clearForecast();
    $("#forecast-section").dataset.status = "error";
    if (r.status === 404 && hasPath(spec.template) !== true) gate("#forecast-gate", "Forecasts are not available on this server.", true);
    else gate("#forecast-gate", `The forecast could not be loaded: ${detailOf(r)}`, true);
  }

  // -- signs and overrides ------------------------------------------------------------------------

  function localInput(d) {
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
  }

  function selectSign(id, scroll) {
    if (S.selectedSign !== id) {
      S.selectedSign = id;
      if (S.signFeed) S.signFeed.close();
      S.signState = null;
      const path = `v1/displays/${encodeURIComponent(id)}/events`;
      $("#sign-feed-url").textContent = `/${path}`;
      $("#sign-feed").textContent = " ";
      $("#sign-feed-info").textContent = "connecting…";
      const es = new EventSource(url(path));
      es.addEventListener("state", (ev) => {
        let st;
        try {
          st = JSON.parse(ev.data);
        } catch (err) {
          return;
        }
        if (st.display_id === S.selectedSign) showSignFeed(st);
      });
      es.onerror = () => {
        $("#sign-feed-info").textContent = "reconnecting…";
      };
      S.signFeed = es;
    }
    const d = S.plan && S.plan.displays.find((x) => x.id === id);
    $("#sign-name").textContent = d ? d.name || d.id : id;
    $("#sign-detail").hidden = false;
    if (!$("#ov-until").value) $("#ov-until").value = localInput(new Date(Date.now() + 3600 * 1000));
    markSelected();
    renderSigns();
    updateOverrideGate();
    if (scroll) $("#signs-section").scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  function showSignFeed(st) {
    S.signState = st;
    const led = $("#sign-feed");
    led.textContent = st.text === "" ? " " : st.text;
    led.className = `led st-${st.state}`;
    led.dataset.mode = st.mode;
    led.dataset.text = st.text;
    led.dataset.eventId = String(st.event_id);
    const o = st.override;
    $("#sign-feed-info").textContent = `${st.state}, mode ${st.mode}` +
      (o ? `, set by ${o.by} until ${fmtTime(o.until)}` : "") + ` (event ${st.event_id})`;
  }

  function updateOverrideGate() {
    const admin = atLeast("admin");
    $("#override-form").hidden = !admin;
    gate("#override-gate", admin ? "" : "Admin key needed to override signs.");
    $("#ov-text").disabled = $("#ov-mode").value !== "text";
  }

  async function setOverride(ev) {
    ev.preventDefault();
    const id = S.selectedSign;
    const msg = $("#ov-message");
    const mode = $("#ov-mode").value;
    const untilText = $("#ov-until").value;
    const until = new Date(untilText);
    if (!untilText || Number.isNaN(until.getTime())) {
      msg.textContent = "Choose until when.";
      return;
    }
    const body = { mode, until: until.toISOString() };
    if (mode === "text") {
      const text = $("#ov-text").value;
      if (!/^[\x20-\x7e]{1,16}$/.test(text)) {
        msg.textContent = "Text: 1-16 printable ASCII characters.";
        return;
      }
      body.text = text;
    }
    const reason = $("#ov-reason").value.trim();
    if (reason) body.reason = reason;
    msg.textContent = "setting…";
    const r = await api(`v1/displays/${encodeURIComponent(id)}/override`, { auth: true, method: "PUT", body });
    if (r.status === 200) msg.textContent = `Set: the sign shows "${r.data.text}" until ${fmtTime(r.data.override.until)}.`;
    else if (r.status === 401 || r.status === 403) msg.textContent = "Admin key needed.";
    else msg.textContent = `Not set: ${detailOf(r)}`;
    refreshOperator();
  }

  async function clearOverride() {
    const id = S.selectedSign;
    const msg = $("#ov-message");
    msg.textContent = "clearing…";
    const r = await api(`v1/displays/${encodeURIComponent(id)}/override`, { auth: true, method: "DELETE" });
    if (r.status === 200) msg.textContent = `Cleared: the sign shows "${r.data.text}" (${r.data.state}).`;
    else if (r.status === 401 || r.status === 403) msg.textContent = "Admin key needed.";
    else msg.textContent = `Not cleared: ${detailOf(r)}`;
    refreshOperator();
  }

  // -- start ----------------------------------------------------------------------------------------

  function tick() {
    const newest = Math.max(0, ...Object.values(S.receivedAt));
    $("#updated").textContent = newest ? `updated ${fmtAge((Date.now() - newest) / 1000)} ago` : "";
    renderLots();
    renderLockers();
  }

  function wire() {
    $("#key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("#api-key").value.trim();
      try {
        if (key) sessionStorage.setItem(KEY_STORE, key);
      } catch (err) {
        $("#key-message").textContent = "this browser keeps no session storage";
      }
      $("#api-key").value = "";
      applyKey();
    });
    $("#key-forget").addEventListener("click", () => {
      try {
        sessionStorage.removeItem(KEY_STORE);
      } catch (err) {
        /* nothing kept */
      }
      $("#api-key").value = "";
      applyKey();
    });
    $("#history-of").addEventListener("change", () => {
      const [kind, ...rest] = $("#history-of").value.split(":");
      selectHistory(kind, rest.join(":"), false);
    });
    $("#history-span").addEventListener("change", loadHistory);
    $("#analytics-of").addEventListener("change", loadAnalytics);
    $("#analytics-span").addEventListener("change", loadAnalytics);
    $("#forecast-of").addEventListener("change", loadForecast);
    $("#forecast-arrival").addEventListener("change", loadForecast);
    $("#override-form").addEventListener("submit", setOverride);
    $("#ov-clear").addEventListener("click", clearOverride);
    $("#ov-mode").addEventListener("change", updateOverrideGate);
    window.addEventListener("resize", () => {
      const c = S.history.chart;
      if (c) c.setSize({ width: Math.max(320, $("#history-chart").clientWidth), height: 280 });
      const f = S.forecast.chart;
      if (f) f.setSize({ width: Math.max(320, $("#forecast-chart").clientWidth), height: 260 });
    });
  }

  async function start() {
    const [site, spec] = await Promise.all([api("v1/site"), api("openapi.json")]);
    if (spec.status === 200 && spec.data && spec.data.paths) S.paths = new Set(Object.keys(spec.data.paths).map(norm));
    if (site.status !== 200) {
      setLive("reconnecting", "site plan not available");
      setTimeout(start, 5000);
      return;
    }
    S.plan = site.data;
    try {
      new Intl.DateTimeFormat("en-GB", { timeZone: site.data.timezone });
      S.tz = site.data.timezone;
    } catch (err) {
      S.tz = "UTC";
    }
    $("#site-name").textContent = site.data.name;
    document.title = `${site.data.name}: district console`;
    buildPlan(site.data);
    fillHistoryChoices(site.data);
    fillForecastChoices(site.data);
    markSelected();
    connectLive();
    await applyKey();
    setInterval(tick, 5000);
    setInterval(refreshOperator, 5000);
    setInterval(() => { if (atLeast("operator")) { loadHistory(); loadAnalytics(); } }, 60000);
    loadForecast(); // public (docs/forecast.md): no key needed
    setInterval(loadForecast, 60000);
    document.body.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", () => {
    wire();
    start();
  });
})();
