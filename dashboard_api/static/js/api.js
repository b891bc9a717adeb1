// The dashboard's only door to the API: every URL, query and body shape is here, so adapting to
// a changed route is one edit. Plain fetch(); the session token rides in sessionStorage (gone
// when the tab closes) and goes out as "Authorization: Bearer".

const SESSION_KEY = "eqmon.session";
const PAGE_LIMIT = 100; // items per page asked of a paginated list

// Length limits of the API's free-text fields (dashboard_api/routers/*.py): the forms' maxlength.
export const LIMITS = {
  note: 500, // alert acknowledgement / resolution note
  reason: 500, // silence reason
  txNote: 500, // stock transaction note
  username: 100,
  password: 200,
};

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export const session = {
  get() {
    try {
      return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    } catch {
      return null;
    }
  },
  set(s) {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  },
  clear() {
    sessionStorage.removeItem(SESSION_KEY);
  },
  token() {
    return this.get()?.token || "";
  },
  can(scope) {
    return Boolean(this.get()?.scopes?.includes(scope));
  },
};

function url(path, query) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, String(v));
  }
  return u.pathname + u.search;
}

async function errorOf(r) {
  let body = null;
  try {
    body = await r.json();
  } catch {
    /* not JSON */
  }
  const e = body?.error;
  return new ApiError(r.status, e?.code || `http_${r.status}`, e?.message || `HTTP ${r.status}`, e?.field ?? null);
}

async function request(method, path, { query, json, form, headers = {}, optional = false } = {}) {
  const h = { Accept: "application/json", ...headers };
  const token = session.token();
  if (token) h.Authorization = `Bearer ${token}`;
  let body;
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = new URLSearchParams(form);
  }
  const r = await fetch(url(path, query), { method, headers: h, body, cache: "no-store" });
  if (r.status === 401 && token) {
    // expired or revoked: back to the login form
    session.clear();
    window.dispatchEvent(new CustomEvent("eqmon:unauthorized"));
  }
  if (optional && (r.status === 404 || r.status === 501 || r.status === 503)) {
    const e = await errorOf(r);
    // a route missing (this server has no such feature) or the feature switched off
    if (r.status !== 404 || /^not found$/i.test(e.message)) return null;
    throw e;
  }
  if (!r.ok) throw await errorOf(r);
  if (r.status === 204) return null;
  return r.json();
}

// A list answer, old style (a JSON array) or paginated ({items, next_cursor}): the items.
function itemsOf(body) {
  if (body === null) return null;
  if (Array.isArray(body)) return body;
  return body.items ?? body.lines ?? [];
}

// Every page of a paginated list, up to `maxPages` pages.
async function all(path, query = {}, { optional = false, maxPages = 10 } = {}) {
  let out = [];
  let cursor;
  for (let i = 0; i < maxPages; i++) {
    const body = await request("GET", path, { query: { ...query, cursor }, optional });
    if (body === null) return null;
    out = out.concat(itemsOf(body));
    cursor = Array.isArray(body) ? null : body.next_cursor;
    if (!cursor) break;
  }
  return out;
}

// A key for one submission of a stock change: the same key on a retry or a double submit, a
// new one for the next submission (the API applies a key once).
export function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export const api = {
  // -- session ----------------------------------------------------------------------------
  async login(username, password) {
    const t = await request("POST", "/api/v1/auth/token", { form: { username, password } });
    const s = { token: t.access_token, name: t.name, role: t.role, scopes: t.scopes };
    session.set(s);
    return s;
  },
  async logout() {
    try {
      await request("POST", "/api/v1/auth/logout");
    } finally {
      session.clear();
    }
  },
  me: () => request("GET", "/api/v1/auth/me"),
  health: () => request("GET", "/healthz"),

  // -- equipment and alerts ---------------------------------------------------------------
  devices: () => all("/api/v1/devices", { limit: PAGE_LIMIT }),
  device: (id) => request("GET", `/api/v1/devices/${encodeURIComponent(id)}`),
  aggregate: (id, metric, since, window = "1m") =>
    request("GET", `/api/v1/devices/${encodeURIComponent(id)}/history/aggregate`, {
      query: { metric, window, since: Math.floor(since) },
      optional: true,
    }),
  // Open alerts (active and acknowledged: incidents included, rule "incident-…"), every page.
  openAlerts: () => all("/api/v1/alerts", { open_only: true, limit: PAGE_LIMIT }),
  // The latest resolved alerts, newest first.
  resolvedAlerts: async (n) =>
    itemsOf(await request("GET", "/api/v1/alerts", { query: { state: "resolved", limit: n } })).filter(
      (a) => a.state === "resolved",
    ),
  // Conditions whose delay is running: alerts to come if they still hold at `due`.
  pending: () => request("GET", "/api/v1/alerts/pending"),
  alert: (id) => request("GET", `/api/v1/alerts/${encodeURIComponent(id)}`),
  ack: (id, note) => request("POST", `/api/v1/alerts/${encodeURIComponent(id)}/ack`, { json: { note } }),
  resolve: (id, note) =>
    request("POST", `/api/v1/alerts/${encodeURIComponent(id)}/resolve`, { json: { note } }),
  // Open incidents (a group of devices down: one alert for all) with their devices.
  incidents: () => all("/api/v1/incidents", { open_only: true, limit: PAGE_LIMIT }, { optional: true, maxPages: 1 }),
  silences: () => all("/api/v1/silences", {}, { maxPages: 1 }),
  createSilence: (body) => request("POST", "/api/v1/silences", { json: body }),
  cancelSilence: (id) => request("DELETE", `/api/v1/silences/${encodeURIComponent(id)}`),

  // -- supplies ---------------------------------------------------------------------------
  levels: () => all("/api/v1/inventory/levels", { limit: 1000 }, { optional: true }),
  roomStatus: (locationId) =>
    request("GET", `/api/v1/inventory/rooms/${encodeURIComponent(locationId)}/status`, { optional: true }),
  // {generated_at, lines}: most urgent first
  pickList: async () => itemsOf(await request("GET", "/api/v1/inventory/pick-list", { optional: true })),
  // A stock count: `counted` units found in the bin of item `sku` at `locationId`.
  count: ({ sku, locationId, counted, note }, key) =>
    request("POST", "/api/v1/inventory/transactions", {
      json: { kind: "count", sku, location_id: locationId, quantity: counted, note },
      headers: { "Idempotency-Key": key },
    }),

  // -- simulators (testing) ---------------------------------------------------------------
  // [{id, name, location, protocol, model, active_faults, faults: [{name, description, params}]}];
  // empty (or null: an older eqmon) when no simulators run
  simulators: () => all("/api/v1/simulators", { limit: PAGE_LIMIT }, { optional: true, maxPages: 1 }),
  inject: (deviceId, fault, params = {}) =>
    request("POST", `/api/v1/simulators/${encodeURIComponent(deviceId)}/faults`, { json: { fault, params } }),
  clearFaults: (deviceId) => request("DELETE", `/api/v1/simulators/${encodeURIComponent(deviceId)}/faults`),
};

// The live stream's address and how to authorise it (live.js reads it with fetch()).
export const EVENTS_URL = "/api/v1/events";
