// The tester page: the simulated devices (only while simulators run in the service, e.g.
// `eqmon demo`), each with buttons for its usual faults, a form for any fault it takes (with
// its params, as GET /api/v1/simulators describes them) and a button that clears them all.

import { api } from "./api.js";
import { DEVICE_STATUS, append, badge, errorText, field, h, keyed, replace, toast } from "./ui.js";

// Quick buttons, offered when the device takes the fault: [fault, label(sim, fault), params(fault)]
const PRESETS = [
  ["drift", (sim, f) => (sim.model === "smart_shelf" ? "Scale drift" : `Drift to ${example(f, "target")}${unitOf(sim, f)}`),
    (f) => ({ target: example(f, "target"), rate_per_min: 60 })],
  ["door_open", () => "Door open", () => ({})],
  ["sentinel", () => "Sensor failure", () => ({})],
  ["silence", (sim) => (sim.protocol === "mqtt" ? "Stop publishing" : "Stop answering"), () => ({})],
  ["take", () => "Take 50", () => ({ count: 50 })],
  ["restock", () => "Restock to par", () => ({})],
];

// the drifting metric's unit, from the device's latest reading of it (" °C")
let unitsByDevice = new Map();
function unitOf(sim, fault) {
  const metric = example(fault, "metric");
  const unit = unitsByDevice.get(sim.id)?.[metric]?.unit;
  return unit ? ` ${unit}` : "";
}

function example(fault, name) {
  const p = fault.params.find((x) => x.name === name);
  return p ? (p.example ?? p.default) : undefined;
}

export function mount(root) {
  const list = h("ul", { class: "sim-list", id: "sim-list", "aria-labelledby": "sim-h" });
  const summary = h("p", { class: "summary" }, "Loading…");
  append(
    root,
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Tester"),
      h(
        "p",
        { class: "sub" },
        "Inject faults into the simulated devices; each stays until cleared. For testing only: real devices are never touched.",
      ),
      summary,
    ),
    h("section", { class: "panel", "aria-labelledby": "sim-h" }, h("h2", { id: "sim-h" }, "Simulated devices"), list),
  );
  let status = new Map();
  let alive = true;
  let debounce = null;

  async function load() {
    try {
      const [sims, devs] = await Promise.all([api.simulators(), api.devices().catch(() => [])]);
      if (!alive) return;
      if (!sims || !sims.length) {
        summary.textContent = "No simulators are running in this service.";
        list.replaceChildren();
        return;
      }
      status = new Map(devs.map((d) => [d.id, d.status]));
      unitsByDevice = new Map(devs.map((d) => [d.id, d.readings]));
      const faulty = sims.filter((s) => s.active_faults?.length).length;
      summary.textContent = `${sims.length} simulated devices, ${faulty} with a fault now.`;
      keyed(list, sims, (s) => s.id, createSim, updateSim);
    } catch (ex) {
      summary.textContent = `Cannot load the simulators: ${errorText(ex)}`;
    }
  }

  async function run(button, what, id, fn) {
    button.disabled = true;
    try {
      await fn();
      toast(`${what}: done on ${id}.`);
      await load();
    } catch (ex) {
      toast(`${what} on ${id} failed: ${errorText(ex)}`);
    } finally {
      button.disabled = false;
    }
  }

  function createSim(sim) {
    const li = h("li", { class: "sim card" });
    li.head = h("div", { class: "sim-head" });
    li.active = h("p", { class: "sim-faults" });
    li.buttons = h("div", { class: "sim-buttons", role: "group" });
    li.form = h("div", {});
    li.append(li.head, li.active, li.buttons, li.form);
    return li;
  }

  function updateSim(li, sim) {
    const headId = `sim-${sim.id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    const st = DEVICE_STATUS[status.get(sim.id)] || DEVICE_STATUS.unknown;
    li.dataset.device = sim.id;
    replace(
      li.head,
      h("h3", { id: headId }, `${sim.name} (${sim.id})`),
      badge(st.tone, st.icon, st.text),
      h("span", { class: "sub block" }, `${sim.model.replaceAll("_", " ")} · ${sim.location} · ${sim.protocol}`),
    );
    const active = sim.active_faults || [];
    replace(
      li.active,
      active.length ? badge("warn", "warn", "Faults now") : badge("ok", "ok", "No fault"),
      active.length ? ` ${active.join("; ")}` : "",
    );
    if (li.buttons.childElementCount) return; // built once: the focus stays where it was
    li.buttons.setAttribute("aria-labelledby", headId);
    const faults = new Map((sim.faults || []).map((f) => [f.name, f]));
    for (const [name, labelOf, params] of PRESETS) {
      const f = faults.get(name);
      if (!f) continue;
      const text = labelOf(sim, f);
      li.buttons.append(
        h(
          "button",
          { type: "button", title: f.description, onclick: (e) => run(e.currentTarget, text, sim.id, () => api.inject(sim.id, name, params(f))) },
          text,
        ),
      );
    }
    li.buttons.append(
      h(
        "button",
        { type: "button", class: "primary", onclick: (e) => run(e.currentTarget, "Clear faults", sim.id, () => api.clearFaults(sim.id)) },
        "Clear faults",
      ),
    );
    if (faults.size) li.form.append(faultForm(sim, [...faults.values()]));
  }

  // Any fault the device takes, with its params as inputs.
  function faultForm(sim, faults) {
    const select = h(
      "select",
      { name: "fault" },
      faults.map((f) => h("option", { value: f.name }, `${f.name}: ${f.description}`)),
    );
    const params = h("div", { class: "form-grid" });
    const err = h("p", { class: "form-error", role: "alert" });
    const submit = h("button", { type: "submit" }, "Inject");
    const showParams = () => {
      const f = faults.find((x) => x.name === select.value);
      replace(
        params,
        (f?.params || []).map((p) => {
          let control;
          if (p.choices) {
            control = h("select", { name: p.name }, p.choices.map((c) => h("option", { value: String(c) }, String(c))));
          } else {
            control = h("input", {
              name: p.name,
              type: p.type === "string" ? "text" : "number",
              step: p.type === "integer" ? 1 : "any",
              maxlength: p.type === "string" ? 100 : null,
              required: p.required,
              autocomplete: "off",
            });
          }
          const v = p.default ?? p.example;
          if (v !== null && v !== undefined) control.value = String(v);
          control.dataset.type = p.type;
          return field(`${p.name}${p.required ? "" : " (optional)"}`, control, p.description);
        }),
      );
    };
    select.addEventListener("change", showParams);
    showParams();
    const form = h(
      "form",
      {
        "aria-label": `Inject a fault into ${sim.name}`,
        onsubmit: (e) => {
          e.preventDefault();
          err.textContent = "";
          const body = {};
          for (const c of params.querySelectorAll("input, select")) {
            if (c.value === "") continue;
            body[c.name] = c.dataset.type === "string" ? c.value : Number(c.value);
          }
          run(submit, select.value, sim.id, async () => {
            try {
              await api.inject(sim.id, select.value, body);
            } catch (ex) {
              err.textContent = `Not injected: ${errorText(ex)}`;
              throw ex;
            }
          });
        },
      },
      field("Fault", select),
      params,
      h("div", { class: "form-actions" }, submit),
      err,
    );
    return h("details", { class: "custom-fault" }, h("summary", {}, "Other fault…"), form);
  }

  load();
  return {
    refresh: load,
    tick: load,
    onLive(ev) {
      if (ev.type !== "device") return;
      clearTimeout(debounce);
      debounce = setTimeout(load, 300);
    },
    unmount() {
      alive = false;
      clearTimeout(debounce);
    },
  };
}
