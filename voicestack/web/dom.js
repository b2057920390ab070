// Small DOM and formatting helpers shared by the page's modules.

/** Create an element: h("li", {class: "x", dataset: {id: 1}}, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "text") el.textContent = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** The element with `id`; throws when the page lacks it (a broken page should fail loudly). */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const clock = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
const number = new Intl.NumberFormat();

/** "just now", "5 min. ago", "yesterday": seconds-since-epoch `when` relative to now. */
export function ago(when) {
  const seconds = Math.round(when - Date.now() / 1000);
  const steps = [
    [60, "second"],
    [3600, "minute"],
    [86400, "hour"],
    [604800, "day"],
    [2629800, "week"],
    [31557600, "month"],
    [Infinity, "year"],
  ];
  if (Math.abs(seconds) < 45) return "just now";
  let unit = 1;
  for (const [limit, name] of steps) {
    if (Math.abs(seconds) < limit) return relative.format(Math.round(seconds / unit), name);
    unit = limit;
  }
  return "";
}

/** A full date and time, for tooltips and <time datetime>. */
export const fullTime = (when) => dateTime.format(new Date(when * 1000));
/** Hours and minutes. */
export const shortTime = (when) => clock.format(new Date(when * 1000));
/** A whole number with grouping: 12,345. */
export const count = (n) => number.format(n);
/** An ISO timestamp for a `datetime` attribute. */
export const isoTime = (when) => new Date(when * 1000).toISOString();

/** JSON short enough for one line when small, indented otherwise. */
export function pretty(value) {
  if (typeof value === "string") return value;
  const flat = JSON.stringify(value);
  return flat && flat.length <= 60 ? flat : JSON.stringify(value, null, 2);
}

/** Tool arguments as `name: value, ...` for a one-line summary. */
export function argsSummary(args) {
  if (args === null || typeof args !== "object" || Array.isArray(args)) return pretty(args);
  return Object.entries(args)
    .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(", ");
}
