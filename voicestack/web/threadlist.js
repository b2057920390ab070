// The sidebar: the caller's threads, newest activity first, live from `threads.list`.

import { ago, byId, fullTime, h, isoTime } from "./dom.js";
import { watch } from "./voicestack.js";

export const UNTITLED = "Untitled thread";

/** The thread list: watches `threads.list` and marks the open thread. */
export class ThreadList {
  constructor({ token, onStatus }) {
    this.list = byId("thread-list");
    this.empty = byId("threads-empty");
    this.threads = [];
    this.current = null;
    this.onChange = null;
    this.stream = watch("threads.list", { limit: 100 }, (threads) => this.render(threads), {
      token,
      onOpen: () => onStatus("live"),
      onError: (err) => onStatus(err.fatal ? "offline" : "reconnecting", err),
    });
    // Relative times ("2 min ago") age while the page stays open.
    this.clock = setInterval(() => this.render(this.threads), 30_000);
  }

  /** The thread's title as the list knows it, or null when it is not listed (yet). */
  title(id) {
    const thread = this.threads.find((t) => t.id === id);
    return thread ? thread.title || UNTITLED : null;
  }

  /** The agent that answers the thread as the list knows it, or null when it is not listed. */
  agent(id) {
    return this.threads.find((t) => t.id === id)?.agent ?? null;
  }

  select(id) {
    this.current = id;
    this.render(this.threads);
  }

  render(threads) {
    this.threads = threads;
    const focused = this.list.contains(document.activeElement)
      ? document.activeElement.dataset.threadId
      : null;
    this.empty.hidden = threads.length > 0;
    const items = threads.map((thread) => {
      const current = thread.id === this.current;
      return h(
        "li",
        {},
        h(
          "a",
          {
            href: `#${thread.id}`,
            class: "thread-link",
            "aria-current": current ? "page" : null,
            dataset: { threadId: thread.id },
          },
          h("span", { class: "thread-title", text: thread.title || UNTITLED }),
          h("time", {
            class: "thread-time",
            datetime: isoTime(thread.updatedAt),
            title: fullTime(thread.updatedAt),
            text: ago(thread.updatedAt),
          }),
        ),
      );
    });
    this.list.replaceChildren(...items);
    this.onChange?.();
    if (focused) this.list.querySelector(`[data-thread-id="${CSS.escape(focused)}"]`)?.focus();
  }

  close() {
    clearInterval(this.clock);
    this.stream.close();
  }
}
