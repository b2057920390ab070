// The send box: Enter sends, Shift+Enter starts a new line; Stop shows while a reply streams.

import { byId } from "./dom.js";

const MAX_HEIGHT_PX = 200;

/** The composer form; `onSend(text)` resolves when the message is saved. */
export class Composer {
  constructor({ onSend, onStop }) {
    this.form = byId("composer");
    this.input = byId("composer-input");
    this.send = byId("send");
    this.stop = byId("stop");
    this.onSend = onSend;
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submit();
      }
    });
    this.input.addEventListener("input", () => this.fit());
    this.stop.addEventListener("click", () => onStop());
    this.input.disabled = false; // the page's HTML starts it disabled, until Enter sends
    this.fit();
  }

  /** Grow with the text up to a limit, then scroll. */
  fit() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, MAX_HEIGHT_PX)}px`;
    this.send.disabled = !this.input.value.trim() || this.busy;
  }

  async submit() {
    const text = this.input.value.trim();
    if (!text || this.busy) return;
    this.busy = true;
    this.fit();
    try {
      await this.onSend(text);
      this.input.value = "";
    } catch {
      // onSend told the user; the text stays in the box to try again.
    } finally {
      this.busy = false;
      this.fit();
    }
  }

  /** Show Stop while a reply of this thread is queued or streaming. */
  setReplying(replying) {
    const hadFocus = document.activeElement === this.stop;
    this.stop.hidden = !replying;
    if (hadFocus && !replying) this.input.focus();
  }

  focus() {
    this.input.focus();
  }
}
