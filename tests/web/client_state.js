// Run in the browser by tests/test_web_client.py (page.evaluate): voicestack.js against a fake
// EventSource that behaves as the spec says (an event without an id keeps the last event id;
// a dropped connection reconnects the same object; an HTTP error closes it for good).
async ({ realThreadId, token }) => {
  const client = await import("/web/voicestack.js");
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  class FakeEventSource extends EventTarget {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSED = 2;
    static made = [];

    constructor(url) {
      super();
      this.url = url;
      this.readyState = FakeEventSource.CONNECTING;
      this.lastEventId = "";
      FakeEventSource.made.push(this);
    }

    open() {
      this.readyState = FakeEventSource.OPEN;
      this.dispatchEvent(new Event("open"));
    }

    emit(type, data, id) {
      if (id !== undefined) this.lastEventId = String(id);
      const init = { data: JSON.stringify(data), lastEventId: this.lastEventId };
      this.dispatchEvent(new MessageEvent(type, init));
    }

    drop() {
      this.readyState = FakeEventSource.CONNECTING;
      this.dispatchEvent(new Event("error"));
    }

    fail() {
      this.readyState = FakeEventSource.CLOSED;
      this.dispatchEvent(new Event("error"));
    }

    close() {
      this.readyState = FakeEventSource.CLOSED;
    }
  }

  // ---- ThreadState alone ----
  const state = new client.ThreadState();
  const texts = [];
  const note = (changed) => texts.push(changed === null ? null : state.messages.get("m1")?.text);
  note(state.apply("message", { id: "m1", role: "assistant", status: "streaming", text: "Hel" }));
  note(state.apply("ready", { cursor: 10 }, 10));
  note(state.apply("delta", { messageId: "m1", text: "lo", seq: 1 }, 11));
  note(state.apply("delta", { messageId: "m1", text: "lo", seq: 1 }, 11)); // the same event again
  note(state.apply("delta", { messageId: "m1", text: "lo", seq: 1 }, 12)); // the same seq again
  note(state.apply("delta", { messageId: "m1", text: " world", seq: 2 }, 13));
  note(state.apply("message", { id: "m1", role: "assistant", status: "complete", text: "Hi!" }, 14));
  note(state.apply("delta", { messageId: "m1", text: "old", seq: 2 }, 9)); // before the cursor
  state.apply("delta", { messageId: "m2", text: "resumed", seq: 4 }, 15);
  state.apply("speech", { messageId: "m1", seq: 2, fileId: "f2", text: "b" }, 16);
  state.apply("speech", { messageId: "m1", seq: 1, fileId: "f1", text: "a" }, 17);
  const repeated = state.apply("speech", { messageId: "m1", seq: 1, fileId: "f1", text: "a" }, 18);
  const stateResult = {
    texts,
    cursor: state.cursor,
    unknown: state.messages.get("m2"),
    speech: state.speech.get("m1").map((s) => s.fileId),
    repeatedSpeech: repeated,
  };

  // ---- threadFeed over the fake EventSource ----
  const RealEventSource = window.EventSource;
  window.EventSource = FakeEventSource;
  const calls = [];
  const handlers = {
    message: (row) => calls.push(["message", row.id, row.status, row.text]),
    delta: (delta, row) => calls.push(["delta", row.id, delta.text, row.text]),
    toolCall: (row) => calls.push(["toolCall", row.id, row.status]),
    speech: (segment) => calls.push(["speech", segment.messageId, segment.seq]),
    ready: (cursor) => calls.push(["ready", cursor]),
    open: () => calls.push(["open"]),
    error: (err) => calls.push(["error", err.code, err.fatal, Boolean(err.retrying)]),
  };
  try {
    const feed = client.threadFeed(realThreadId, handlers, { token });
    const source = FakeEventSource.made[0];
    source.open();
    source.emit("message", { id: "u1", role: "user", status: "complete", text: "Hi", order: 1 });
    source.emit("message", { id: "a1", role: "assistant", status: "streaming", text: "Hel", order: 2 });
    source.emit("tool_call", { id: "c1", status: "running", progress: 0.5 });
    source.emit("ready", { cursor: 20 }, 20);
    source.emit("delta", { messageId: "a1", text: "lo", seq: 3 }, 21);
    source.emit("delta", { messageId: "a1", text: " there", seq: 4 }, 22);
    source.drop(); // EventSource reconnects by itself, sending Last-Event-ID: 22
    source.open();
    source.emit("delta", { messageId: "a1", text: " there", seq: 4 }, 22); // a replay: ignored
    source.emit("delta", { messageId: "a1", text: "!", seq: 5 }, 23);
    source.emit("tool_call", { id: "c1", status: "done", result: { ok: true } }, 24);
    source.emit("speech", { messageId: "a1", seq: 1, fileId: "f1", text: "Hello" }, 25);
    source.emit("message", { id: "a1", role: "assistant", status: "complete", text: "Hello there!", order: 2 }, 26);
    source.fail(); // an HTTP error: the feed asks the server why, then reopens after 26
    await sleep(1500);
    const reopened = FakeEventSource.made.length === 2 ? FakeEventSource.made[1].url : null;
    feed.close();

    const missing = client.threadFeed("thr_does_not_exist", handlers, { token });
    FakeEventSource.made[FakeEventSource.made.length - 1].fail();
    await sleep(300);
    missing.close();

    const values = [];
    const errors = [];
    const watched = client.watch("threads.list", {}, (value, version) => values.push([value, version]), {
      token,
      onError: (err) => errors.push([err.code, err.fatal]),
    });
    const watchSource = FakeEventSource.made[FakeEventSource.made.length - 1];
    watchSource.emit("value", { value: [{ id: "t1" }], version: 7 }, 7);
    watchSource.emit("error", { error: { code: "boom", message: "Failed." }, version: 8 }, 8);
    watched.close();

    return {
      state: stateResult,
      firstUrl: FakeEventSource.made[0].url,
      calls,
      finalText: feed.state.messages.get("a1").text,
      reopened,
      watchUrl: watchSource.url,
      values,
      errors,
    };
  } finally {
    window.EventSource = RealEventSource;
  }
}
