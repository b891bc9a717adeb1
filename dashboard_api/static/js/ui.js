// Small DOM helpers: elements built with text nodes only (never innerHTML with data), icons as
// inline SVG, status labels (text + icon + colour: colour is never the only signal), times.

const SVG_NS = "http://www.w3.org/2000/svg";

// h("div", {class: "x", onclick: f, "aria-label": "…"}, child, "text", [more])
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  appendAll(el, children);
  return el;
}

// el.append(...) without the null/false children (DOM append would write "null")
export function append(el, ...children) {
  appendAll(el, children);
  return el;
}

function appendAll(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  appendAll(el, children);
  return el;
}

// -- icons ----------------------------------------------------------------------------------
const ICONS = {
  ok: ["M12 2a10 10 0 1 0 0 20a10 10 0 1 0 0-20z", "M7 12.5l3.2 3.2L17 9"],
  warn: ["M12 3L2 21h20z", "M12 10v5", "M12 17.5v.5"],
  critical: ["M8 2h8l6 6v8l-6 6H8l-6-6V8z", "M12 7v6", "M12 16.5v.5"],
  offline: ["M12 2a10 10 0 1 0 0 20a10 10 0 1 0 0-20z", "M8 8l8 8", "M16 8l-8 8"],
  unknown: ["M12 2a10 10 0 1 0 0 20a10 10 0 1 0 0-20z", "M9.5 9.5a2.5 2.5 0 1 1 3.5 2.3c-.7.3-1 .8-1 1.5V14", "M12 17v.5"],
  clock: ["M12 2a10 10 0 1 0 0 20a10 10 0 1 0 0-20z", "M12 6v6l4 2"],
  info: ["M12 2a10 10 0 1 0 0 20a10 10 0 1 0 0-20z", "M12 11v6", "M12 7.5v.5"],
  check: ["M5 12.5l4.5 4.5L19 7"],
  mute: ["M4 9h4l5-4v14l-5-4H4z", "M16 9l5 6", "M21 9l-5 6"],
  wrench: ["M14.5 6.5a4 4 0 0 0 5 5l-9 9a2 2 0 0 1-3-3l9-9a4 4 0 0 0-2-2z"],
  box: ["M3 7l9-4l9 4v10l-9 4l-9-4z", "M3 7l9 4l9-4", "M12 11v10"],
  live: ["M12 9a3 3 0 1 0 0 6a3 3 0 1 0 0-6z", "M6 6a8.5 8.5 0 0 0 0 12", "M18 6a8.5 8.5 0 0 1 0 12"],
  cut: ["M4 4l16 16", "M6 10a6 6 0 0 1 8-4", "M18 14a6 6 0 0 1-1.5 2"],
  bell: ["M6 17V11a6 6 0 0 1 12 0v6l2 2H4z", "M10 21h4"],
  person: ["M12 4a4 4 0 1 0 0 8a4 4 0 1 0 0-8z", "M4 21a8 8 0 0 1 16 0"],
};

export function icon(name, cls = "") {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", `icon ${cls}`.trim());
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  for (const d of ICONS[name] || ICONS.unknown) {
    const p = document.createElementNS(SVG_NS, "path");
    p.setAttribute("d", d);
    svg.append(p);
  }
  return svg;
}

// A status label: icon + words, styled by tone (ok, warn, bad, crit, muted, info).
export function badge(tone, iconName, text, title) {
  return h("span", { class: `badge tone-${tone}`, title }, icon(iconName), h("span", {}, text));
}

export const DEVICE_STATUS = {
  online: { tone: "ok", icon: "ok", text: "Online" },
  degraded: { tone: "warn", icon: "warn", text: "Degraded" },
  stale: { tone: "warn", icon: "clock", text: "Stale" },
  offline: { tone: "bad", icon: "offline", text: "Offline" },
  misconfigured: { tone: "bad", icon: "wrench", text: "Misconfigured" },
  unknown: { tone: "muted", icon: "unknown", text: "Unknown" },
};

export const SEVERITY = {
  critical: { tone: "crit", icon: "critical", text: "Critical", rank: 3 },
  warning: { tone: "warn", icon: "warn", text: "Warning", rank: 2 },
  info: { tone: "info", icon: "info", text: "Info", rank: 1 },
};

export const ALERT_STATE = {
  active: { tone: "bad", icon: "bell", text: "Active, not acknowledged" },
  acknowledged: { tone: "ok", icon: "person", text: "Acknowledged" },
  resolved: { tone: "muted", icon: "check", text: "Resolved" },
};

// Stock levels (inventory/status.py)
export const STOCK_LEVEL = {
  out: { tone: "crit", icon: "critical", text: "Out of stock", rank: 5 },
  below_min: { tone: "bad", icon: "critical", text: "Below minimum", rank: 4 },
  below_reorder: { tone: "warn", icon: "warn", text: "Below reorder point", rank: 3 },
  in_stock: { tone: "ok", icon: "ok", text: "In stock", rank: 1 },
  above_par: { tone: "info", icon: "info", text: "Above par", rank: 0 },
};

export function statusBadge(table, key) {
  const s = table[key] || { tone: "muted", icon: "unknown", text: String(key ?? "unknown") };
  return badge(s.tone, s.icon, s.text);
}

// -- formatting -----------------------------------------------------------------------------
export function clock(ts) {
  if (ts === null || ts === undefined) return "never";
  const d = new Date(ts * 1000);
  const today = new Date().toDateString() === d.toDateString();
  const t = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return today ? t : `${d.toLocaleDateString([], { day: "numeric", month: "short" })} ${t}`;
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, seconds);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function since(ts) {
  return ts ? ago(Date.now() / 1000 - ts) : "";
}

export function duration(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${+(seconds / 3600).toFixed(1)} h`;
  return `${+(seconds / 86400).toFixed(1)} d`;
}

export function num(v, digits = 1) {
  if (typeof v !== "number") return String(v ?? "");
  return Number.isInteger(v) ? String(v) : v.toFixed(digits);
}

// A reading: value and unit; stale values are labelled (not only greyed), bad ones named.
// A metric's name for people: temperature_c -> "temperature" (the unit is shown with the value).
export function metricLabel(metric) {
  return metric.replace(/_(c|g|pct|pa|h)$/, "").replaceAll("_", " ");
}

export function reading(metric, r) {
  const label = metricLabel(metric);
  let value;
  if (r.quality === "bad") value = h("span", { class: "reading-bad" }, icon("warn"), " sensor failure");
  else if (typeof r.value === "boolean") value = r.value ? "yes" : "no";
  else value = `${num(r.value)}${r.unit ? ` ${r.unit}` : ""}`;
  const stale = r.quality === "stale";
  return h(
    "span",
    { class: `reading${stale ? " stale-value" : ""}` },
    h("span", { class: "reading-name" }, `${label}: `),
    value,
    stale ? h("span", { class: "stale-tag" }, ` (stale · ${ago(r.age_s)})`) : null,
  );
}

// -- keyed lists ----------------------------------------------------------------------------
// Brings `container`'s children in line with `items`: reuses each item's element (found by
// data-key), so open forms and the focus survive a refresh; moves nodes only when the order
// changed.
export function keyed(container, items, keyOf, create, update) {
  const old = new Map();
  for (const el of Array.from(container.children)) {
    if (el.dataset.key !== undefined) old.set(el.dataset.key, el);
  }
  const wanted = [];
  for (const item of items) {
    const key = String(keyOf(item));
    let el = old.get(key);
    if (el) old.delete(key);
    else {
      el = create(item);
      el.dataset.key = key;
    }
    update(el, item);
    wanted.push(el);
  }
  for (const el of old.values()) el.remove();
  const current = Array.from(container.children).filter((el) => el.dataset.key !== undefined);
  const same = current.length === wanted.length && current.every((el, i) => el === wanted[i]);
  if (!same) for (const el of wanted) container.append(el);
}

// -- messages -------------------------------------------------------------------------------
let toastTimer = null;
export function toast(text) {
  const t = document.getElementById("toast");
  if (!t) return;
  t.textContent = text;
  t.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove("shown"), 5000);
}

export function errorText(e) {
  if (e?.status === 403) return "Your role may not do this.";
  if (e?.status === 429) return "Too many attempts: wait a minute and try again.";
  if (e instanceof TypeError) return "Cannot reach eqmon: check the network and try again.";
  return e?.message || String(e);
}

// A labelled free-text field that says it is not for patient identifiers.
let fieldSeq = 0;
export function textField({ label, name, maxlength, required = false, multiline = false, value = "" }) {
  const id = `f${++fieldSeq}`;
  const hintId = `${id}-hint`;
  const input = multiline
    ? h("textarea", { id, name, maxlength, rows: 2, required, "aria-describedby": hintId })
    : h("input", { id, name, type: "text", maxlength, required, "aria-describedby": hintId, autocomplete: "off" });
  input.value = value;
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    h("span", { class: "hint", id: hintId }, `No patient identifiers. At most ${maxlength} characters.`),
  );
}

export function field(label, control, hint) {
  const id = control.id || `f${++fieldSeq}`;
  control.id = id;
  let hintEl = null;
  if (hint) {
    hintEl = h("span", { class: "hint", id: `${id}-hint` }, hint);
    control.setAttribute("aria-describedby", `${id}-hint`);
  }
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hintEl);
}
