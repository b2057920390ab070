// Talk mode's playback: the reply audio of a spoken conversation, frames scheduled back to back
// on an AudioContext, and how much of each reply has actually played (what `played` reports).
//
// Each binary frame becomes an AudioBufferSourceNode started where the one before it ends, so
// sentences play without gaps or clicks; where the frames ran dry, playback restarts just ahead
// of now, and the reply's played time skips that gap. `clear` stops every node at once.

const REPORT_MS = 250; // how often `played` is reported while a reply plays
const LEAD_S = 0.05; // where playback starts (or restarts after running dry): just ahead of now

/** The reply audio of one session: frames played gap-free, and how much of each reply played. */
export class ReplyPlayer {
  constructor(context, rate, { onPlayed, onChange }) {
    this.context = context;
    this.rate = rate; // of the session's audio
    this.onPlayed = onPlayed; // (messageId, ms)
    this.onChange = onChange; // a reply began or ended playing
    this.reply = null; // the reply whose frames arrive now
    this.playing = new Set(); // replies with audio still scheduled
    this.next = 0; // context time at which the next frame starts
    this.timer = setInterval(() => {
      for (const reply of this.playing) this.report(reply, this.heard(reply));
    }, REPORT_MS);
  }

  get busy() {
    return this.playing.size > 0;
  }

  /** `reply_audio`: a sentence of `messageId` follows; the last frame so far ended the last one. */
  sentence(messageId) {
    if (this.reply?.id !== messageId) {
      this.reply = { id: messageId, samples: 0, frames: new Set(), spans: [], reported: 0 };
    }
    this.endSentence(this.reply);
  }

  /** One binary frame of the current reply: 16-bit little-endian PCM at the session's rate. */
  play(data) {
    const reply = this.reply;
    const count = data.byteLength >> 1;
    if (!reply || count === 0) return; // audio after `clear`, before the next sentence: dropped
    const pcm = new DataView(data);
    const buffer = this.context.createBuffer(1, count, this.rate);
    const samples = buffer.getChannelData(0);
    for (let i = 0; i < count; i++) samples[i] = pcm.getInt16(i * 2, true) / 0x8000;
    const node = this.context.createBufferSource();
    node.buffer = buffer;
    node.connect(this.context.destination);
    const now = this.context.currentTime;
    const at = this.next > now ? this.next : now + LEAD_S;
    // A new span of the reply starts where playback ran dry: its frames play from `at` on.
    if (at !== this.next || reply.spans.length === 0) reply.spans.push({ at, from: reply.samples });
    node.start(at);
    this.next = at + count / this.rate;
    reply.samples += count;
    const frame = { node, end: reply.samples, sentenceEnd: false };
    node.onended = () => this.ended(reply, frame);
    reply.frames.add(frame);
    reply.last = frame;
    if (!this.playing.has(reply)) {
      this.playing.add(reply);
      this.onChange();
    }
  }

  /** `reply_stopped`: no more audio comes for `messageId`; what it holds plays out. */
  stopped(messageId) {
    const reply = this.reply;
    if (reply?.id !== messageId) return;
    this.reply = null;
    reply.stopped = true;
    this.endSentence(reply);
    if (reply.frames.size === 0) this.done(reply);
  }

  /** `clear`: silence now, and forget every frame held. */
  clear() {
    for (const reply of this.playing) {
      for (const { node } of reply.frames) {
        node.onended = null;
        node.stop();
      }
    }
    this.playing.clear();
    this.reply = null;
    this.next = 0;
    this.onChange();
  }

  close() {
    clearInterval(this.timer);
    this.clear();
  }

  // The last frame so far ends a sentence: its end is reported exactly once it has played (now,
  // if the frames ran dry before the next sentence came).
  endSentence(reply) {
    const last = reply.last;
    if (!last) return;
    last.sentenceEnd = true;
    if (!reply.frames.has(last)) this.report(reply, last.end);
  }

  ended(reply, frame) {
    reply.frames.delete(frame);
    // The end of a sentence is reported exactly, not at the next tick.
    if (frame.sentenceEnd) this.report(reply, frame.end);
    if (reply.frames.size === 0 && reply.stopped) this.done(reply);
  }

  done(reply) {
    this.report(reply, reply.samples);
    if (this.playing.delete(reply)) this.onChange();
  }

  // How many samples of `reply` the listener has heard: those that have left the speakers.
  heard(reply) {
    const latency = this.context.outputLatency || this.context.baseLatency || 0;
    const now = this.context.currentTime - latency;
    let heard = 0;
    for (const [n, span] of reply.spans.entries()) {
      if (span.at > now) break;
      const until = reply.spans[n + 1]?.from ?? reply.samples;
      heard = Math.min(until, span.from + Math.floor((now - span.at) * this.rate));
    }
    return heard;
  }

  report(reply, samples) {
    const ms = Math.floor((samples * 1000) / this.rate);
    if (ms <= reply.reported) return;
    reply.reported = ms;
    this.onPlayed(reply.id, ms);
  }
}
