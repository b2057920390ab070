// Voice: the microphone button (MediaRecorder → POST /voice) and the player of spoken replies
// (each `speech` event's audio, fetched with the token, played in order as it arrives).

import { request, VoicestackError } from "./voicestack.js";

const MAX_RECORDING_MS = 120_000;
const TYPES = [
  ["audio/webm;codecs=opus", "webm"],
  ["audio/webm", "webm"],
  ["audio/ogg;codecs=opus", "ogg"],
  ["audio/mp4", "m4a"],
];

/** Why this browser cannot record, or null when it can. */
export function micUnsupported() {
  if (!window.isSecureContext) return "The microphone needs HTTPS (or localhost).";
  if (!navigator.mediaDevices?.getUserMedia || !window.MediaRecorder) {
    return "This browser cannot record audio.";
  }
  return null;
}

/** Is `/voice` served? A route that only answers POST says 405 to GET; a missing one 404. */
export async function voiceRouteMissing(token) {
  try {
    await request("/voice", { token });
  } catch (err) {
    return err instanceof VoicestackError && err.status === 404;
  }
  return false;
}

/** The microphone button: click to record, click again (or Enter) to send, Escape to cancel. */
export class MicButton {
  constructor(button, { token, threadId, onSent, onError }) {
    this.button = button;
    this.label = button.querySelector(".mic-time");
    this.token = token;
    this.threadId = threadId;
    this.onSent = onSent;
    this.onError = onError;
    this.state = "idle";
    this.unavailable = null;
    button.addEventListener("click", () => this.toggle());
    button.disabled = false; // off in the page until now: a click before this went nowhere
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.state === "recording") this.cancel();
    });
    const reason = micUnsupported();
    if (reason) this.disable(reason);
    else voiceRouteMissing(token).then((missing) => missing && this.disable(VOICE_OFF));
  }

  /** Greyed out with the reason as its tooltip; a click says the reason again. */
  disable(reason) {
    this.stopTracks();
    this.unavailable = reason;
    this.setState("idle");
    this.button.setAttribute("aria-disabled", "true");
    this.button.title = reason;
    this.button.setAttribute("aria-label", `Voice unavailable: ${reason}`);
  }

  setState(state) {
    this.state = state;
    this.button.dataset.state = state;
    this.button.setAttribute("aria-pressed", String(state === "recording"));
    if (this.unavailable) return;
    const labels = {
      idle: "Record a voice message",
      recording: "Stop recording and send",
      sending: "Sending your voice message…",
    };
    this.button.setAttribute("aria-label", labels[state]);
    this.button.title = labels[state];
  }

  async toggle() {
    if (this.unavailable) return this.onError(this.unavailable);
    if (this.state === "recording") return this.recorder.stop();
    if (this.state === "sending") return;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      const denied = err.name === "NotAllowedError";
      return this.onError(denied ? "Microphone access was refused." : "No microphone was found.");
    }
    const [type, extension] = TYPES.find(([t]) => MediaRecorder.isTypeSupported(t)) || ["", "webm"];
    this.stream = stream;
    this.chunks = [];
    this.cancelled = false;
    this.recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
    this.recorder.addEventListener("dataavailable", (e) => e.data.size && this.chunks.push(e.data));
    this.recorder.addEventListener("stop", () => this.finish(type, extension));
    this.recorder.start(250);
    this.started = Date.now();
    this.tick = setInterval(() => this.showTime(), 250);
    this.limit = setTimeout(() => this.recorder.stop(), MAX_RECORDING_MS);
    this.setState("recording");
    this.showTime();
  }

  showTime() {
    const seconds = Math.floor((Date.now() - this.started) / 1000);
    this.label.textContent = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
  }

  cancel() {
    this.cancelled = true;
    this.recorder.stop();
  }

  stopTracks() {
    clearInterval(this.tick);
    clearTimeout(this.limit);
    if (this.label) this.label.textContent = "";
    for (const track of this.stream?.getTracks() || []) track.stop();
    this.stream = null;
  }

  async finish(type, extension) {
    this.stopTracks();
    if (this.cancelled || !this.chunks.length) return this.setState("idle");
    const audio = new Blob(this.chunks, { type: type.split(";")[0] || "audio/webm" });
    this.setState("sending");
    try {
      const threadId = await this.threadId();
      const form = new FormData();
      form.append("audio", audio, `voice.${extension}`);
      form.append("threadId", threadId);
      form.append("speak", "true");
      const answer = await request("/voice", { method: "POST", body: form, token: this.token });
      this.onSent(answer);
    } catch (err) {
      if (err.status === 404 && err.code === "not_found") this.disable(VOICE_OFF);
      this.onError(err.code === "no_speech" ? "No speech was heard; try again." : err.message);
    } finally {
      this.setState("idle");
    }
  }
}

const VOICE_OFF = "Voice is not enabled on this server.";

/** Plays spoken replies: segments of one message in `seq` order, fetched with the token. */
export class SpeechPlayer {
  constructor({ token, onChange }) {
    this.token = token;
    this.onChange = onChange;
    this.audio = new Audio();
    this.queue = [];
    this.following = null;
    this.queued = new Set();
    this.playing = null;
    // Whatever ends a segment (its end, an error, a refused play) moves on once, not twice.
    this.audio.addEventListener("ended", () => this.advance(this.playing));
    this.audio.addEventListener("error", () => this.advance(this.playing));
  }

  /** Speak `messageId`'s reply: `segments` already known, then each one as it arrives. */
  follow(messageId, segments = []) {
    this.stop();
    this.following = messageId;
    for (const segment of segments) this.add(segment);
  }

  /** Play one stored file (a voice message's recording). */
  playFile(fileId) {
    this.follow(`file:${fileId}`, [{ messageId: `file:${fileId}`, seq: 0, fileId }]);
  }

  /** A `speech` event arrived: play it if it belongs to the reply being followed. */
  add(segment) {
    if (segment.messageId !== this.following) return;
    const key = `${segment.messageId}:${segment.seq}`;
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.queue.push({ ...segment, blob: this.fetch(segment.fileId) });
    this.queue.sort((a, b) => a.seq - b.seq);
    if (!this.playing) this.next();
  }

  fetch(fileId) {
    const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
    return fetch(`/api/files/${encodeURIComponent(fileId)}`, { headers }).then((r) =>
      r.ok ? r.blob() : null,
    );
  }

  async next() {
    if (this.playing?.url) URL.revokeObjectURL(this.playing.url);
    const segment = this.queue.shift();
    this.playing = segment || null;
    this.onChange(this.following, Boolean(segment));
    if (!segment) return;
    const blob = await segment.blob.catch(() => null);
    if (this.playing !== segment) return; // stopped meanwhile
    if (!blob) return this.next();
    segment.url = URL.createObjectURL(blob);
    this.audio.src = segment.url;
    this.audio.play().catch(() => this.advance(segment));
  }

  advance(segment) {
    if (segment && segment === this.playing) this.next();
  }

  stop() {
    const was = this.following;
    this.queue = [];
    this.queued.clear();
    this.following = null;
    this.audio.pause();
    if (this.playing?.url) URL.revokeObjectURL(this.playing.url);
    if (this.playing) this.onChange(was, false);
    this.playing = null;
  }
}
