// A captured tab's sound, read and encoded (Opus, WebCodecs) off the offscreen document's main
// thread. The document hands over the readable side of a MediaStreamTrackProcessor; Chromium
// then delivers the sound's frames to this thread. Read on the document's main thread, which
// also composes the camera into the tab's 1080p pictures, three frames in four were lost
// (ARCHITECTURE.md, "Recording a tab"). The recorder (pipeline/src/tracks.rs) places and muxes
// what this worker hands back.
//
// In:  { start: { readable, bitrate } }   once
//      { stop: true }                     read no more, hand out what the encoder holds
// Out: { format: [channels, rate], first_us, at_ms }   at the first frame: its format, its own
//                                          timestamp, and when it came (ms since the Unix epoch)
//      { chunks: [[timestamp_us, ArrayBuffer], ...] }  encoded, in order
//      { off: String }                    its format cannot be encoded: no sound is read
//      { error: String }                  the sound cannot be read or encoded
//      { stopped: true }                  after a stop: every chunk was posted

let reader = null;
let encoder = null;
let batch = [];
let posting = false;

function post() {
  posting = false;
  if (batch.length === 0) return;
  const chunks = batch;
  batch = [];
  postMessage({ chunks }, chunks.map(([, data]) => data));
}

function output(chunk) {
  const data = new ArrayBuffer(chunk.byteLength);
  chunk.copyTo(data);
  batch.push([chunk.timestamp, data]);
  // One message per turn of this thread's loop: chunks that came together go together.
  if (!posting) {
    posting = true;
    setTimeout(post, 0);
  }
}

async function run({ readable, bitrate }) {
  reader = readable.getReader();
  for (;;) {
    let r;
    try {
      r = await reader.read();
    } catch (e) {
      if (encoder) postMessage({ error: `the sound could not be read: ${e}` });
      return;
    }
    if (r.done) return;
    const data = r.value;
    if (!encoder) {
      const format = [data.numberOfChannels, data.sampleRate];
      postMessage({ format, first_us: data.timestamp, at_ms: performance.timeOrigin + performance.now() });
      encoder = new AudioEncoder({ output, error: (e) => postMessage({ error: `the sound could not be encoded: ${e}` }) });
      try {
        encoder.configure({ codec: 'opus', numberOfChannels: format[0], sampleRate: format[1], bitrate });
      } catch (e) {
        data.close();
        postMessage({ off: `this sound's format cannot be encoded: ${e}` });
        reader.cancel().catch(() => {});
        return;
      }
    }
    if (encoder.state === 'configured') encoder.encode(data);
    data.close();
  }
}

async function stop() {
  // Not awaited: the stream's cancel goes back to the document that made it.
  if (reader) reader.cancel().catch(() => {});
  if (encoder && encoder.state === 'configured') {
    await encoder.flush().catch(() => {});
    encoder.close();
  }
  post();
  postMessage({ stopped: true });
}

onmessage = ({ data }) => {
  if (data.start) run(data.start);
  else if (data.stop) stop();
};
