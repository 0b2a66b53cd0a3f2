// Records the captured tab as the extension does (H.264 + Opus WebM, 30 ms slices, each read
// with arrayBuffer()), with nothing else of the extension. Variant words (bench/tabcapture.mjs):
//   noaudio   the picture only          norec     capture (and playback) only, no recorder
//   noplay    no playback of the sound  relay     the picture through a track processor/generator
//   mixaudio  the sound through a Web Audio destination
//   nominmax  the picture without the extension's min = max size constraints
//   intab     in an extension page opened as a tab, not the offscreen document
//   webcodecs no recorder: both tracks through track processors into WebCodecs encoders
//             (VideoEncoder H.264, AudioEncoder Opus), each chunk's bytes copied out
//   cbr       with webcodecs: the video encoder in constant bitrate mode (default: variable)
//   quality   with webcodecs: the video encoder's latencyMode "quality" (default: "realtime")
self.__n = 0;
self.__bytes = 0; // what the encoders or the recorder handed out
chrome.runtime.onMessage.addListener((m, _s, reply) => {
  if (m.to === 'off') start(m.id, m.variant);
  if (m.to === 'count') reply({ slices: self.__n, bytes: self.__bytes, error: self.__err ? `${self.__err} (${self.__audio})` : null });
});
async function start(id, variant) {
  try {
    const s = await navigator.mediaDevices.getUserMedia({
      audio: variant.includes('noaudio') ? false : { mandatory: { chromeMediaSource: 'tab', chromeMediaSourceId: id } },
      video: { mandatory: variant.includes('nominmax') ? { chromeMediaSource: 'tab', chromeMediaSourceId: id }
        : { chromeMediaSource: 'tab', chromeMediaSourceId: id, minWidth: 1280, maxWidth: 1280, minHeight: 720, maxHeight: 720, maxFrameRate: 30 } } });
    self.__s = s;
    let audio = s.getAudioTracks();
    if (audio.length && !variant.includes('noplay')) {
      const ac = new AudioContext(); ac.createMediaStreamSource(s).connect(ac.destination); ac.resume(); self.__ac = ac;
    }
    if (variant.includes('norec')) return;
    if (variant.includes('webcodecs')) {
      return codecs(s.getVideoTracks()[0], audio[0], variant.includes('cbr') ? 'constant' : 'variable',
        variant.includes('quality') ? 'quality' : 'realtime');
    }
    let video = s.getVideoTracks();
    if (variant.includes('relay')) {
      const proc = new MediaStreamTrackProcessor({ track: video[0], maxBufferSize: 1 });
      const gen = new MediaStreamTrackGenerator({ kind: 'video' });
      proc.readable.pipeTo(gen.writable).catch((e) => { self.__err = String(e); });
      video = [gen];
    }
    if (audio.length && variant.includes('mixaudio')) {
      const mx = new AudioContext({ sampleRate: 48000 });
      const dst = mx.createMediaStreamDestination();
      mx.createMediaStreamSource(new MediaStream(audio)).connect(dst); mx.resume(); self.__mx = mx;
      audio = dst.stream.getAudioTracks();
    }
    const r = new MediaRecorder(new MediaStream([...video, ...audio]), {
      mimeType: audio.length ? 'video/webm;codecs="avc1.42E01F,opus"' : 'video/webm;codecs="avc1.42E01F"',
      videoBitsPerSecond: 2_500_000, audioBitsPerSecond: 128_000, videoKeyFrameIntervalDuration: 920 });
    r.ondataavailable = async (e) => { self.__bytes += e.data.size; await e.data.arrayBuffer(); self.__n++; };
    r.start(30);
  } catch (e) { self.__err = String(e); }
}

// The recorder-free path: what a chunk costs is copying its bytes out, as a muxer would.
function codecs(video, audio, bitrateMode, latencyMode) {
  const out = (c) => { const b = new Uint8Array(c.byteLength); c.copyTo(b); self.__n++; self.__bytes += c.byteLength; };
  const fail = (e) => { self.__err = String(e); };
  const ve = new VideoEncoder({ output: out, error: fail });
  ve.configure({ codec: 'avc1.42E01F', width: 1280, height: 720, bitrate: 2_500_000, framerate: 30, bitrateMode,
    latencyMode, avc: { format: 'annexb' } });
  let frames = 0;
  const vr = new MediaStreamTrackProcessor({ track: video }).readable.getReader();
  (async () => {
    for (;;) {
      const { value, done } = await vr.read();
      if (done) return;
      if (ve.encodeQueueSize > 3) { value.close(); continue; }
      ve.encode(value, { keyFrame: frames++ % 28 === 0 });
      value.close();
    }
  })().catch(fail);
  if (!audio) return;
  const ae = new AudioEncoder({ output: out, error: (e) => { self.__err = `audio encoder: ${e}`; } });
  let configured = false;
  const ar = new MediaStreamTrackProcessor({ track: audio }).readable.getReader();
  (async () => {
    for (;;) {
      const { value, done } = await ar.read();
      if (done) return;
      if (!configured) {
        self.__audio = `${value.sampleRate} Hz x${value.numberOfChannels} ${value.format}`;
        ae.configure({ codec: 'opus', sampleRate: value.sampleRate, numberOfChannels: value.numberOfChannels, bitrate: 128_000 });
        configured = true;
      }
      ae.encode(value);
      value.close();
    }
  })().catch(fail);
}
