// The live stream (Server-Sent Events) read with fetch(), not EventSource: EventSource cannot
// send the Authorization header. After a drop it reconnects (1 s, doubling up to 15 s) with
// Last-Event-ID, so the server replays what was missed, or sends `reset` when it cannot.
// Without a stream on the server (404) the caller falls back to polling.

import { EVENTS_URL, session } from "./api.js";

const MIN_DELAY_MS = 1000;
const MAX_DELAY_MS = 15000;
const IDLE_MS = 45000; // no byte (not even a keep-alive comment) this long: the link is dead

export class LiveStream {
  // onEvent({type, id, data}); onState("connecting" | "live" | "reconnecting" | "unavailable")
  constructor({ onEvent, onState }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastEventId = null;
    this.abort = null;
    this.stopped = true;
    this.delay = MIN_DELAY_MS;
    this.retryMs = null; // the server's `retry:` field, when it sends one
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop();
  }

  stop() {
    this.stopped = true;
    this.abort?.abort();
  }

  async loop() {
    let first = true;
    while (!this.stopped) {
      this.onState(first ? "connecting" : "reconnecting");
      first = false;
      const outcome = await this.connectOnce();
      if (outcome === "unavailable" || outcome === "unauthorized") {
        this.onState(outcome);
        this.stopped = true;
        return;
      }
      if (this.stopped) return;
      this.onState("reconnecting");
      const wait = this.retryMs ?? this.delay;
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
      await new Promise((r) => setTimeout(r, wait * (0.8 + Math.random() * 0.4)));
    }
  }

  async connectOnce() {
    const ctrl = new AbortController();
    this.abort = ctrl;
    let idle = null;
    const poke = () => {
      clearTimeout(idle);
      idle = setTimeout(() => ctrl.abort(), IDLE_MS);
    };
    const headers = { Accept: "text/event-stream", Authorization: `Bearer ${session.token()}` };
    if (this.lastEventId !== null) headers["Last-Event-ID"] = this.lastEventId;
    try {
      poke();
      const r = await fetch(EVENTS_URL, { headers, signal: ctrl.signal, cache: "no-store" });
      if (r.status === 404) return "unavailable";
      if (r.status === 401) {
        session.clear();
        window.dispatchEvent(new CustomEvent("eqmon:unauthorized"));
        return "unauthorized";
      }
      if (!r.ok || !r.body) return "error";
      this.onState("live");
      this.delay = MIN_DELAY_MS;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      let ev = { type: "", data: [], id: null };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        poke();
        buf += value;
        // lines end with \r\n, \n or \r; the last piece may be incomplete
        const lines = buf.split(/\r\n|\n|\r(?!$)/);
        buf = lines.pop();
        for (const line of lines) {
          if (line === "") {
            if (ev.data.length) this.dispatch(ev);
            ev = { type: "", data: [], id: null };
            continue;
          }
          if (line.startsWith(":")) continue; // a comment: keep-alive
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          let val = i < 0 ? "" : line.slice(i + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "event") ev.type = val;
          else if (field === "data") ev.data.push(val);
          else if (field === "id" && !val.includes("\0")) this.lastEventId = val;
          else if (field === "retry" && /^\d+$/.test(val)) this.retryMs = Math.min(Number(val), MAX_DELAY_MS);
        }
      }
      return "closed";
    } catch {
      return "error"; // network gone, aborted, or idle too long
    } finally {
      clearTimeout(idle);
    }
  }

  dispatch(ev) {
    const text = ev.data.join("\n");
    let data = text;
    try {
      data = JSON.parse(text);
    } catch {
      /* not JSON: passed on as text */
    }
    try {
      this.onEvent({ type: ev.type || "message", id: this.lastEventId, data });
    } catch (e) {
      console.error("eqmon: live event handler failed", e);
    }
  }
}
