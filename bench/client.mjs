//! Part 4, client cost: ffmpeg.wasm time, CPU time and memory of the extension while it streams 1280x720 at 30 fps.

import { startHost } from './lib/host.mjs';
import { startClockServer } from './lib/clock-server.mjs';
import { launchBroadcaster } from './lib/broadcaster.mjs';
import { request, sleep } from './lib/http.mjs';
import { processMeter, threadMeter, pssBytes } from './lib/proc.mjs';
import { summary } from './lib/stats.mjs';
import { parsePlaylist } from './server.mjs';

const MIB = 1048576;
const WINDOW_S = 30;

/** Follows a live playlist and adds up the durations of the segments it has listed so far. */
function mediaFollower(playlistUrl) {
  const seen = new Set();
  let seconds = 0;
  let count = 0;
  const poll = async () => {
    const r = await request(playlistUrl);
    if (r.status !== 200) return;
    const text = r.body.toString();
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const m = lines[i].match(/^#EXTINF:([\d.]+)/);
      if (!m) continue;
      const uri = lines.slice(i + 1).find((l) => l.trim() && !l.startsWith('#'));
      if (uri && !seen.has(uri)) { seen.add(uri); seconds += Number(m[1]); count++; }
    }
  };
  return { poll, get seconds() { return seconds; }, get count() { return count; } };
}

/** Run part 4: stream a busy 1280x720 tab for the longest of `cfg.client.points` seconds. */
export async function runClient({ root, cfg, log }) {
  const clock = await startClockServer();
  const server = await startHost(root, 'client');
  const b = await launchBroadcaster({ serverUrl: server.url, segmentSeconds: 2 });
  const points = [...cfg.client.points].sort((x, y) => x - y);
  try {
    const { streamId } = await b.streamTab(`${clock.url}/clock.html?busy=1`, { width: 1280, height: 720 });
    const media = mediaFollower(`${server.url}/playlist/${streamId}.m3u8`);
    const cpu = processMeter(() => b.extensionPids());
    const ffmpeg = threadMeter(() => b.extensionPids(), 'DedicatedWorker');
    const t0 = b.startedAt;
    const windows = [];
    const memory = [];
    const sample = async () => {
      await media.poll();
      const st = await b.status();
      return { t: Date.now(), media: media.seconds, cpu: cpu.total(), ffmpeg: ffmpeg.total(),
        remux_ms: st?.remux_ms_total ?? NaN, media_ms: st?.media_ms_total ?? NaN, status: st };
    };
    // Start counting once the first segment is listed (ffmpeg.wasm loads first), waiting at most a minute.
    for (const until = Date.now() + 60_000; media.count === 0; await sleep(250)) {
      if (Date.now() > until) throw new Error('no segment reached the server within a minute of starting the broadcast');
      await media.poll();
    }
    let last = await sample();
    const end = t0 + points.at(-1) * 1000;
    let nextPoint = 0;
    while (nextPoint < points.length) {
      const due = Math.min(t0 + points[nextPoint] * 1000, last.t + WINDOW_S * 1000);
      await sleep(due - Date.now());
      const now = await sample();
      const dm = now.media - last.media;
      if (dm > 0) {
        windows.push({ cpu_s: (now.cpu - last.cpu) / dm, ffmpeg_cpu_s: (now.ffmpeg - last.ffmpeg) / dm, media_s: dm,
          ffmpeg_s: (now.remux_ms - last.remux_ms) / (now.media_ms - last.media_ms) });
      }
      last = now;
      if (Date.now() >= t0 + points[nextPoint] * 1000 - 50) {
        const pids = b.extensionPids();
        const pss = pids.reduce((a, pid) => a + pssBytes(pid), 0) / MIB;
        const heap = await b.jsHeapBytes().catch(() => NaN);
        memory.push({ at_s: points[nextPoint], pss_mib: pss, js_heap_mib: heap / MIB, processes: pids.length });
        log(`  client at ${points[nextPoint]} s: extension PSS ${pss.toFixed(1)} MiB (${pids.length} processes), `
          + `JS heap ${(heap / MIB).toFixed(1)} MiB, ${media.count} segments, ${media.seconds.toFixed(0)} media s`);
        nextPoint++;
      }
      if (windows.length) {
        const w = windows.at(-1);
        log(`  client window: ffmpeg.wasm ${w.ffmpeg_s.toFixed(3)} s (worker CPU ${w.ffmpeg_cpu_s.toFixed(3)} s), `
          + `extension CPU ${w.cpu_s.toFixed(3)} s per media s`);
      }
      if (Date.now() > end + 60_000) break;
    }
    cpu.stop(); ffmpeg.stop();
    if (media.count === 0) throw new Error('no segment reached the server while the extension streamed');
    // The first window holds the start-up (loading ffmpeg.wasm, the first keyframe): steady state is the rest.
    const steady = windows.length >= 3 ? windows.slice(1) : windows;
    return {
      windows, memory, segments: media.count, media_seconds: media.seconds,
      ffmpeg_s_per_media_s: summary(steady.map((w) => w.ffmpeg_s)),
      ffmpeg_cpu_s_per_media_s: summary(steady.map((w) => w.ffmpeg_cpu_s)),
      final_status: last.status && { segments_sent: last.status.segments_sent, segments_dropped: last.status.segments_dropped,
        segments_waiting: last.status.segments_waiting, last_error: last.status.last_error },
      cpu_s_per_media_s: summary(steady.map((w) => w.cpu_s)),
      cmd: 'scripts/bench (bench/client.mjs)' + (points.at(-1) >= 1800 ? ' --long' : ''),
      method: `The extension streams a 1280x720 tab with motion (bench/clock/clock.html?busy=1) in 2 s segments for
${(points.at(-1) / 60).toFixed(1)} minutes. Figures per media second come from ${WINDOW_S} s windows (median and min–max over the
windows, leaving out the first one, which holds the start-up, when there are at least three).
ffmpeg.wasm time is the extension's own count (wall time of its remux calls over the media time they
produced, from the offscreen document's status) and, as an independent check, the CPU time of the extension
process's \`DedicatedWorker\` threads (ffmpeg.wasm runs its core in a dedicated worker) from /proc, polled every
200 ms, over the EXTINF seconds the server lists. CPU is user+system time of the extension's renderer processes
(Chromium's \`--extension-process\` children of this browser: the offscreen document, its workers, the worker
and the idle options page the benchmark drives it from) from /proc. Memory is the PSS of those processes
(/proc/PID/smaps_rollup) and the offscreen document's JS heap as the extension reports it
(\`performance.memory.usedJSHeapSize\`; it leaves out wasm memories and workers, which PSS includes).`,
    };
  } finally {
    await b.close();
    await server.stop();
    await clock.close();
  }
}
