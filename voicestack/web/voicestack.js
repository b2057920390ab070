// voicestack.js: a small client for voicestack's live HTTP API. An ES module, no dependencies.
//
//   import { watch, threadFeed, request, mutation } from "/web/voicestack.js";
//
//   const list = watch("threads.list", {}, (threads) => render(threads), { token });
//   const feed = threadFeed(threadId, {
//     message: (row) => show(row),               // row.text is the whole text so far
//     delta: (delta, row) => grow(row, delta),   // row.text already includes delta.text
//   }, { token });
//   list.close(); feed.close();
//
// Both streams are EventSources: they reconnect by themselves, and a thread feed resumes exactly
// where it stopped (Last-Event-ID), so no text is lost or repeated.

/** An error answered by the server (`{"error": {"code", "message"}}`) or a failed request. */
export class VoicestackError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.name = "VoicestackError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** `path` with `?token=` added when there is a token (EventSource cannot send headers). */
export function withToken(path, token, params = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
  }
  if (token) url.searchParams.set("token", token);
  return url.pathname + url.search;
}

/** The value of the page's `vs_csrf` cookie (set at sign-in), or null. */
export function csrfToken() {
  const found = document.cookie.split("; ").find((c) => c.startsWith("vs_csrf="));
  return found ? found.slice("vs_csrf=".length) : null;
}

/**
 * fetch() a voicestack route: JSON or FormData body, bearer token; resolves to the JSON.
 * Without a token the browser's sign-in cookie authenticates, and a write carries the
 * `X-CSRF-Token` header the server asks of it.
 */
export async function request(path, { method = "GET", body, token, signal } = {}) {
  const init = { method, headers: {}, signal };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  else if (!["GET", "HEAD"].includes(method.toUpperCase()) && csrfToken()) {
    init.headers["X-CSRF-Token"] = csrfToken();
  }
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new VoicestackError(0, "network_error", "The server cannot be reached.");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const message = error.message || `The server answered ${response.status}.`;
    throw new VoicestackError(response.status, error.code || "http_error", message, error);
  }
  return data;
}

/** Run a query; resolves to its value. */
export async function query(name, args = {}, { token } = {}) {
  const body = await request(`/api/query/${encodeURIComponent(name)}`, {
    method: "POST",
    body: { args },
    token,
  });
  return body.value;
}

/** Run a mutation; resolves to its value once committed. */
export async function mutation(name, args = {}, { token } = {}) {
  const body = await request(`/api/mutation/${encodeURIComponent(name)}`, {
    method: "POST",
    body: { args },
    token,
  });
  return body.value;
}

/** A fatal error is a refusal (4xx) that retrying will not change; anything else is retried. */
function isFatal(err) {
  return (
    err instanceof VoicestackError && err.status >= 400 && err.status < 500 && err.status !== 429
  );
}

const RETRY_DELAYS_MS = [1000, 2000, 5000, 10000, 30000];

// One EventSource, reopened when the browser gives up on it (an HTTP error rather than a broken
// connection, which EventSource retries by itself). `probe` asks the server why: a refusal ends
// the stream with a fatal error, anything else reopens it after a pause, resuming from the last
// event id.
class LiveStream {
  constructor({ url, events, probe, onOpen, onError }) {
    this.url = url;
    this.events = events;
    this.probe = probe;
    this.onOpen = onOpen;
    this.onError = onError;
    this.lastId = null;
    this.failures = 0;
    this.timer = null;
    this.closed = false;
    this.source = null;
    this.connect();
  }

  connect() {
    const source = new EventSource(this.url(this.lastId));
    this.source = source;
    for (const [kind, handle] of Object.entries(this.events)) {
      source.addEventListener(kind, (event) => {
        // An event without an id field has lastEventId "" (a snapshot event) on a fresh source.
        const id = event.lastEventId === "" ? null : Number(event.lastEventId);
        if (id !== null) this.lastId = id;
        handle(JSON.parse(event.data), id);
      });
    }
    source.addEventListener("open", () => {
      this.failures = 0;
      this.onOpen();
    });
    source.addEventListener("error", (event) => {
      if (this.closed || this.source !== source) return;
      if (event instanceof MessageEvent && event.data) {
        const data = JSON.parse(event.data);
        this.onError({ ...data.error, version: data.version, fatal: false, retrying: false });
      } else if (source.readyState === EventSource.CLOSED) {
        this.recover(source);
      } else {
        this.onError({
          code: "disconnected",
          message: "The connection dropped; reconnecting.",
          fatal: false,
          retrying: true,
        });
      }
    });
  }

  async recover(source) {
    source.close();
    try {
      await this.probe();
    } catch (err) {
      if (this.closed) return;
      if (isFatal(err)) {
        this.onError({ code: err.code, message: err.message, status: err.status, fatal: true });
        this.close();
        return;
      }
    }
    if (this.closed) return;
    const delay = RETRY_DELAYS_MS[Math.min(this.failures, RETRY_DELAYS_MS.length - 1)];
    this.failures += 1;
    this.onError({
      code: "disconnected",
      message: "The server is unavailable; retrying.",
      fatal: false,
      retrying: true,
    });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
  }
}

/**
 * Watch a query: `onValue(value, version)` now and after every change that alters its value.
 * `onError({code, message, fatal, retrying})`: the query failed, the connection dropped
 * (retrying), or the server refused the watch (fatal: the stream is closed).
 * Returns `{close()}`.
 */
export function watch(name, args, onValue, { token, onError = () => {}, onOpen = () => {} } = {}) {
  const path = `/api/watch/${encodeURIComponent(name)}`;
  const json = JSON.stringify(args || {});
  const stream = new LiveStream({
    url: (lastId) => withToken(path, token, { args: json, lastEventId: lastId ?? undefined }),
    events: { value: (data) => onValue(data.value, data.version) },
    probe: () => query(name, args || {}, { token }),
    onOpen,
    onError,
  });
  return { close: () => stream.close() };
}

/**
 * A thread as its feed describes it: messages (with their text so far), tool calls and speech.
 *
 * `apply(kind, data, id)` folds one feed event in: a `message` row replaces the message (its
 * text included), a `delta` appends to it, a `tool_call` row replaces the call, `speech` adds a
 * spoken segment. Numbered events at or before the cursor were already applied and are ignored,
 * so replaying a feed from any point is safe. Returns the changed row, or null if ignored.
 */
export class ThreadState {
  constructor() {
    this.messages = new Map();
    this.toolCalls = new Map();
    this.speech = new Map();
    this.cursor = null;
    this.ready = false;
    this.lastSeq = new Map();
  }

  apply(kind, data, id = null) {
    if (id !== null && this.cursor !== null && id <= this.cursor) return null;
    const changed = this.fold(kind, data);
    if (id !== null) this.cursor = id;
    return changed;
  }

  fold(kind, data) {
    switch (kind) {
      case "message": {
        const row = { ...data, text: data.text ?? "" };
        this.messages.set(row.id, row);
        this.lastSeq.delete(row.id);
        return row;
      }
      case "delta": {
        const last = this.lastSeq.get(data.messageId);
        if (last !== undefined && data.seq <= last) return null;
        this.lastSeq.set(data.messageId, data.seq);
        let row = this.messages.get(data.messageId);
        if (!row) {
          // Resumed with `since` past the message's creation: all we know is that it streams.
          row = { id: data.messageId, role: "assistant", status: "streaming", text: "" };
          this.messages.set(row.id, row);
        }
        row.text += data.text;
        return row;
      }
      case "tool_call": {
        const row = { ...data };
        this.toolCalls.set(row.id, row);
        return row;
      }
      case "speech": {
        const segments = this.speech.get(data.messageId) || [];
        if (segments.some((s) => s.seq === data.seq)) return null;
        segments.push({ ...data });
        segments.sort((a, b) => a.seq - b.seq);
        this.speech.set(data.messageId, segments);
        return data;
      }
      case "ready":
        this.ready = true;
        return data;
      default:
        return null;
    }
  }

  /** The messages in thread order. */
  orderedMessages() {
    return [...this.messages.values()].sort((a, b) => (a.order ?? 0) - (b.order ?? 0));
  }

  /** The tool calls, oldest first. */
  orderedToolCalls() {
    return [...this.toolCalls.values()].sort((a, b) => (a.createdAt ?? 0) - (b.createdAt ?? 0));
  }
}

/**
 * Follow a thread's feed. `handlers` (all optional):
 *   message(row, state)          a message appeared or changed; row.text replaces the old text
 *   delta(delta, row, state)     text appended to a streaming reply; row.text is the whole text
 *   toolCall(row, state)         a tool call appeared or changed status, progress, result
 *   speech(segment, state)       a spoken sentence `{messageId, seq, fileId, text}` is ready
 *   ready(cursor, state)         the snapshot is complete; live events follow
 *   open()                       connected (again)
 *   error({code, message, fatal, retrying})
 * Options: `token`, `since` (an event id: start after it instead of from a snapshot), `state`
 * (a ThreadState to continue). Returns `{close(), state}`.
 */
export function threadFeed(threadId, handlers = {}, { token, since, state } = {}) {
  const thread = state || new ThreadState();
  const on = (name) => handlers[name] || (() => {});
  const path = `/api/threads/${encodeURIComponent(threadId)}/events`;
  const start = since ?? thread.cursor;
  const fold = (kind, notify) => (data, id) => {
    const row = thread.apply(kind, data, id);
    if (row !== null) notify(row, data);
  };
  const stream = new LiveStream({
    url: (lastId) => withToken(path, token, { since: lastId ?? start ?? undefined }),
    events: {
      message: fold("message", (row) => on("message")(row, thread)),
      delta: fold("delta", (row, data) => on("delta")(data, row, thread)),
      tool_call: fold("tool_call", (row) => on("toolCall")(row, thread)),
      speech: fold("speech", (row) => on("speech")(row, thread)),
      ready: fold("ready", (row) => on("ready")(row.cursor, thread)),
    },
    probe: () => request(`/api/threads/${encodeURIComponent(threadId)}`, { token }),
    onOpen: on("open"),
    onError: on("error"),
  });
  return { close: () => stream.close(), state: thread };
}
