// The coordinator board: what is wrong now (open alerts and incidents first), the equipment by
// location with its status, a device's last 24 h on click, and the silences. Live: an alert or
// device event from the stream reloads what it touches.

import { api, LIMITS } from "./api.js";
import { lineChart } from "./chart.js";
import {
  ALERT_STATE,
  DEVICE_STATUS,
  SEVERITY,
  append,
  badge,
  clock,
  duration,
  errorText,
  field,
  h,
  icon,
  keyed,
  metricLabel,
  num,
  reading,
  replace,
  since,
  statusBadge,
  textField,
  toast,
} from "./ui.js";

const OPEN = new Set(["active", "acknowledged"]);
const RESOLVED_SHOWN = 10;
const DAY_S = 86400;
const DURATIONS = [
  [900, "15 minutes"],
  [1800, "30 minutes"],
  [3600, "1 hour"],
  [7200, "2 hours"],
  [14400, "4 hours"],
  [28800, "8 hours (a shift)"],
  [86400, "24 hours"],
];

export function mount(root, ctx) {
  const canAck = ctx.can("alerts:write");
  const canSilence = ctx.can("silences:write");
  // open: open alerts (incidents included); incidents: id -> the incident's devices (when the
  // API lists them); pending: conditions whose delay runs
  const data = { devices: [], open: [], resolved: [], pending: [], incidents: new Map(), silences: [] };
  const names = new Map(); // device id -> device

  // -- skeleton -----------------------------------------------------------------------------
  const summary = h("p", { class: "summary", id: "board-summary" }, "Loading…");
  const alertList = h("ul", { class: "alert-list", id: "alert-list", "aria-labelledby": "alerts-h" });
  const alertsEmpty = h("p", { class: "empty", hidden: true }, icon("ok"), " No open alerts.");
  const alertsCount = h("span", { class: "count" });
  const pendingBox = h(
    "div",
    { class: "pending", hidden: true },
    h("h3", { id: "pending-h" }, "Building up: alerts to come if the condition holds"),
  );
  const pendingList = h("ul", { class: "pending-list", "aria-labelledby": "pending-h" });
  pendingBox.append(pendingList);
  const incidentsSection = h(
    "section",
    { class: "panel", "aria-labelledby": "incidents-h", hidden: true },
    h("h2", { id: "incidents-h" }, "Open incidents"),
    h("p", { class: "sub" }, "A group of devices down together (a gateway, the broker, a location): one alert for all."),
  );
  const incidentList = h("ul", { class: "alert-list", id: "incident-list", "aria-labelledby": "incidents-h" });
  incidentsSection.append(incidentList);
  const locations = h("div", { class: "locations", id: "locations" });
  const silenceList = h("ul", { class: "silence-list", id: "silence-list", "aria-labelledby": "silences-h" });
  const silencesEmpty = h("p", { class: "empty", hidden: true }, "No silences or maintenance windows in force.");
  const resolvedList = h("ul", { class: "alert-list resolved" });
  const resolvedSummary = h("summary", {}, "Recently resolved alerts");
  const dialog = deviceDialog();

  append(
    root,
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Coordinator board"),
      summary,
      canAck ? null : h("p", { class: "notice" }, icon("info"), " Read only: your role cannot acknowledge alerts."),
    ),
    incidentsSection,
    h(
      "section",
      { class: "panel", "aria-labelledby": "alerts-h" },
      h("h2", { id: "alerts-h" }, "Open alerts ", alertsCount),
      alertsEmpty,
      alertList,
      pendingBox,
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "equipment-h" },
      h("h2", { id: "equipment-h" }, "Equipment by location"),
      h("p", { class: "sub" }, "Select a device for its details and a chart of its last 24 hours."),
      locations,
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "silences-h" },
      h("h2", { id: "silences-h" }, "Silences and maintenance windows"),
      silencesEmpty,
      silenceList,
      canSilence ? silenceForm() : null,
    ),
    h("details", { class: "panel" }, resolvedSummary, resolvedList),
    dialog.el,
  );

  // -- loading ------------------------------------------------------------------------------
  let alive = true;
  const pending = new Set();
  let debounce = null;
  function schedule(...what) {
    what.forEach((w) => pending.add(w));
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      const run = [...pending];
      pending.clear();
      load(...run);
    }, 150);
  }

  // Each list's latest request wins: an answer to an older one (or one that left before an
  // acknowledgement's own answer was applied) is dropped, never shown over newer data.
  const generation = { devices: 0, open: 0, resolved: 0, pending: 0, incidents: 0, silences: 0 };
  function fetchInto(key, request, apply) {
    const g = ++generation[key];
    return request().then((value) => {
      if (g === generation[key]) apply(value);
    });
  }

  async function load(...what) {
    const all = what.length === 0;
    const jobs = [];
    if (all || what.includes("devices")) jobs.push(fetchInto("devices", api.devices, (d) => (data.devices = d)));
    if (all || what.includes("alerts")) {
      jobs.push(fetchInto("open", api.openAlerts, (a) => (data.open = a)));
      jobs.push(fetchInto("resolved", () => api.resolvedAlerts(RESOLVED_SHOWN), (a) => (data.resolved = a)));
    }
    if (all || what.includes("alerts") || what.includes("pending")) {
      jobs.push(fetchInto("pending", api.pending, (p) => (data.pending = p)));
    }
    if (all || what.includes("incidents")) {
      jobs.push(
        fetchInto("incidents", api.incidents, (list) => (data.incidents = new Map((list || []).map((i) => [i.id, i])))).catch(
          () => {},
        ),
      );
    }
    if (all || what.includes("silences")) jobs.push(fetchInto("silences", api.silences, (s) => (data.silences = s)));
    const results = await Promise.allSettled(jobs);
    if (!alive) return;
    const failed = results.find((r) => r.status === "rejected");
    render();
    if (failed) summary.textContent = `Cannot load everything: ${errorText(failed.reason)}`;
  }

  // -- rendering ----------------------------------------------------------------------------
  function render() {
    names.clear();
    for (const d of data.devices) names.set(d.id, d);
    const open = data.open.filter((a) => OPEN.has(a.state)).sort(byUrgency);
    const incidents = open.filter(isIncident);
    const alerts = open.filter((a) => !isIncident(a));
    const resolved = data.resolved
      .filter((a) => a.state === "resolved" && !open.some((o) => o.id === a.id))
      .sort((a, b) => (b.resolved_at || 0) - (a.resolved_at || 0))
      .slice(0, RESOLVED_SHOWN);

    const crit = open.filter((a) => a.severity === "critical").length;
    const unacked = open.filter((a) => a.state === "active").length;
    const byStatus = {};
    for (const d of data.devices) byStatus[d.status] = (byStatus[d.status] || 0) + 1;
    const statusText = Object.entries(byStatus)
      .map(([s, n]) => `${n} ${DEVICE_STATUS[s]?.text.toLowerCase() || s}`)
      .join(", ");
    summary.textContent =
      `${open.length} open alert${open.length === 1 ? "" : "s"}` +
      (open.length ? ` (${crit} critical, ${unacked} not acknowledged)` : "") +
      ` · ${data.devices.length} devices: ${statusText || "none"} · updated ${clock(Date.now() / 1000)}`;

    alertsCount.textContent = `(${alerts.length})`;
    alertsEmpty.hidden = alerts.length > 0;
    keyed(alertList, alerts, (a) => a.id, createAlert, updateAlert);
    incidentsSection.hidden = incidents.length === 0;
    keyed(incidentList, incidents, (a) => a.id, createAlert, updateAlert);
    resolvedSummary.textContent = `Recently resolved alerts (${resolved.length})`;
    keyed(resolvedList, resolved, (a) => a.id, createAlert, updateAlert);
    renderPending();
    renderEquipment(open);
    renderSilences();
    dialog.refresh();
  }

  function byUrgency(a, b) {
    return (
      (a.state === "active" ? 0 : 1) - (b.state === "active" ? 0 : 1) ||
      (SEVERITY[b.severity]?.rank || 0) - (SEVERITY[a.severity]?.rank || 0) ||
      b.started_at - a.started_at
    );
  }

  // -- alerts -------------------------------------------------------------------------------
  function createAlert(a) {
    const titleId = `alert-${cssId(a.id)}-title`;
    const li = h("li", { class: "alert", "aria-labelledby": titleId });
    li.title_ = h("p", { class: "alert-title", id: titleId });
    li.meta = h("p", { class: "alert-meta" });
    li.stateLine = h("p", { class: "alert-state" });
    li.actions = h("div", { class: "alert-actions" });
    li.formSlot = h("div", { class: "alert-form" });
    li.append(h("div", { class: "alert-body" }, li.title_, li.meta, li.stateLine), li.actions, li.formSlot);
    return li;
  }

  function updateAlert(li, a) {
    const sev = SEVERITY[a.severity] || SEVERITY.info;
    li.className = `alert sev-${a.severity} state-${a.state}`;
    li.dataset.state = a.state;
    li.dataset.device = a.device_id;
    li.dataset.rule = a.rule_id;
    replace(li.title_, badge(sev.tone, sev.icon, sev.text), " ", h("span", { class: "alert-message" }, a.message.replace(/^(CRITICAL|WARNING|INFO)\s+/, "")));
    const dev = names.get(a.device_id);
    const members = isIncident(a) ? data.incidents.get(a.id)?.device_ids : null;
    replace(
      li.meta,
      dev ? `${dev.name} · ${dev.location}` : [where(a.device_id), a.location].filter(Boolean).join(" · "),
      members?.length ? ` · ${members.length} device${members.length === 1 ? "" : "s"}: ${members.map((m) => names.get(m)?.name || m).join(", ")}` : "",
      ` · since ${clock(a.started_at)} (${since(a.started_at)})`,
      a.value !== null && a.value !== undefined && a.value !== "" ? ` · value ${num(a.value)}` : "",
    );
    const st = ALERT_STATE[a.state] || ALERT_STATE.active;
    const parts = [badge(st.tone, st.icon, st.text)];
    if (a.state === "acknowledged") {
      parts.push(` by ${a.acknowledged_by || "someone"} at ${clock(a.acknowledged_at)}`);
    }
    if (a.state === "resolved") {
      parts.push(` at ${clock(a.resolved_at)}${a.resolved_by ? ` by ${a.resolved_by}` : ""}`);
    }
    if (a.note) parts.push(h("span", { class: "alert-note" }, ` — “${a.note}”`));
    if (a.silenced) {
      const s = a.silenced;
      parts.push(
        " ",
        badge("muted", s.kind === "maintenance" ? "wrench" : "mute", s.kind === "maintenance" ? "In maintenance" : "Silenced"),
        ` until ${clock(s.until)}${s.owner ? ` (${s.owner})` : ""}`,
      );
    }
    replace(li.stateLine, parts);

    // actions: left alone while a form is open (its text and the focus survive a refresh)
    if (li.formSlot.childElementCount) return;
    const buttons = [];
    if (canAck && a.state === "active") {
      buttons.push(
        h("button", { type: "button", class: "primary", "aria-describedby": li.title_.id, onclick: () => noteForm(li, a, "ack") }, "Acknowledge"),
      );
    }
    if (canAck && OPEN.has(a.state)) {
      buttons.push(
        h("button", { type: "button", "aria-describedby": li.title_.id, onclick: () => noteForm(li, a, "resolve") }, "Resolve…"),
      );
    }
    if (names.has(a.device_id)) {
      buttons.push(
        h("button", { type: "button", class: "quiet", "aria-describedby": li.title_.id, onclick: (e) => dialog.open(a.device_id, e.currentTarget, a.metric) }, "Chart"),
      );
    }
    replace(li.actions, buttons);
  }

  function noteForm(li, a, kind) {
    const ack = kind === "ack";
    const f = textField({
      label: ack ? "Comment: what is being done" : "Resolution note: what was done",
      name: "note",
      maxlength: LIMITS.note,
      required: true,
      multiline: true,
    });
    const err = h("p", { class: "form-error", role: "alert" });
    const submit = h("button", { type: "submit", class: "primary" }, ack ? "Acknowledge alert" : "Resolve alert");
    const close = () => {
      li.formSlot.replaceChildren();
      updateAlert(li, data.open.find((x) => x.id === a.id) || a);
      li.actions.querySelector("button")?.focus();
    };
    const form = h(
      "form",
      {
        class: "note-form",
        "aria-label": ack ? "Acknowledge alert" : "Resolve alert",
        onsubmit: async (e) => {
          e.preventDefault();
          if (submit.disabled) return;
          submit.disabled = true;
          err.textContent = "";
          const note = form.elements.note.value.trim();
          try {
            const updated = ack ? await api.ack(a.id, note) : await api.resolve(a.id, note);
            upsert(updated);
            li.formSlot.replaceChildren();
            render();
            toast(ack ? "Alert acknowledged." : "Alert resolved.");
            (li.isConnected ? li.actions.querySelector("button") : alertList.querySelector("button"))?.focus();
          } catch (ex) {
            err.textContent = `Not saved: ${errorText(ex)}`;
            submit.disabled = false;
          }
        },
        onkeydown: (e) => {
          if (e.key === "Escape") close();
        },
      },
      f,
      h("div", { class: "form-actions" }, submit, h("button", { type: "button", onclick: close }, "Cancel")),
      err,
    );
    li.actions.replaceChildren();
    li.formSlot.replaceChildren(form);
    form.elements.note.focus();
  }

  // An alert as the API sent it after a change (an answer or a live event): into the lists.
  function upsert(alert) {
    if (!alert || !alert.id) return;
    generation.open++; // lists asked for before this answer are out of date
    generation.resolved++;
    data.open = data.open.filter((x) => x.id !== alert.id);
    data.resolved = data.resolved.filter((x) => x.id !== alert.id);
    (OPEN.has(alert.state) ? data.open : data.resolved).unshift(alert);
  }

  // -- conditions building up ---------------------------------------------------------------
  function renderPending() {
    const list = (data.pending || []).slice().sort((a, b) => a.due - b.due);
    pendingBox.hidden = list.length === 0;
    keyed(
      pendingList,
      list,
      (p) => `${p.rule_id}|${p.device_id}|${p.metric}`,
      () => h("li", { class: "pending-item" }),
      (li, p) => {
        const sev = SEVERITY[p.severity] || SEVERITY.info;
        const left = p.due - Date.now() / 1000;
        replace(
          li,
          badge("muted", "clock", `${sev.text} ${left > 0 ? `in ${duration(left)}` : "due now"}`),
          " ",
          p.message || `${names.get(p.device_id)?.name || p.device_id}: ${p.rule_id}`,
        );
      },
    );
  }

  // -- equipment ----------------------------------------------------------------------------
  function renderEquipment(open) {
    const groups = new Map();
    for (const d of data.devices) {
      if (!groups.has(d.location)) groups.set(d.location, []);
      groups.get(d.location).push(d);
    }
    // locations with open alerts first, then by name
    const alerted = new Set(open.map((a) => names.get(a.device_id)?.location));
    const order = [...groups.keys()].sort((a, b) => alerted.has(b) - alerted.has(a) || a.localeCompare(b));
    keyed(
      locations,
      order.map((loc) => ({ loc, devices: groups.get(loc) })),
      (g) => g.loc,
      (g) => {
        const id = `loc-${cssId(g.loc)}`;
        const sec = h("section", { class: "location", "aria-labelledby": id });
        sec.heading = h("h3", { id });
        sec.grid = h("ul", { class: "device-grid", "aria-labelledby": id });
        sec.append(sec.heading, sec.grid);
        return sec;
      },
      (sec, g) => {
        sec.heading.textContent = g.loc;
        keyed(sec.grid, g.devices, (d) => d.id, createDevice, updateDevice);
      },
    );
  }

  function createDevice(d) {
    const li = h("li", {});
    li.button = h("button", { type: "button", class: "device-card", onclick: (e) => dialog.open(d.id, e.currentTarget) });
    li.append(li.button);
    return li;
  }

  function updateDevice(li, d) {
    const st = DEVICE_STATUS[d.status] || DEVICE_STATUS.unknown;
    const worst = d.open_alerts.reduce((w, a) => ((SEVERITY[a.severity]?.rank || 0) > (SEVERITY[w]?.rank || 0) ? a.severity : w), null);
    li.button.className = `device-card tone-${worst ? SEVERITY[worst].tone : st.tone}`;
    li.button.dataset.device = d.id;
    li.button.dataset.status = d.status;
    const main = mainMetric(d);
    const flags = Object.entries(d.readings)
      .filter(([m, r]) => r.value === true && /door_open|fault/.test(m))
      .map(([m]) => badge("warn", "warn", metricLabel(m)));
    replace(
      li.button,
      h("span", { class: "device-name" }, d.name),
      h("span", { class: "device-status" }, badge(st.tone, st.icon, st.text)),
      worst
        ? h(
            "span",
            { class: "device-alerts" },
            badge(SEVERITY[worst].tone, SEVERITY[worst].icon, `${d.open_alerts.length} open alert${d.open_alerts.length === 1 ? "" : "s"}`),
          )
        : null,
      d.maintenance ? h("span", {}, badge("muted", "wrench", "In maintenance")) : null,
      main ? h("span", { class: "device-reading" }, reading(main, d.readings[main])) : h("span", { class: "sub" }, "No readings yet"),
      flags.length ? h("span", { class: "device-flags" }, flags) : null,
      h("span", { class: "device-seen sub" }, d.last_seen ? `seen ${since(d.last_seen)}` : "never seen"),
      h("span", { class: "sr-only" }, ". Show details and 24-hour chart"),
    );
  }

  // -- device dialog: details and the last 24 h ---------------------------------------------
  function deviceDialog() {
    const title = h("h2", { id: "device-dialog-h" });
    const info = h("div", { class: "device-info" });
    const select = h("select", { id: "chart-metric", name: "metric" });
    const chartBox = h("div", { class: "chart-box", "aria-live": "polite" });
    const closeBtn = h("button", { type: "button", class: "close", onclick: () => el.close() }, "Close");
    const el = h(
      "dialog",
      { class: "device-dialog", "aria-labelledby": "device-dialog-h" },
      h("div", { class: "dialog-head" }, title, closeBtn),
      info,
      h("div", { class: "chart-controls" }, field("Metric", select)),
      chartBox,
    );
    let deviceId = null;
    let seq = 0;
    select.addEventListener("change", () => loadChart());
    el.addEventListener("close", () => {
      deviceId = null;
    });

    function numericMetrics(d) {
      return Object.entries(d.readings)
        .filter(([, r]) => typeof r.value === "number" || (r.value === null && r.unit))
        .map(([m]) => m);
    }

    function fill() {
      const d = names.get(deviceId);
      if (!d) return;
      title.textContent = d.name;
      const st = DEVICE_STATUS[d.status] || DEVICE_STATUS.unknown;
      replace(
        info,
        h(
          "p",
          {},
          badge(st.tone, st.icon, st.text),
          ` since ${clock(d.status_since)} · ${d.location} · ${d.kind.replaceAll("_", " ")} · ${d.id}`,
        ),
        d.last_error && d.status !== "online" ? h("p", { class: "sub" }, `Last error: ${d.last_error}`) : null,
        h(
          "ul",
          { class: "readings" },
          Object.entries(d.readings).map(([m, r]) => h("li", {}, reading(m, r))),
        ),
      );
    }

    async function loadChart() {
      const metric = select.value;
      if (!deviceId || !metric) {
        replace(chartBox, h("p", { class: "empty" }, "No numeric readings to chart."));
        return;
      }
      const mine = ++seq;
      const now = Date.now() / 1000;
      replace(chartBox, h("p", { class: "sub" }, "Loading chart…"));
      try {
        const agg = await api.aggregate(deviceId, metric, now - DAY_S);
        if (mine !== seq) return;
        if (agg === null) {
          replace(chartBox, h("p", { class: "empty" }, "No history store is configured: no chart."));
          return;
        }
        const points = agg.points.filter((p) => Number.isFinite(p.mean));
        const t0 = points.length ? Math.max(now - DAY_S, points[0].ts - 60) : now - DAY_S;
        const unit = names.get(deviceId)?.readings[metric]?.unit || "";
        const label = metricLabel(metric);
        replace(
          chartBox,
          h(
            "p",
            { class: "chart-caption" },
            `${label}${unit ? ` (${unit})` : ""}, per minute: mean line, min–max band. `,
            t0 > now - DAY_S + 120 ? `Last 24 h; data since ${clock(t0)}.` : "Last 24 h.",
          ),
          lineChart({ points, t0, t1: now, unit, title: `${names.get(deviceId)?.name}: ${label}` }),
        );
      } catch (ex) {
        if (mine === seq) replace(chartBox, h("p", { class: "form-error" }, `No chart: ${errorText(ex)}`));
      }
    }

    return {
      el,
      open(id, opener, metric) {
        deviceId = id;
        const d = names.get(id);
        if (!d) return;
        const metrics = numericMetrics(d);
        replace(select, metrics.map((m) => h("option", { value: m }, metricLabel(m))));
        select.value = metric && metrics.includes(metric) ? metric : mainMetric(d) && metrics.includes(mainMetric(d)) ? mainMetric(d) : metrics[0] || "";
        fill();
        if (!el.open) el.showModal();
        closeBtn.focus();
        loadChart();
      },
      refresh() {
        if (deviceId && el.open) fill();
      },
    };
  }

  // -- silences -----------------------------------------------------------------------------
  function renderSilences() {
    const list = data.silences || [];
    silencesEmpty.hidden = list.length > 0;
    keyed(
      silenceList,
      list,
      (s) => s.id,
      () => h("li", { class: "silence" }),
      (li, s) => {
        const maint = s.kind === "maintenance";
        const target = [
          s.device_id ? names.get(s.device_id)?.name || s.device_id : null,
          s.location,
          s.rule_id ? `rule ${s.rule_id}` : null,
        ]
          .filter(Boolean)
          .join(" · ");
        const now = Date.now() / 1000;
        const textId = `silence-${cssId(s.id)}`;
        replace(
          li,
          h(
            "p",
            { id: textId },
            badge("muted", maint ? "wrench" : "mute", maint ? "Maintenance" : "Silence"),
            " ",
            h("strong", {}, target),
            s.starts_at > now ? ` · from ${clock(s.starts_at)}` : "",
            ` · until ${clock(s.ends_at)} · ${s.owner}: ${s.reason}`,
          ),
          canSilence
            ? h(
                "button",
                {
                  type: "button",
                  "aria-describedby": textId,
                  onclick: async (e) => {
                    e.currentTarget.disabled = true;
                    try {
                      await api.cancelSilence(s.id);
                      toast("Ended.");
                    } catch (ex) {
                      toast(`Not ended: ${errorText(ex)}`);
                    }
                    load("silences", "alerts");
                  },
                },
                "End now",
              )
            : null,
        );
      },
    );
  }

  function silenceForm() {
    const kind = h(
      "select",
      { name: "kind" },
      h("option", { value: "silence" }, "Silence: alerts raise, nobody is notified"),
      h("option", { value: "maintenance" }, "Maintenance: the devices raise no alerts"),
    );
    const device = h("select", { name: "device_id" });
    const loc = h("select", { name: "location" });
    const rule = h("input", { name: "rule_id", type: "text", maxlength: 200, list: "rule-ids", autocomplete: "off" });
    const rules = h("datalist", { id: "rule-ids" });
    const dur = h("select", { name: "duration_s" }, DURATIONS.map(([s, t]) => h("option", { value: s }, t)));
    dur.value = "3600";
    const err = h("p", { class: "form-error", role: "alert" });
    const submit = h("button", { type: "submit", class: "primary" }, "Create");

    const fillChoices = () => {
      const dv = device.value;
      const lv = loc.value;
      replace(device, h("option", { value: "" }, "Any device"), data.devices.map((d) => h("option", { value: d.id }, `${d.name} (${d.location})`)));
      const locs = [...new Set(data.devices.map((d) => d.location))].sort();
      replace(loc, h("option", { value: "" }, "Any location"), locs.map((l) => h("option", { value: l }, l)));
      device.value = dv;
      loc.value = lv;
      replace(rules, [...new Set([...data.open, ...data.resolved].map((a) => a.rule_id))].sort().map((r) => h("option", { value: r })));
    };

    const form = h(
      "form",
      {
        class: "silence-form",
        "aria-label": "New silence or maintenance window",
        onsubmit: async (e) => {
          e.preventDefault();
          if (submit.disabled) return;
          err.textContent = "";
          const body = {
            kind: kind.value,
            device_id: device.value || null,
            location: loc.value || null,
            rule_id: rule.value.trim() || null,
            reason: form.elements.reason.value.trim(),
            duration_s: Number(dur.value),
          };
          if (!body.device_id && !body.location && !body.rule_id) {
            err.textContent = "Choose a device, a location or a rule.";
            return;
          }
          submit.disabled = true;
          try {
            await api.createSilence(body);
            form.reset();
            dur.value = "3600";
            toast(body.kind === "maintenance" ? "Maintenance window created." : "Silence created.");
            load("silences", "alerts", "devices");
          } catch (ex) {
            err.textContent = `Not created: ${errorText(ex)}`;
          } finally {
            submit.disabled = false;
          }
        },
      },
      h(
        "div",
        { class: "form-grid" },
        field("Kind", kind),
        field("Device", device),
        field("Location", loc),
        field("Rule (optional)", rule, "e.g. fridge-too-warm"),
        field("For", dur),
        textField({ label: "Reason", name: "reason", maxlength: LIMITS.reason, required: true }),
      ),
      rules,
      h("div", { class: "form-actions" }, submit),
      err,
    );
    const details = h("details", { class: "new-silence", ontoggle: fillChoices }, h("summary", {}, "New silence or maintenance window"), form);
    return details;
  }

  // -- page interface -----------------------------------------------------------------------
  load();
  return {
    refresh: () => load(),
    // readings, conditions building up and silences ending: the stream does not carry them;
    // alerts and incidents come from the stream (or the poll, without one)
    tick: () => load("devices", "pending", "silences"),
    onLive(ev) {
      if (ev.type === "alert") {
        const a = ev.data?.alert ?? ev.data;
        if (a && typeof a === "object" && a.id && a.state && a.severity && a.message !== undefined) {
          const known = data.open.some((x) => x.id === a.id) || data.resolved.some((x) => x.id === a.id);
          upsert(a);
          render();
          // said aloud too (the toast is a status region): a new alert, while looking elsewhere
          if (!known && a.state === "active") {
            toast(`New ${a.severity} alert: ${a.message.replace(/^(CRITICAL|WARNING|INFO)\s+/, "")}`);
          }
        }
        schedule("alerts", "devices", "incidents", "pending");
      } else if (ev.type === "device") {
        schedule("devices");
      } else if (ev.type === "incident") {
        schedule("incidents");
      } else if (ev.type === "silence") {
        schedule("silences", "alerts");
      }
    },
    unmount() {
      alive = false;
      clearTimeout(debounce);
      if (dialog.el.open) dialog.el.close();
    },
  };
}

function isIncident(a) {
  return a.rule_id.startsWith("incident-");
}

// Where an alert is when its device_id names no device: a bin, a group, eqmon itself.
function where(subject) {
  const bin = /^bin:([^@]+)@/.exec(subject);
  if (bin) return `supply bin ${bin[1]}`;
  return subject.replace(/^(location|gateway|broker):/, "$1 ");
}

function mainMetric(d) {
  const ms = Object.keys(d.readings);
  for (const m of ["temperature_c", "count", "pressure_pa", "humidity_pct"]) if (ms.includes(m)) return m;
  return ms.find((m) => typeof d.readings[m].value === "number") || ms[0] || null;
}

function cssId(s) {
  return String(s).replace(/[^A-Za-z0-9_-]/g, "_");
}
