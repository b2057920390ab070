// The Talk mode's microphone tap, run on the audio thread (an AudioWorklet module): mono float
// samples in, 20 ms frames of 16-bit little-endian PCM at the session's rate out, posted to the
// page, which sends each one as a binary message on the audio socket.
//
// The page runs its AudioContext at the session's rate, so the browser has resampled already and
// each input sample is one output sample. Where a browser will not connect a microphone to a
// context at another rate than the device's (Firefox), the context runs at the device's rate and
// the frames are made here: each output sample is the mean of the input samples of its period
// (which also keeps what lies above the new Nyquist frequency from folding back as noise).

const FRAME_MS = 20;

class TalkCapture extends AudioWorkletProcessor {
  constructor({ processorOptions }) {
    super();
    // Input samples per output sample (`sampleRate` is the context's, a global of this scope).
    this.step = sampleRate / processorOptions.sampleRate;
    this.bytes = Math.round((processorOptions.sampleRate * FRAME_MS) / 1000) * 2;
    this.frame = new DataView(new ArrayBuffer(this.bytes));
    this.filled = 0;
    this.sum = 0;
    this.count = 0;
    this.position = 0;
    this.open = true;
    this.port.onmessage = (event) => {
      if (event.data === "stop") this.open = false;
    };
  }

  process(inputs) {
    const samples = inputs[0]?.[0];
    if (samples && this.open) {
      for (let i = 0; i < samples.length; i++) this.take(samples[i]);
    }
    return this.open; // false lets the browser drop the node once the page has stopped it
  }

  take(sample) {
    this.sum += sample;
    this.count += 1;
    this.position += 1;
    if (this.position < this.step) return;
    const mean = this.sum / this.count;
    while (this.position >= this.step) {
      this.position -= this.step;
      this.push(mean);
    }
    this.sum = 0;
    this.count = 0;
  }

  push(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.frame.setInt16(this.filled, Math.round(clipped * 0x7fff), true);
    this.filled += 2;
    if (this.filled < this.bytes) return;
    const buffer = this.frame.buffer;
    this.port.postMessage(buffer, [buffer]); // moved to the page, not copied
    this.frame = new DataView(new ArrayBuffer(this.bytes));
    this.filled = 0;
  }
}

registerProcessor("talk-capture", TalkCapture);
