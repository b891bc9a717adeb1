// A hand-written SVG line chart of a device's aggregated history: the mean per window as a line,
// the min–max range as a band, hour ticks along the bottom. Scales to its container's width
// (viewBox). Accessible: role="img" with a summary in words (range, latest, when).

const SVG_NS = "http://www.w3.org/2000/svg";
const W = 720;
const H = 260;
const PAD = { left: 48, right: 12, top: 12, bottom: 28 };

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceStep(range, ticks) {
  const raw = range / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

function hhmm(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// points: [{ts, min, mean, max}] oldest first; t0..t1 the time axis (Unix seconds).
export function lineChart({ points, t0, t1, unit = "", title }) {
  const fmt = (v) => `${Number(v.toFixed(2))}${unit ? ` ${unit}` : ""}`;
  if (!points.length) {
    return s("svg", { viewBox: `0 0 ${W} 60`, class: "chart", role: "img", "aria-label": `${title}: no readings in this period` });
  }
  const dataMin = Math.min(...points.map((p) => p.min));
  const dataMax = Math.max(...points.map((p) => p.max));
  let lo = dataMin;
  let hi = dataMax;
  if (hi - lo < 1e-9) {
    lo -= 1;
    hi += 1;
  }
  const step = niceStep(hi - lo, 5);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const x = (ts) => PAD.left + ((ts - t0) / Math.max(1, t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * (H - PAD.top - PAD.bottom);

  const last = points[points.length - 1];
  const label =
    `${title}: from ${hhmm(t0)} to ${hhmm(t1)}, lowest ${fmt(dataMin)}, highest ${fmt(dataMax)}, ` +
    `latest ${fmt(last.mean)} at ${hhmm(last.ts)}`;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
  svg.append(s("title", {}, label));

  // grid and value axis
  for (let v = lo; v <= hi + step / 2; v += step) {
    svg.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: PAD.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, Number(v.toFixed(2))));
  }
  // time axis: a tick every 1, 2, 3, 4 or 6 hours, on the hour
  const span = t1 - t0;
  const every = [60, 300, 600, 900, 1800, 3600, 7200, 10800, 14400, 21600].find((e) => span / e <= 8) || 21600;
  const start = Math.ceil(t0 / every) * every;
  for (let t = start; t <= t1; t += every) {
    svg.append(s("line", { x1: x(t), x2: x(t), y1: H - PAD.bottom, y2: H - PAD.bottom + 4, class: "tick" }));
    svg.append(s("text", { x: x(t), y: H - 8, class: "axis", "text-anchor": "middle" }, hhmm(t)));
  }
  svg.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "baseline" }));

  // min–max band and mean line, broken where a window has no data (gap > 3 windows)
  const gap = points.length > 1 ? 3 * Math.min(...points.slice(1).map((p, i) => p.ts - points[i].ts)) : Infinity;
  const runs = [];
  let run = [];
  points.forEach((p, i) => {
    if (i && p.ts - points[i - 1].ts > gap) {
      runs.push(run);
      run = [];
    }
    run.push(p);
  });
  runs.push(run);
  for (const r of runs) {
    const top = r.map((p) => `${x(p.ts).toFixed(1)},${y(p.max).toFixed(1)}`);
    const bottom = r.map((p) => `${x(p.ts).toFixed(1)},${y(p.min).toFixed(1)}`).reverse();
    svg.append(s("polygon", { points: [...top, ...bottom].join(" "), class: "band" }));
    const d = r.map((p, i) => `${i ? "L" : "M"}${x(p.ts).toFixed(1)} ${y(p.mean).toFixed(1)}`).join(" ");
    svg.append(s("path", { d: r.length === 1 ? `${d} h2` : d, class: "line" }));
  }
  return svg;
}
