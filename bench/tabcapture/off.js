// Records the captured tab as the extension does (H.264 + Opus WebM, 30 ms slices, each read
// with arrayBuffer()), with nothing else of the extension. Variant words (bench/tabcapture.mjs):
//   noaudio   the picture only          norec     capture (and playback) only, no recorder
//   noplay    no playback of the sound  relay     the picture through a track processor/generator
//   mixaudio  the sound through a Web Audio destination
//   nominmax  the picture without the extension's min = max size constraints
//   intab     in an extension page opened as a tab, not the offscreen document
self.__n = 0;
chrome.runtime.onMessage.addListener((m, _s, reply) => {
  if (m.to === 'off') start(m.id, m.variant);
  if (m.to === 'count') reply({ slices: self.__n, error: self.__err || null });
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
    r.ondataavailable = async (e) => { await e.data.arrayBuffer(); self.__n++; };
    r.start(30);
  } catch (e) { self.__err = String(e); }
}
