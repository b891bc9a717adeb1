// The supply board: stock per supply room against par with days of supply (bins below their
// reorder point marked in words and icon, not colour alone), the pick list (what to bring
// where), and a count form. A count carries an Idempotency-Key made once per submission: a
// double click or a retry after a dropped answer counts once.

import { api, LIMITS, newIdempotencyKey } from "./api.js";
import { STOCK_LEVEL, append, badge, clock, errorText, field, h, icon, keyed, num, replace, statusBadge, textField, toast } from "./ui.js";

const URGENCY = {
  out: { tone: "crit", icon: "critical", text: "Out" },
  stockout: { tone: "bad", icon: "clock", text: "Runs out before a refill" },
  below_min: { tone: "bad", icon: "critical", text: "Below minimum" },
  below_reorder: { tone: "warn", icon: "warn", text: "Below reorder point" },
  top_up: { tone: "info", icon: "info", text: "Top up" },
};
const MAX_COUNT = 1000000;

export function mount(root, ctx) {
  const canWrite = ctx.can("inventory:write");
  const data = { bins: [], picks: [] };
  let available = true;

  const summary = h("p", { class: "summary", id: "supply-summary" }, "Loading…");
  const rooms = h("div", { class: "rooms", id: "rooms" });
  const pickBody = h("tbody", {});
  const pickEmpty = h("p", { class: "empty", hidden: true }, icon("ok"), " Nothing to bring: every bin is at or above its reorder point.");
  const pickTable = h(
    "table",
    { class: "pick-table", "aria-labelledby": "pick-h" },
    h(
      "thead",
      {},
      h("tr", {}, h("th", { scope: "col" }, "Urgency"), h("th", { scope: "col" }, "Where"), h("th", { scope: "col" }, "Item"), h("th", { scope: "col" }, "Bring"), h("th", { scope: "col" }, "On hand / par")),
    ),
    pickBody,
  );
  const form = canWrite ? countForm() : null;

  append(
    root,
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Supply board"),
      summary,
      canWrite ? null : h("p", { class: "notice" }, icon("info"), " Read only: your role cannot record stock changes."),
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "pick-h" },
      h("h2", { id: "pick-h" }, "Pick list: what to bring where"),
      pickEmpty,
      h("div", { class: "table-wrap" }, pickTable),
    ),
    h("section", { class: "panel", "aria-labelledby": "stock-h" }, h("h2", { id: "stock-h" }, "Stock by supply room"), rooms),
    form ? h("section", { class: "panel", "aria-labelledby": "count-h" }, h("h2", { id: "count-h" }, "Record a count"), form.el) : null,
  );

  let alive = true;
  let debounce = null;
  let generation = 0;
  async function load() {
    const g = ++generation;
    const [bins, picks] = await Promise.allSettled([api.levels(), api.pickList()]);
    if (!alive || g !== generation) return; // a newer load is on its way: its answer counts
    if (bins.status === "rejected") {
      summary.textContent = `Cannot load stock levels: ${errorText(bins.reason)}`;
      return;
    }
    if (bins.value === null) {
      available = false;
      summary.textContent = "This eqmon has no inventory.";
      return;
    }
    available = true;
    data.bins = bins.value;
    data.picks = picks.status === "fulfilled" && picks.value ? picks.value : [];
    render();
    if (picks.status === "rejected") summary.textContent += ` · pick list not loaded: ${errorText(picks.reason)}`;
  }

  function render() {
    const low = data.bins.filter(isLow);
    summary.textContent =
      `${data.bins.length} bins, ${low.length} below reorder point · ${data.picks.length} line${data.picks.length === 1 ? "" : "s"} to pick` +
      ` · updated ${clock(Date.now() / 1000)}`;
    // pick list
    pickEmpty.hidden = data.picks.length > 0;
    pickTable.hidden = data.picks.length === 0;
    keyed(pickBody, data.picks, (p) => `${p.sku}@${p.location_id}`, () => h("tr", {}), (tr, p) => {
      const u = URGENCY[p.urgency] || { tone: "warn", icon: "warn", text: p.urgency };
      tr.className = `pick urgency-${p.urgency}`;
      tr.dataset.sku = p.sku;
      replace(
        tr,
        h("td", {}, badge(u.tone, u.icon, u.text)),
        h("td", {}, p.path || p.room),
        h("td", {}, p.name, p.critical ? h("span", { class: "tag" }, " critical item") : null, h("span", { class: "sub block" }, p.sku)),
        h("td", { class: "bring" }, h("strong", {}, `${p.packs} pack${p.packs === 1 ? "" : "s"}`), ` of ${p.pack_size} (${p.quantity}${units(p)})`),
        h("td", {}, `${p.on_hand} / ${p.par}`, daysText(p) ? h("span", { class: "sub block" }, daysText(p)) : null),
      );
    });
    // stock by room
    const groups = new Map();
    for (const b of data.bins) {
      const room = b.room || "Other";
      if (!groups.has(room)) groups.set(room, []);
      groups.get(room).push(b);
    }
    const worst = (bins) => Math.max(...bins.map(rank));
    const order = [...groups.keys()].sort((a, b) => worst(groups.get(b)) - worst(groups.get(a)) || a.localeCompare(b));
    keyed(
      rooms,
      order.map((room) => ({ room, bins: groups.get(room) })),
      (g) => g.room,
      (g) => {
        const id = `room-${String(g.room).replace(/[^A-Za-z0-9_-]/g, "_")}`;
        const sec = h("section", { class: "room", "aria-labelledby": id });
        sec.heading = h("h3", { id });
        sec.body = h("tbody", {});
        sec.append(
          sec.heading,
          h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "stock-table", "aria-labelledby": id },
              h(
                "thead",
                {},
                h("tr", {}, h("th", { scope: "col" }, "Item"), h("th", { scope: "col" }, "Bin"), h("th", { scope: "col" }, "On hand against par"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Days of supply")),
              ),
              sec.body,
            ),
          ),
        );
        return sec;
      },
      (sec, g) => {
        const low = g.bins.filter(isLow).length;
        replace(sec.heading, g.room, low ? h("span", { class: "sub" }, ` · ${low} below reorder point`) : null);
        const bins = [...g.bins].sort((a, b) => rank(b) - rank(a) || a.name.localeCompare(b.name));
        keyed(sec.body, bins, (b) => `${b.sku}@${b.location_id}`, () => h("tr", {}), updateBin);
      },
    );
    form?.refresh();
  }

  function updateBin(tr, b) {
    const lvl = STOCK_LEVEL[b.level] || { tone: "muted" };
    tr.className = `bin level-${b.level} tone-${b.counted === false ? "muted" : lvl.tone}`;
    tr.dataset.sku = b.sku;
    tr.dataset.level = b.level;
    const pct = b.par > 0 ? Math.min(100, Math.round((100 * b.on_hand) / b.par)) : 0;
    const shelf = b.path && b.room && b.path.startsWith(b.room) ? b.path.slice(b.room.length).replace(/^ \/ /, "") : b.path;
    replace(
      tr,
      h("td", {}, h("strong", {}, b.name), b.critical ? h("span", { class: "tag" }, " critical item") : null, h("span", { class: "sub block" }, b.sku)),
      h("td", {}, shelf || b.location || ""),
      h(
        "td",
        {},
        h("meter", { min: 0, max: Math.max(b.par, b.on_hand, 1), low: b.reorder_point, high: b.par, optimum: b.par, value: b.on_hand, "aria-hidden": "true" }),
        h("span", { class: "block" }, `${b.on_hand} of par ${b.par}${units(b)} (${pct} %)`),
        h("span", { class: "sub block" }, `reorder at ${b.reorder_point}, min ${b.min_qty}`),
      ),
      h("td", {}, b.counted === false ? badge("muted", "unknown", "Not counted yet") : statusBadge(STOCK_LEVEL, b.level)),
      h("td", {}, daysText(b) || "no use seen"),
    );
  }

  function countForm() {
    const bin = h("select", { name: "bin", required: true });
    const qty = h("input", { name: "counted", type: "number", min: 0, max: MAX_COUNT, step: 1, required: true, inputmode: "numeric" });
    const note = textField({ label: "Note (optional)", name: "note", maxlength: LIMITS.txNote });
    const err = h("p", { class: "form-error", role: "alert" });
    const submit = h("button", { type: "submit", class: "primary" }, "Record count");
    let key = null; // this submission's Idempotency-Key (kept for a retry of the same count)
    let keyFor = "";

    const el = h(
      "form",
      {
        class: "count-form",
        "aria-labelledby": "count-h",
        onsubmit: async (e) => {
          e.preventDefault();
          if (submit.disabled) return; // a second click while the first is on its way
          err.textContent = "";
          const b = data.bins.find((x) => `${x.sku}@${x.location_id}` === bin.value);
          if (!b) {
            err.textContent = "Choose a bin.";
            return;
          }
          const counted = Number(qty.value);
          const what = `${bin.value}|${counted}|${el.elements.note.value.trim()}`;
          if (key === null || keyFor !== what) {
            key = newIdempotencyKey();
            keyFor = what;
          }
          submit.disabled = true;
          try {
            await api.count(
              { sku: b.sku, locationId: b.location_id, counted, note: el.elements.note.value.trim() },
              key,
            );
            key = null; // done: the next count is a new submission
            toast(`Count recorded: ${b.name}, ${counted}.`);
            qty.value = "";
            el.elements.note.value = "";
            load();
          } catch (ex) {
            err.textContent = `Not recorded: ${errorText(ex)}`;
            if (ex?.status && ex.status < 500 && ex.status !== 409) key = null; // refused: a new try is a new submission
          } finally {
            submit.disabled = false;
          }
        },
      },
      h(
        "div",
        { class: "form-grid" },
        field("Bin", bin),
        field("Counted quantity", qty, "Units found in the bin now."),
        note,
      ),
      h("div", { class: "form-actions" }, submit),
      err,
    );
    let shown = "";
    return {
      el,
      refresh() {
        // rebuilt only when the bins change: an open drop-down is left alone
        const sorted = [...data.bins].sort((a, b) => (a.path || "").localeCompare(b.path || "") || a.name.localeCompare(b.name));
        const keys = sorted.map((b) => `${b.sku}@${b.location_id}`).join("|");
        if (keys === shown) return;
        shown = keys;
        const v = bin.value;
        replace(
          bin,
          h("option", { value: "" }, "Choose a bin…"),
          sorted.map((b) => h("option", { value: `${b.sku}@${b.location_id}` }, `${b.name} — ${b.path || b.location}`)),
        );
        bin.value = v;
      },
    };
  }

  load();
  return {
    refresh: load,
    tick: load,
    onLive(ev) {
      if (ev.type !== "stock" || !available) return;
      clearTimeout(debounce);
      debounce = setTimeout(load, 150);
    },
    unmount() {
      alive = false;
      clearTimeout(debounce);
    },
  };
}

// " pairs", " reams" …; nothing for items counted one by one ("each")
function units(x) {
  return x.unit && x.unit !== "each" ? ` ${x.unit}` : "";
}

function rank(b) {
  return b.counted === false ? 0 : STOCK_LEVEL[b.level]?.rank || 0;
}

function isLow(b) {
  return b.counted !== false && (b.below_reorder_point ?? rank(b) >= STOCK_LEVEL.below_reorder.rank);
}

function daysText(b) {
  if (b.days_of_supply === null || b.days_of_supply === undefined) return "";
  const d = b.days_of_supply;
  const out = b.stockout_at ? ` (out ${clock(b.stockout_at)})` : "";
  return d < 1 ? `${num(d * 24, 0)} h of supply${out}` : `${num(d, 1)} days of supply${out}`;
}
