// Talk mode: a spoken conversation with the open thread over its audio WebSocket (DESIGN §9).
//
// The microphone (echo cancellation on) goes through an AudioWorklet (talk-worklet.js) as 20 ms
// frames of 16-bit PCM; the server finds the turns. Its reply audio is scheduled back to back on
// the same AudioContext, and the page reports how much of each reply has actually played, so a
// barge-in keeps only the words the user heard. The transcript is not drawn here: every turn is
// a message on the thread's feed, which the page already shows.

import { byId } from "./dom.js";
import { ReplyPlayer } from "./talk-player.js";
import { withToken } from "./voicestack.js";

// 24 kHz both ways: what speech providers synthesize, so replies arrive without resampling.
const RATE = 24000;
const MAX_BUFFERED = 256 * 1024; // unsent bytes on the socket past which microphone frames drop
const PLAY_OUT_MS = 5000; // the longest the page plays what it holds after the server closed
const MIC = {
  echoCancellation: true, // the reply playing from the speakers is not heard as the user
  noiseSuppression: true,
  autoGainControl: true,
  channelCount: 1,
};
const LABELS = {
  connecting: "Connecting…",
  listening: "Listening",
  thinking: "Thinking…",
  speaking: "Speaking",
  ended: "Conversation ended",
};
const MIC_ERRORS = {
  NotAllowedError: "Microphone access was refused.",
  NotFoundError: "No microphone was found.",
  NotReadableError: "The microphone is in use by another program.",
};

/** Why this browser cannot hold a spoken conversation, or null when it can. */
export function talkUnsupported() {
  if (!window.isSecureContext) return "The microphone needs HTTPS (or localhost).";
  if (!navigator.mediaDevices?.getUserMedia || !window.AudioWorkletNode) {
    return "This browser cannot hold a spoken conversation.";
  }
  return null;
}

/** The Talk button and the conversation's status bar. */
export class Talk {
  constructor({ token, threadId, onStart, onError }) {
    this.token = token;
    this.threadId = threadId; // async () => the open thread's id, created if need be
    this.onStart = onStart;
    this.onError = onError;
    this.button = byId("talk");
    this.bar = byId("talk-bar");
    this.label = byId("talk-state");
    this.session = null;
    this.starting = false;
    this.unavailable = talkUnsupported();
    this.button.addEventListener("click", () => (this.session ? this.end() : this.start()));
    this.button.disabled = false; // off in the page until now: a click before this went nowhere
    byId("talk-end").addEventListener("click", () => this.end());
    if (this.unavailable) {
      this.button.setAttribute("aria-disabled", "true");
      this.button.title = this.unavailable;
      this.button.setAttribute("aria-label", `Talk unavailable: ${this.unavailable}`);
    }
  }

  async start() {
    if (this.unavailable) return this.onError(this.unavailable);
    if (this.starting || this.session) return;
    this.starting = true;
    // Made during the click, so the browser lets it play without asking.
    let context = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
    let threadId;
    try {
      threadId = await this.threadId();
    } catch (err) {
      context.close();
      return this.onError(err.message);
    } finally {
      this.starting = false;
    }
    const session = { context, ready: false, pending: false, replyOpen: false, overReply: false };
    this.session = session;
    this.onStart();
    this.refresh();
    try {
      session.stream = await navigator.mediaDevices.getUserMedia({ audio: MIC });
      if (this.session !== session) return this.finish(session, null); // ended meanwhile
      try {
        session.node = await capture(context, session.stream);
      } catch (err) {
        if (err.name !== "NotSupportedError") throw err;
        // No microphone into a context at another rate (Firefox): the worklet resamples.
        context.close();
        session.context = context = new AudioContext({ latencyHint: "interactive" });
        session.node = await capture(context, session.stream);
      }
    } catch (err) {
      if (this.session !== session) return this.finish(session, null);
      const message = MIC_ERRORS[err.name] || `The conversation could not start: ${err.message}`;
      this.finish(session, message);
      return this.onError(message);
    }
    if (this.session !== session) return this.finish(session, null);
    session.player = new ReplyPlayer(context, RATE, {
      onPlayed: (messageId, ms) => this.send(session, { type: "played", messageId, ms }),
      onChange: () => this.refresh(),
    });
    const socket = new WebSocket(socketUrl(threadId, this.token));
    session.socket = socket;
    socket.binaryType = "arraybuffer";
    socket.onopen = () => this.send(session, { type: "start", sampleRate: RATE, format: "pcm16" });
    socket.onmessage = (event) => this.receive(session, event.data);
    socket.onclose = (event) => this.closed(session, event);
    session.node.port.onmessage = (event) => {
      const open = session.ready && socket.readyState === WebSocket.OPEN;
      if (open && socket.bufferedAmount < MAX_BUFFERED) socket.send(event.data);
    };
  }

  /** End the conversation: `stop`, close, and let go of the microphone. */
  end() {
    const session = this.session;
    if (!session) return;
    this.send(session, { type: "stop" });
    this.finish(session, null);
  }

  /** End any conversation and hide its bar (the page opens another thread). */
  close() {
    this.end();
    this.bar.hidden = true;
  }

  send(session, message) {
    if (session.socket?.readyState === WebSocket.OPEN) session.socket.send(JSON.stringify(message));
  }

  receive(session, data) {
    if (this.session !== session) return;
    if (typeof data !== "string") {
      session.player.play(data);
      return;
    }
    const message = JSON.parse(data);
    switch (message.type) {
      case "ready":
        session.ready = true;
        break;
      case "user_speech_started":
        // Speech over a reply is a turn only if it interrupts it (the server sends `clear`).
        session.overReply = session.replyOpen || session.player.busy;
        break;
      case "user_speech_stopped":
        if (!session.overReply) session.pending = true;
        break;
      case "transcript":
        session.pending = true;
        break;
      case "reply_started":
        session.replyOpen = true;
        session.pending = true;
        break;
      case "reply_audio":
        session.player.sentence(message.messageId);
        break;
      case "clear":
        session.overReply = false;
        session.pending = false;
        session.player.clear();
        break;
      case "reply_stopped":
        session.replyOpen = false;
        session.pending = false;
        session.player.stopped(message.messageId);
        break;
      case "error":
        session.failed = message.code;
        if (!session.replyOpen) session.pending = false;
        this.onError(message.message);
        break;
    }
    this.refresh();
  }

  closed(session, event) {
    if (this.session !== session) return; // ended by the page
    const reason = event.reason || (event.code === 1006 ? "connection lost" : "closed");
    const text = event.code === 1000 ? null : `Ended: ${reason} (${event.code})`;
    // An `error` event before the close has said why already, in words.
    if (text && session.failed !== event.reason) this.onError(`The conversation ended: ${reason}.`);
    // A server that closes (at shutdown, say) has let its last sentence play out: so does the page.
    this.finish(session, text, true);
  }

  finish(session, text, playOut = false) {
    const current = this.session === session;
    if (current) this.session = null;
    session.node?.port.postMessage("stop");
    for (const track of session.stream?.getTracks() || []) track.stop();
    const socket = session.socket;
    // Closing a socket still connecting makes Chrome log an error: close it once it is open.
    if (socket?.readyState === WebSocket.CONNECTING) socket.onopen = () => socket.close(1000);
    else if (socket?.readyState === WebSocket.OPEN) socket.close(1000);
    const { player, context } = session;
    let open = true;
    const silence = () => {
      if (!open) return;
      open = false;
      player?.close();
      if (context.state !== "closed") context.close();
    };
    if (playOut && player?.busy) {
      player.onChange = () => player.busy || silence();
      setTimeout(silence, PLAY_OUT_MS);
    } else {
      silence();
    }
    if (current) this.show("ended", text);
  }

  refresh() {
    const session = this.session;
    if (!session) return;
    if (!session.ready) this.show("connecting");
    else if (session.player.busy) this.show("speaking");
    else this.show(session.pending ? "thinking" : "listening");
  }

  show(state, text = null) {
    const label = text || LABELS[state];
    const same = this.bar.dataset.state === state && this.label.textContent === label;
    if (same && !this.bar.hidden) return;
    const on = state !== "ended";
    this.bar.hidden = false;
    this.bar.dataset.state = state;
    this.label.textContent = label;
    byId("talk-end").hidden = !on;
    this.button.dataset.state = on ? "on" : "off";
    this.button.setAttribute("aria-pressed", String(on));
    if (this.unavailable) return;
    const name = on ? "End the conversation" : "Talk: a spoken conversation";
    this.button.setAttribute("aria-label", name);
    this.button.title = name;
  }
}

/** The microphone into the capture worklet, whose frames come out of `node.port`. */
async function capture(context, stream) {
  await context.audioWorklet.addModule("/web/talk-worklet.js");
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "talk-capture", {
    numberOfInputs: 1,
    numberOfOutputs: 0,
    channelCount: 1,
    channelCountMode: "explicit",
    processorOptions: { sampleRate: RATE },
  });
  source.connect(node);
  return node;
}

/** The thread's audio socket on this server (`?token=` as for the event streams). */
function socketUrl(threadId, token) {
  const path = `/api/threads/${encodeURIComponent(threadId)}/audio`;
  const url = new URL(withToken(path, token), location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url;
}
