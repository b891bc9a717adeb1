// The dashboard's shell: login, navigation by role, the live stream, and the pages (#/board,
// #/supply, #/tester), each a module with mount(root, ctx) -> {unmount, refresh, onLive, tick}.

import { api, LIMITS, session } from "./api.js";
import * as board from "./board.js";
import { LiveStream } from "./live.js";
import * as supply from "./supply.js";
import * as tester from "./tester.js";
import { errorText, h, icon, replace } from "./ui.js";

const POLL_MS = 5000; // without a live stream on the server: refresh this often
const TICK_MS = 15000; // readings and "… ago" texts: refreshed this often anyway

// Which pages a role sees: those it may use (the API checks every call anyway).
const PAGES = {
  board: {
    title: "Coordinator board",
    module: board,
    visible: (ctx) => ctx.can("devices:read") && ctx.can("alerts:read"),
  },
  supply: { title: "Supply board", module: supply, visible: (ctx) => ctx.can("inventory:read") },
  tester: {
    title: "Tester",
    module: tester,
    visible: (ctx) => ctx.can("simulators:write") && ctx.simulators,
  },
};
const HOME = { coordinator: "board", supply: "supply", viewer: "board", admin: "board" };

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const liveEl = document.getElementById("live");

const ctx = {
  can: (scope) => session.can(scope),
  simulators: false, // simulated devices are running (checked after login)
  site: "",
};

let current = null; // {name, page}
let live = null;
let pollTimer = null;
let tickTimer = null;
let wasLive = false; // the stream has been live since startLive()

function setLiveState(state) {
  const text = {
    connecting: ["clock", "Connecting…"],
    live: ["live", "Live"],
    reconnecting: ["cut", "Reconnecting…"],
    unavailable: ["clock", `Updates every ${POLL_MS / 1000} s`],
    unauthorized: ["cut", "Logged out"],
  }[state] || ["unknown", state];
  liveEl.dataset.state = state;
  replace(liveEl, icon(text[0]), h("span", {}, text[1]));
  if (state === "unavailable" && !pollTimer) {
    pollTimer = setInterval(() => current?.page.refresh?.(), POLL_MS);
  }
  if (state === "live" && !wasLive) {
    // the page loaded its lists while the stream connected: what changed meanwhile is
    // reloaded once; after a drop, the stream itself replays what was missed (or says reset)
    wasLive = true;
    current?.page.refresh?.();
  }
}

function startLive() {
  stopLive();
  wasLive = false;
  live = new LiveStream({
    onEvent: (ev) => {
      if (ev.type === "reset") current?.page.refresh?.();
      else current?.page.onLive?.(ev);
    },
    onState: setLiveState,
  });
  live.start();
  tickTimer = setInterval(() => current?.page.tick?.(), TICK_MS);
}

function stopLive() {
  live?.stop();
  live = null;
  clearInterval(pollTimer);
  clearInterval(tickTimer);
  pollTimer = null;
  tickTimer = null;
}

function visiblePages() {
  return Object.entries(PAGES).filter(([, p]) => p.visible(ctx));
}

function renderNav(active) {
  const items = visiblePages().map(([name, p]) =>
    h(
      "li",
      {},
      h("a", { href: `#/${name}`, "aria-current": name === active ? "page" : null }, p.title),
    ),
  );
  replace(nav, h("ul", {}, items));
  nav.hidden = false;
}

function unmount() {
  current?.page.unmount?.();
  current = null;
}

function show(name) {
  const pages = Object.fromEntries(visiblePages());
  const s = session.get();
  if (!pages[name]) name = pages[HOME[s.role]] ? HOME[s.role] : Object.keys(pages)[0];
  if (!name) {
    unmount();
    replace(main, h("h1", {}, "Nothing to show"), h("p", {}, "Your role has no page here."));
    return;
  }
  if (location.hash !== `#/${name}`) history.replaceState(null, "", `#/${name}`);
  unmount();
  document.title = `${pages[name].title} — eqmon`;
  renderNav(name);
  main.replaceChildren();
  current = { name, page: pages[name].module.mount(main, ctx) };
  main.focus({ preventScroll: true });
}

async function enter() {
  const s = session.get();
  replace(who, icon("person"), h("span", { class: "who-name" }, `${s.name} (${s.role})`), " ", liveEl, " ", logoutButton());
  who.hidden = false;
  if (ctx.can("simulators:write")) {
    try {
      const sims = await api.simulators();
      ctx.simulators = Array.isArray(sims) && sims.length > 0;
    } catch {
      ctx.simulators = false;
    }
  }
  startLive();
  show(location.hash.replace(/^#\//, ""));
}

function logoutButton() {
  return h(
    "button",
    {
      type: "button",
      class: "quiet",
      onclick: async () => {
        stopLive();
        try {
          await api.logout();
        } catch {
          session.clear(); // the token is dropped here whatever the server said
        }
        login("You are logged out.");
      },
    },
    "Log out",
  );
}

function login(message = "") {
  stopLive();
  unmount();
  nav.hidden = true;
  who.hidden = true;
  document.title = "Log in — eqmon";
  if (location.hash !== "#/login") history.replaceState(null, "", "#/login");
  const user = h("input", {
    id: "login-user", name: "username", type: "text", autocomplete: "username", required: true,
    maxlength: LIMITS.username, autocapitalize: "none", spellcheck: "false",
  });
  const pass = h("input", {
    id: "login-pass", name: "password", type: "password", autocomplete: "current-password", required: true,
    maxlength: LIMITS.password,
  });
  const err = h("p", { class: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Log in");
  const form = h(
    "form",
    {
      class: "login card",
      "aria-labelledby": "login-h",
      onsubmit: async (e) => {
        e.preventDefault();
        submit.disabled = true;
        err.textContent = "";
        try {
          await api.login(user.value.trim(), pass.value);
          pass.value = "";
          await enter();
        } catch (ex) {
          err.textContent = ex.status === 401 ? "Wrong user name or password." : errorText(ex);
          pass.select();
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h1", { id: "login-h" }, "Log in to eqmon"),
    ctx.site ? h("p", { class: "sub" }, ctx.site) : null,
    message ? h("p", { class: "notice", role: "status" }, message) : null,
    h("div", { class: "field" }, h("label", { for: "login-user" }, "User name"), user),
    h("div", { class: "field" }, h("label", { for: "login-pass" }, "Password"), pass),
    submit,
    err,
  );
  replace(main, form);
  user.focus();
}

async function start() {
  try {
    const health = await api.health();
    ctx.site = health.site;
    document.getElementById("site-name").textContent = `eqmon — ${health.site}`;
  } catch {
    /* shown again once logged in */
  }
  window.addEventListener("eqmon:unauthorized", () => login("Your session has ended: log in again."));
  window.addEventListener("hashchange", () => {
    if (!session.get()) return login();
    const name = location.hash.replace(/^#\//, "");
    if (name !== current?.name) show(name);
  });
  if (!session.get()) return login();
  try {
    await api.me(); // still valid?
  } catch {
    return login(session.get() ? "" : "Your session has ended: log in again.");
  }
  await enter();
}

start();
