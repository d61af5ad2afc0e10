// The dashboard: the top line (visitors, visits, page views, views per visit, bounce rate,
// visit duration, events), a page-view chart (inline SVG), top sources (with UTM tabs), pages
// (with entry and exit tabs), devices, browsers, OSes, countries and custom events for one
// site, read from /api/v1/stats/* and refreshed periodically, and the current visitors
// (/api/v1/stats/realtime/visitors) every REALTIME_MS. Clicking a custom event shows its custom
// properties: one breakdown over every key (property=event:props) of that event's events. A read key, if the site needs one, is taken
// from the page's fragment (#key=...), which browsers never send to the server.
"use strict";

const params = new URLSearchParams(location.search);
const siteId = params.get("site_id") || "";
const readKey = new URLSearchParams(location.hash.slice(1)).get("key");
const refreshMs = 1000 * (Number(document.body.dataset.refreshS) || 10);
const SVG_NS = "http://www.w3.org/2000/svg";
// Plausible refreshes its realtime count about this often.
const REALTIME_MS = 10_000;

const $ = (id) => document.getElementById(id);

function localToday(timezone) {
  // en-CA formats dates as YYYY-MM-DD.
  return new Intl.DateTimeFormat("en-CA", { timeZone: timezone }).format(new Date());
}

function query() {
  const q = new URLSearchParams({ site_id: siteId, period: $("period").value });
  if ($("date").value) q.set("date", $("date").value);
  if ($("timezone").value) q.set("timezone", $("timezone").value);
  return q;
}

async function api(path, extra, base) {
  const q = base || query();
  for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
  const headers = readKey ? { Authorization: `Bearer ${readKey}` } : {};
  const response = await fetch(`/api/v1/stats/${path}?${q}`, { headers });
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  return body;
}

const number = new Intl.NumberFormat("en-US");

// Seconds as Plausible shows a visit's duration: "45s", "3m 05s", "1h 02m 03s".
function duration(seconds) {
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  const two = (n) => String(n).padStart(2, "0");
  if (h) return `${h}h ${two(m)}m ${two(s)}s`;
  return m ? `${m}m ${two(s)}s` : `${s}s`;
}

const FORMATS = {
  bounce_rate: (v) => `${v}%`,
  visit_duration: duration,
};

function format(metric, value) {
  return (FORMATS[metric] || number.format)(value);
}

function showTotals(aggregate) {
  const r = aggregate.results;
  $("total-views").textContent = number.format(r.views.value);
  const approx = aggregate.visitors_approximate && r.visitors.value > 0 ? "≈" : "";
  $("total-visitors").textContent = approx + number.format(r.visitors.value);
  $("total-events").textContent = number.format(r.events.value);
  $("total-visits").textContent = number.format(r.visits.value);
  $("total-views-per-visit").textContent = number.format(r.views_per_visit.value);
  $("total-bounce-rate").textContent = format("bounce_rate", r.bounce_rate.value);
  $("total-visit-duration").textContent = format("visit_duration", r.visit_duration.value);
}

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function drawChart(series) {
  const width = 900, height = 240, left = 48, right = 12, top = 12, bottom = 28;
  const points = series.results;
  const max = Math.max(1, ...points.map((p) => p.views));
  const x = (i) => left + (points.length < 2 ? 0 : (i * (width - left - right)) / (points.length - 1));
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
                            "aria-label": "page views over time" });
  root.appendChild(svg("line", { class: "axis", x1: left, y1: y(0), x2: width - right, y2: y(0) }));
  root.appendChild(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: y(0) }));
  root.appendChild(svg("text", { x: left - 6, y: top + 4, "text-anchor": "end" }, number.format(max)));
  root.appendChild(svg("text", { x: left - 6, y: y(0), "text-anchor": "end" }, "0"));
  if (points.length) {
    const line = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.views).toFixed(1)}`).join("");
    const area = `${line}L${x(points.length - 1).toFixed(1)},${y(0)}L${x(0).toFixed(1)},${y(0)}Z`;
    root.appendChild(svg("path", { class: "area", d: area }));
    root.appendChild(svg("path", { class: "line", d: line, "data-points": points.length }));
    const labels = [0, Math.floor((points.length - 1) / 2), points.length - 1];
    for (const i of new Set(labels)) {
      root.appendChild(svg("text", { x: x(i), y: height - 8, "text-anchor": "middle" },
                           points[i].date.slice(0, 16)));
    }
  }
  $("chart").replaceChildren(root);
}

function showTable(id, breakdown, keys, metrics) {
  const names = [].concat(keys);
  const rows = breakdown.results.map((r) => {
    const tr = document.createElement("tr");
    for (const value of [...names.map((k) => r[k]), ...metrics.map((m) => format(m, r[m]))]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.appendChild(td);
    }
    return tr;
  });
  $(id).querySelector("tbody").replaceChildren(...rows);
  return rows;
}

// The custom event whose properties are shown, if any.
let selectedEvent = null;

function showCustomEvents(breakdown) {
  const rows = showTable("custom-events", breakdown, "event_type", ["events", "visitors"]);
  rows.forEach((tr, i) => {
    const name = breakdown.results[i].event_type;
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    tr.firstChild.replaceChildren(button);
    tr.dataset.event = name;
    tr.classList.toggle("selected", name === selectedEvent);
    tr.addEventListener("click", () => selectEvent(name));
  });
}

// [event, its properties' breakdown], or null when no event is selected.
async function eventProperties() {
  const name = selectedEvent;
  if (name === null) return null;
  const breakdown = await api("breakdown", { property: "event:props", filters: `event:name==${name}`,
                                             metrics: "events,visitors", limit: "50" });
  return [name, breakdown];
}

function showProperties(answer) {
  $("event-properties").hidden = answer === null;
  if (answer === null) return;
  const [name, breakdown] = answer;
  if (name !== selectedEvent) return;  // an answer for an earlier click
  $("selected-event").textContent = name;
  showTable("properties", breakdown, ["key", "value"], ["events", "visitors"]);
  $("no-properties").hidden = breakdown.results.length > 0;
  for (const tr of $("custom-events").querySelectorAll("tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.event === selectedEvent);
  }
}

async function selectEvent(name) {
  selectedEvent = name;
  try {
    showProperties(await eventProperties());
    $("status").textContent = "";
  } catch (error) {
    $("status").textContent = `Could not load properties: ${error.message}`;
  }
}

// Breakdowns by a hit's context: [table id, property, result key].
const CONTEXT_TABLES = [
  ["devices", "visit:device", "device"],
  ["browsers", "visit:browser", "browser"],
  ["systems", "visit:os", "os"],
  ["countries", "visit:country", "country"],
];

// The tabs of the tabbed panels: table id -> [property, result key, metrics].
const TABS = {
  "sources": ["visit:source", "source", ["visitors", "visits", "bounce_rate"]],
  "utm-medium": ["visit:utm_medium", "utm_medium", ["visitors", "visits", "bounce_rate"]],
  "utm-source": ["visit:utm_source", "utm_source", ["visitors", "visits", "bounce_rate"]],
  "utm-campaign": ["visit:utm_campaign", "utm_campaign", ["visitors", "visits", "bounce_rate"]],
  "top-paths": ["event:page", "path", ["views", "visitors"]],
  "entry-pages": ["visit:entry_page", "entry_page", ["visitors", "visits"]],
  "exit-pages": ["visit:exit_page", "exit_page", ["visitors", "visits"]],
};
// The tab shown in each panel; only its breakdown is asked for.
const shownTab = { sources: "sources", pages: "top-paths" };

async function tabBreakdown(tab) {
  const [property, , metrics] = TABS[tab];
  return [tab, await api("breakdown", { property, metrics: metrics.join(","), limit: "10" })];
}

function showTab([tab, breakdown]) {
  const [, key, metrics] = TABS[tab];
  showTable(tab, breakdown, key, metrics);
}

function selectTab(panel, tab) {
  shownTab[panel.dataset.panel] = tab;
  for (const button of panel.querySelectorAll("[data-tab]")) {
    const chosen = button.dataset.tab === tab;
    button.setAttribute("aria-selected", String(chosen));
    $(button.dataset.tab).hidden = !chosen;
  }
  tabBreakdown(tab).then(showTab, (error) => {
    $("status").textContent = `Could not load stats: ${error.message}`;
  });
}

async function refresh() {
  try {
    const interval = $("period").value === "day" ? "hour" : "day";
    const top10 = { metrics: "views,visitors", limit: "10" };
    const totals = "visitors,visits,views,views_per_visit,bounce_rate,visit_duration,events";
    const [aggregate, series, sources, pages, custom, properties, ...context] = await Promise.all([
      api("aggregate", { metrics: totals }),
      api("timeseries", { interval, metrics: "views" }),
      tabBreakdown(shownTab.sources),
      tabBreakdown(shownTab.pages),
      api("breakdown", { property: "event:name", filters: "event:name!=page_view",
                         metrics: "events,visitors", limit: "10" }),
      eventProperties(),
      ...CONTEXT_TABLES.map(([, property]) => api("breakdown", { property, ...top10 })),
    ]);
    showTotals(aggregate);
    drawChart(series);
    showTab(sources);
    showTab(pages);
    showCustomEvents(custom);
    showProperties(properties);
    CONTEXT_TABLES.forEach(([id, , key], i) => showTable(id, context[i], key, ["views", "visitors"]));
    $("status").textContent = "";
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (error) {
    $("status").textContent = `Could not load stats: ${error.message}`;
  }
}

async function refreshRealtime() {
  try {
    const count = await api("realtime/visitors", {}, new URLSearchParams({ site_id: siteId }));
    $("current-visitors").textContent = number.format(count);
    $("current-visitors-noun").textContent = count === 1 ? "visitor" : "visitors";
    $("realtime").dataset.loaded = "true";
  } catch (error) {
    $("current-visitors").textContent = "–";
  }
}

function start() {
  $("site").textContent = siteId;
  $("timezone").value = params.get("timezone") || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  if (params.get("period")) $("period").value = params.get("period");
  $("date").value = params.get("date") || localToday($("timezone").value);
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  for (const panel of document.querySelectorAll(".tabbed")) {
    for (const button of panel.querySelectorAll("[data-tab]")) {
      button.addEventListener("click", () => selectTab(panel, button.dataset.tab));
    }
  }
  refresh();
  setInterval(refresh, refreshMs);
  refreshRealtime();
  setInterval(refreshRealtime, REALTIME_MS);
}

start();
