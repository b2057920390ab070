// The side panel: every tool call of the open thread with its live status, progress and result;
// calls waiting for approval get Approve and Deny buttons.

import { argsSummary, byId, h, pretty } from "./dom.js";
import { announce, toast } from "./notice.js";
import { mutation } from "./voicestack.js";

export const STATUS_LABELS = {
  pending: "Queued",
  awaiting_approval: "Needs approval",
  running: "Running",
  done: "Done",
  failed: "Failed",
};

/** One tool call as a card: name, status, arguments, progress, result or error, actions. */
function card(call, decide) {
  const parts = [
    h(
      "div",
      { class: "tool-head" },
      h("span", { class: "tool-name", text: call.name }),
      h("span", { class: "status-badge", text: STATUS_LABELS[call.status] || call.status }),
    ),
    h("code", { class: "tool-args", text: argsSummary(call.args) }),
  ];
  if (call.status === "running" || call.status === "pending") parts.push(progressOf(call));
  if (call.status === "done") {
    parts.push(h("pre", { class: "tool-result", text: pretty(call.result) }));
  }
  if (call.status === "failed" && call.error) {
    parts.push(h("p", { class: "tool-error", text: call.error }));
  }
  if (call.status === "awaiting_approval") {
    parts.push(
      h(
        "div",
        { class: "tool-actions" },
        h("button", {
          type: "button",
          class: "btn primary",
          text: "Approve",
          "aria-label": `Approve ${call.name}`,
          onclick: (e) => decide(e.currentTarget, "approve", call),
        }),
        h("button", {
          type: "button",
          class: "btn",
          text: "Deny",
          "aria-label": `Deny ${call.name}`,
          onclick: (e) => decide(e.currentTarget, "deny", call),
        }),
      ),
    );
  }
  return h(
    "li",
    {
      class: "tool",
      id: `tool-${call.id}`,
      tabindex: "-1",
      dataset: { status: call.status, callId: call.id, name: call.name },
      "aria-label": `${call.name}: ${STATUS_LABELS[call.status] || call.status}`,
    },
    parts,
  );
}

function progressOf(call) {
  const progress = call.progress;
  if (typeof progress === "number") {
    const percent = Math.round(progress * 100);
    return h(
      "div",
      { class: "tool-progress" },
      h("progress", { max: "1", value: String(progress), "aria-label": `${call.name} progress` }),
      h("span", { class: "tool-percent", text: `${percent}%` }),
    );
  }
  if (progress !== null && progress !== undefined) {
    return h("p", { class: "tool-note", text: pretty(progress) });
  }
  // Running without reported progress: an indeterminate bar.
  return h(
    "div",
    { class: "tool-progress" },
    h("progress", { "aria-label": `${call.name} progress` }),
  );
}

/** The tool-call panel of the open thread. */
export class ToolPanel {
  constructor({ token, onCount }) {
    this.token = token;
    this.onCount = onCount;
    this.list = byId("tool-list");
    this.empty = byId("tools-empty");
    this.calls = new Map();
  }

  /** Forget everything (another thread opened). */
  clear() {
    this.calls.clear();
    this.list.replaceChildren();
    this.update();
  }

  /** Show `call` (new or changed), in creation order. */
  show(call) {
    const previous = this.calls.get(call.id);
    this.calls.set(call.id, call);
    const node = card(call, (button, verdict, c) => this.decide(button, verdict, c));
    const old = document.getElementById(`tool-${call.id}`);
    const hadFocus = old && old.contains(document.activeElement);
    if (old) old.replaceWith(node);
    else this.list.append(node);
    if (hadFocus) (node.querySelector("button") || node).focus();
    if (call.status === "awaiting_approval" && previous?.status !== "awaiting_approval") {
      announce(`The tool ${call.name} waits for your approval.`);
    }
    this.update();
  }

  update() {
    const calls = [...this.calls.values()];
    this.empty.hidden = calls.length > 0;
    this.onCount({
      total: calls.length,
      waiting: calls.filter((c) => c.status === "awaiting_approval").length,
      active: calls.filter((c) => c.status === "running" || c.status === "pending").length,
    });
  }

  async decide(button, verdict, call) {
    for (const b of button.parentElement.querySelectorAll("button")) b.disabled = true;
    try {
      await mutation(`tool_calls.${verdict}`, { id: call.id }, { token: this.token });
    } catch (err) {
      // Someone else decided first: the feed brings the new status; say so briefly.
      toast(err.message);
      for (const b of button.parentElement?.querySelectorAll("button") || []) b.disabled = false;
    }
  }
}
