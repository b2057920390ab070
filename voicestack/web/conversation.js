// The open thread: its messages (a streaming reply grows in place), tool-call chips under the
// reply that made them, and the thread's usage.

import { byId, count, fullTime, h, isoTime, shortTime } from "./dom.js";
import { STATUS_LABELS } from "./toolpanel.js";

const ROLE_NAMES = { user: "You", assistant: "Assistant", tool: "Tool", system: "System" };

/** True while a reply is queued or streaming: the Stop button is shown then. */
export const isActive = (row) =>
  row.role === "assistant" && (row.status === "pending" || row.status === "streaming");

function article(row) {
  return h(
    "article",
    {
      class: "msg",
      id: `msg-${row.id}`,
      dataset: { messageId: row.id, role: row.role },
      "aria-label": ROLE_NAMES[row.role] || row.role,
    },
    h("div", { class: "bubble" }, h("div", { class: "msg-text" })),
    h("ul", { class: "msg-tools", "aria-label": "Tool calls" }),
    h("footer", { class: "msg-meta" }),
  );
}

/** The messages of the open thread. */
export class Conversation {
  constructor({ onChip, onListen }) {
    this.onChip = onChip;
    this.onListen = onListen;
    this.scroller = byId("messages");
    this.empty = byId("empty");
    this.emptyText = byId("empty-text");
    this.usage = byId("usage");
    this.title = byId("thread-title");
    this.speaking = null;
  }

  /** Start over: an empty view titled `title` (`hint` is shown until a message arrives). */
  reset(title, hint) {
    this.scroller.replaceChildren();
    this.title.textContent = title;
    this.emptyText.textContent = hint;
    this.empty.hidden = false;
    this.usage.hidden = true;
  }

  setTitle(title) {
    this.title.textContent = title;
  }

  /** Show a message row (new, changed or grown): text, status, meta. */
  show(row, state) {
    const pinned = this.atBottom();
    let node = document.getElementById(`msg-${row.id}`);
    if (!node) {
      node = article(row);
      this.insert(node, row);
      this.empty.hidden = true;
    }
    node.dataset.status = row.status || "complete";
    node.setAttribute("aria-busy", String(isActive(row)));
    node.querySelector(".msg-text").textContent = row.text;
    this.renderMeta(node, row, state);
    if (pinned) this.scrollToEnd();
  }

  /** A streaming reply grew: update its text only (its meta line stays as it is). */
  grow(row) {
    const node = document.getElementById(`msg-${row.id}`);
    if (!node) return;
    const pinned = this.atBottom();
    node.querySelector(".msg-text").textContent = row.text;
    if (pinned) this.scrollToEnd();
  }

  insert(node, row) {
    // Rows arrive in order; a row older than the last shown goes before the first newer one.
    const later = [...this.scroller.children].find(
      (el) => Number(el.dataset.order) > (row.order ?? Infinity),
    );
    node.dataset.order = String(row.order ?? "");
    this.scroller.insertBefore(node, later || null);
  }

  renderMeta(node, row, state) {
    const parts = [];
    const author = row.authorName || row.author; // the id only for an author since deleted
    if (row.role === "user" && author) parts.push(h("span", { text: author }));
    if (row.createdAt) {
      parts.push(
        h("time", {
          datetime: isoTime(row.createdAt),
          title: fullTime(row.createdAt),
          text: shortTime(row.createdAt),
        }),
      );
    }
    if (row.status === "pending") parts.push(h("span", { text: "Thinking…" }));
    if (row.status === "interrupted") {
      parts.push(h("span", { class: "note", text: row.error?.message || "Stopped." }));
    }
    if (row.status === "failed") {
      const reason = row.error?.message || "The reply failed.";
      parts.push(h("span", { class: "note error", role: "status", text: reason }));
    }
    if (row.audioFileId) {
      parts.push(
        h("button", {
          type: "button",
          class: "link-btn listen",
          text: "▶ Recording",
          "aria-label": "Play the recording of this message",
          onclick: () => this.onListen(row.id),
        }),
      );
    }
    const segments = state?.speech.get(row.id);
    if (segments?.length) {
      const speaking = this.speaking === row.id;
      parts.push(
        h("button", {
          type: "button",
          class: "link-btn listen",
          text: speaking ? "■ Stop speaking" : "▶ Listen",
          "aria-label": speaking ? "Stop speaking this reply" : "Listen to this reply",
          onclick: () => this.onListen(row.id, speaking),
        }),
      );
    }
    if (row.voice) parts.push(voiceMeta(row.voice));
    node.querySelector(".msg-meta").replaceChildren(...parts);
  }

  /** Mark `messageId` as being spoken (or nothing, with null). */
  setSpeaking(messageId, state) {
    const before = this.speaking;
    this.speaking = messageId;
    for (const id of new Set([before, messageId])) {
      const row = id && state?.messages.get(id);
      if (row) this.show(row, state);
      document.getElementById(`msg-${id}`)?.toggleAttribute("data-speaking", id === messageId);
    }
  }

  /** Show a tool call as a chip under the reply that made it. */
  chip(call) {
    const node = document.getElementById(`msg-${call.messageId}`);
    if (!node) return;
    const label = `${call.name} · ${STATUS_LABELS[call.status] || call.status}`;
    const item = h(
      "li",
      { id: `chip-${call.id}` },
      h("button", {
        type: "button",
        class: "chip",
        dataset: { status: call.status },
        text: label,
        "aria-label": `Tool ${label}; show it in the tool panel`,
        onclick: () => this.onChip(call.id),
      }),
    );
    const old = document.getElementById(`chip-${call.id}`);
    if (old) old.replaceWith(item);
    else node.querySelector(".msg-tools").append(item);
  }

  /** The thread's usage, summed over its messages. */
  showUsage(messages) {
    const sum = {
      promptTokens: 0,
      completionTokens: 0,
      toolCalls: 0,
      wallMs: 0,
      audioInSeconds: 0,
      speechSeconds: 0,
    };
    for (const row of messages) {
      for (const key of Object.keys(sum)) sum[key] += row.usage?.[key] || 0;
    }
    const tokens = sum.promptTokens + sum.completionTokens;
    this.usage.hidden = tokens === 0 && sum.toolCalls === 0 && sum.audioInSeconds === 0;
    const parts = [`${count(tokens)} tokens`];
    if (sum.toolCalls)
      parts.push(`${count(sum.toolCalls)} tool ${sum.toolCalls === 1 ? "call" : "calls"}`);
    parts.push(`${(sum.wallMs / 1000).toFixed(1)} s`);
    if (sum.audioInSeconds) parts.push(`${sum.audioInSeconds.toFixed(1)} s heard`);
    if (sum.speechSeconds) parts.push(`${sum.speechSeconds.toFixed(1)} s spoken`);
    this.usage.textContent = parts.join(" · ");
    this.usage.title =
      `Prompt ${count(sum.promptTokens)} tokens, completion ${count(sum.completionTokens)}` +
      ` tokens; ${count(sum.wallMs)} ms of reply time`;
  }

  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}

/** A live turn's `voice` metrics: the wait the user heard, with its parts in the tooltip. */
function voiceMeta(voice) {
  const ms = (value) => (value == null ? "–" : `${count(value)} ms`);
  const seconds = (value) => `${(value || 0).toFixed(1)} s`;
  const title = [
    `End of speech to transcript: ${ms(voice.endOfSpeechToTranscriptMs)}`,
    `Transcript to first token: ${ms(voice.transcriptToFirstTokenMs)}`,
    `First token to first audio: ${ms(voice.firstTokenToFirstAudioMs)}`,
    `Audio: ${seconds(voice.audioInSeconds)} in, ${seconds(voice.audioOutSeconds)} out`,
  ];
  if (voice.interrupted) title.push("Interrupted by the user");
  return h("span", {
    class: "voice-metrics",
    title: title.join("\n"),
    text: `voice ${ms(voice.voiceToVoiceMs)}`,
  });
}
