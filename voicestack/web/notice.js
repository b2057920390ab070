// Messages for the user: a toast for errors, and a polite live region for screen readers.

import { byId } from "./dom.js";

let hideTimer = null;

/** Show `message` in the toast for a few seconds (errors, refusals). */
export function toast(message, { kind = "error", seconds = 6 } = {}) {
  const box = byId("toast");
  box.textContent = message;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(hideTimer);
  hideTimer = setTimeout(() => {
    box.hidden = true;
  }, seconds * 1000);
}

/** Tell screen readers something that happened off to the side (a tool awaiting approval). */
export function announce(message) {
  const region = byId("announcer");
  region.textContent = "";
  // A fresh text node after a tick makes screen readers announce repeated messages too.
  setTimeout(() => {
    region.textContent = message;
  }, 50);
}
