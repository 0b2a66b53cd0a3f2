//! Part 4, client cost: CPU time, ffmpeg.wasm time and memory of the extension while it streams a busy tab,
//! for each quality preset (pipeline/src/presets.rs) and for the default preset with the microphone mixed in
//! and the camera in the corner (issue 9).

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startHost } from './lib/host.mjs';
import { startClockServer } from './lib/clock-server.mjs';
import { launchBroadcaster } from './lib/broadcaster.mjs';
import { request, sleep } from './lib/http.mjs';
import { processMeter, threadMeter, pssBytes } from './lib/proc.mjs';
import { summary } from './lib/stats.mjs';

const run = promisify(execFile);
const MIB = 1048576;
const WINDOW_S = 30;

/** What each preset encodes (pipeline/src/presets.rs: `Quality::size`, `video_bps`; all 30 fps). */
export const PRESETS = {
  '480p': { width: 854, height: 480, mbps: 1 },
  '720p': { width: 1280, height: 720, mbps: 2.5 },
  '1080p': { width: 1920, height: 1080, mbps: 5 },
};

/** The configurations part 4 can measure, by name; `cfg.client.configs` picks some (STANDARD_CONFIGS by default). */
export const CONFIGS = {
  '480p': { quality: '480p', mic: false, overlay: false },
  '720p': { quality: '720p', mic: false, overlay: false },
  '1080p': { quality: '1080p', mic: false, overlay: false },
  '720p+mic+camera': { quality: '720p', mic: true, overlay: true },
  // Not measured by default: to tell the microphone's share from the camera's.
  '720p+mic': { quality: '720p', mic: true, overlay: false },
  '720p+camera': { quality: '720p', mic: false, overlay: true },
};
/** What `cfg.client.configs` defaults to: the three presets and 720p with both on (issue 9). */
export const STANDARD_CONFIGS = ['480p', '720p', '1080p', '720p+mic+camera'];
/** The configuration that stands for "the client" in the summary table (the extension's defaults). */
export const DEFAULT_CONFIG = '720p';

export function describeConfig(c) {
  const p = PRESETS[c.quality];
  return `${c.quality} (${p.width}x${p.height}, ${p.mbps} Mbit/s, 30 fps)${c.quality === '720p' && !c.mic && !c.overlay ? ', the default' : ''}`
    + `${c.mic ? ', microphone mixed in' : ''}${c.overlay ? ', camera in the corner' : ''}`;
}

/** Follows a live playlist and adds up the durations of the segments it has listed so far. */
export function mediaFollower(playlistUrl) {
  const seen = new Set();
  let seconds = 0;
  let count = 0;
  let last = null;
  const poll = async () => {
    const r = await request(playlistUrl);
    if (r.status !== 200) return;
    const text = r.body.toString();
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const m = lines[i].match(/^#EXTINF:([\d.]+)/);
      if (!m) continue;
      const uri = lines.slice(i + 1).find((l) => l.trim() && !l.startsWith('#'));
      if (uri && !seen.has(uri)) { seen.add(uri); seconds += Number(m[1]); count++; last = { uri: new URL(uri.trim(), playlistUrl).href, duration: Number(m[1]) }; }
    }
  };
  return { poll, get seconds() { return seconds; }, get count() { return count; }, get last() { return last; } };
}

/** Picture size, frame rate (video frames over the playlist's EXTINF `extinf`) and audio of one stored segment, as ffprobe reads it. */
async function probe(url, extinf) {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-count_packets', '-show_entries',
    'stream=codec_type,codec_name,width,height,nb_read_packets:format=duration', '-of', 'json', url], { maxBuffer: 16 << 20 });
  const j = JSON.parse(stdout);
  const v = j.streams.find((s) => s.codec_type === 'video');
  const a = j.streams.find((s) => s.codec_type === 'audio');
  return { width: v?.width, height: v?.height, video: v?.codec_name, audio: a?.codec_name ?? null,
    frames: Number(v?.nb_read_packets), fps: v && extinf > 0 ? Number(v.nb_read_packets) / extinf : NaN,
    extinf, probed_duration: Number(j.format?.duration) };
}

/** The panel's threshold: remux time per media second over its last 6 s (`Strain::TOO_SLOW`). */
export const TOO_SLOW = 0.85;

/**
 * What the panel's `Strain` (pipeline/src/presets.rs) would have made of the status readings: for every
 * reading, the 6 s before it (at least 4 s of media), remux time per media second and whether segments stayed
 * waiting (two or more, growing or steady, the whole time).
 */
function panelView(readings) {
  const ratios = [];
  let behind = 0;
  for (let i = 0; i < readings.length; i++) {
    let j = i;
    while (j > 0 && readings[i].t - readings[j].t < 6000) j--;
    const a = readings[j]; const z = readings[i];
    if (z.t - a.t < 6000) continue;
    const media = z.media_ms - a.media_ms;
    if (media >= 4000) ratios.push((z.remux_ms - a.remux_ms) / media);
    const span = readings.slice(j, i + 1);
    if (span.every((r) => r.waiting >= 2) && z.waiting >= a.waiting) behind++;
  }
  return { windows: ratios.length, max_remux_per_media_s: ratios.length ? Math.max(...ratios) : NaN,
    over_too_slow: ratios.filter((x) => x > TOO_SLOW).length, uploads_behind: behind,
    max_waiting: readings.length ? Math.max(...readings.map((r) => r.waiting)) : NaN };
}

/** Measure one configuration: a fresh browser streams a busy tab of the preset's size until the last point. */
async function measure({ server, clock, name, config, points, log }) {
  const preset = PRESETS[config.quality];
  const b = await launchBroadcaster({ serverUrl: server.url, segmentSeconds: 2, quality: config.quality,
    mic: config.mic, overlay: config.overlay });
  try {
    const { streamId } = await b.streamTab(`${clock.url}/clock.html?busy=1`, { width: preset.width, height: preset.height });
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
    // The panel's view (pipeline/src/presets.rs, `Strain`): the status every 2 s, so the run can say whether
    // the "choose a lower preset" advice would have shown (remux time per media s over 6 s above TOO_SLOW, or
    // two or more segments waiting for 6 s).
    const readings = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const st = await b.status().catch(() => null);
        if (st?.phase === 'live') {
          readings.push({ t: Date.now(), remux_ms: st.remux_ms_total, media_ms: st.media_ms_total, waiting: st.segments_waiting });
        }
        await sleep(2000);
      }
    })();
    // Start counting once the first segment is listed (ffmpeg.wasm loads first), waiting at most a minute.
    for (const until = Date.now() + 60_000; media.count === 0; await sleep(250)) {
      if (Date.now() > until) throw new Error(`${name}: no segment reached the server within a minute of starting the broadcast`);
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
          cpu_pct: (100 * (now.cpu - last.cpu)) / ((now.t - last.t) / 1000),
          ffmpeg_s: (now.remux_ms - last.remux_ms) / (now.media_ms - last.media_ms) });
      }
      last = now;
      if (Date.now() >= t0 + points[nextPoint] * 1000 - 50) {
        const pids = b.extensionPids();
        const pss = pids.reduce((a, pid) => a + pssBytes(pid), 0) / MIB;
        const heap = await b.jsHeapBytes().catch(() => NaN);
        memory.push({ at_s: points[nextPoint], pss_mib: pss, js_heap_mib: heap / MIB, processes: pids.length });
        log(`  client ${name} at ${points[nextPoint]} s: extension PSS ${pss.toFixed(1)} MiB (${pids.length} processes), `
          + `JS heap ${(heap / MIB).toFixed(1)} MiB, ${media.count} segments, ${media.seconds.toFixed(0)} media s`);
        nextPoint++;
      }
      if (windows.length) {
        const w = windows.at(-1);
        log(`  client ${name} window: ffmpeg.wasm ${w.ffmpeg_s.toFixed(3)} s (worker CPU ${w.ffmpeg_cpu_s.toFixed(3)} s), `
          + `extension CPU ${w.cpu_s.toFixed(3)} s per media s (${w.cpu_pct.toFixed(0)}% of a core)`);
      }
      if (Date.now() > end + 60_000) break;
    }
    cpu.stop(); ffmpeg.stop();
    polling = false;
    await poller;
    if (media.count === 0) throw new Error(`${name}: no segment reached the server while the extension streamed`);
    const st = last.status;
    // What was really encoded: the newest stored segment, read back by ffprobe.
    const seg = await probe(media.last.uri, media.last.duration);
    const problems = [];
    if (seg.width !== preset.width || seg.height !== preset.height) {
      problems.push(`its segment is ${seg.width}x${seg.height}, not ${preset.width}x${preset.height}`);
    }
    if (st && st.quality !== config.quality) problems.push(`the extension reports preset ${st.quality}`);
    if (config.mic && st?.mic !== 'on') problems.push(`the microphone is not mixed in (mic ${st?.mic}, ${st?.notice})`);
    if (config.overlay && st?.overlay !== true) problems.push(`the camera is not in the corner (${st?.notice})`);
    log(`  client ${name}: segment ${seg.width}x${seg.height} ${seg.video}+${seg.audio} at ${seg.fps.toFixed(1)} fps; `
      + `extension status quality ${st?.quality}, mic ${st?.mic}, overlay ${st?.overlay}${st?.notice ? `, notice: ${st.notice}` : ''}`);
    // The first window holds the start-up (loading ffmpeg.wasm, the first keyframe): steady state is the rest.
    const steady = windows.length >= 3 ? windows.slice(1) : windows;
    return {
      name, ...config, describe: describeConfig(config), points,
      ok: problems.length === 0, problems,
      segment: seg,
      windows, memory, segments: media.count, media_seconds: media.seconds,
      pss_growth_mib: memory.length > 1 ? memory.at(-1).pss_mib - memory[0].pss_mib : NaN,
      cpu_pct: summary(steady.map((w) => w.cpu_pct)),
      cpu_s_per_media_s: summary(steady.map((w) => w.cpu_s)),
      ffmpeg_s_per_media_s: summary(steady.map((w) => w.ffmpeg_s)),
      ffmpeg_cpu_s_per_media_s: summary(steady.map((w) => w.ffmpeg_cpu_s)),
      composite_ms_avg: st?.composite_ms_avg ?? NaN,
      panel: panelView(readings),
      final_status: st && { segments_sent: st.segments_sent, segments_dropped: st.segments_dropped,
        segments_waiting: st.segments_waiting, last_error: st.last_error, quality: st.quality, mic: st.mic,
        overlay: st.overlay, notice: st.notice },
    };
  } finally {
    await b.close();
  }
}

/**
 * Run part 4: for each configuration in `cfg.client.configs` (names in CONFIGS; STANDARD_CONFIGS by default), stream a
 * busy tab for the longest of `cfg.client.points` seconds (a configuration may carry its own `points`).
 * The default configuration's figures also stay at the top level of the result (the summary table reads them).
 */
export async function runClient({ root, cfg, log }) {
  const clock = await startClockServer();
  const server = await startHost(root, 'client');
  const wanted = (cfg.client.configs ?? STANDARD_CONFIGS).map((c) => (typeof c === 'string' ? { name: c } : c));
  const configs = [];
  const failures = [];
  try {
    for (const { name, points: own } of wanted) {
      const config = CONFIGS[name];
      if (!config) throw new Error(`unknown client configuration ${name}; they are ${Object.keys(CONFIGS).join(', ')}`);
      const points = [...(own ?? cfg.client.points)].sort((x, y) => x - y);
      log(`  client: ${name} — ${describeConfig(config)}, ${points.at(-1)} s`);
      try {
        const r = await measure({ server, clock, name, config, points, log });
        if (!r.ok) failures.push(`${name}: ${r.problems.join('; ')}`);
        configs.push(r);
      } catch (e) {
        failures.push(`${name}: ${e.message}`);
        configs.push({ name, ...config, describe: describeConfig(config), points, ok: false, problems: [e.message] });
        log(`  client ${name} FAILED: ${e.message}`);
      }
    }
  } finally {
    await server.stop();
    await clock.close();
  }
  const longest = Math.max(...configs.map((c) => c.points.at(-1)));
  const main = configs.find((c) => c.name === DEFAULT_CONFIG && c.windows) ?? configs.find((c) => c.windows);
  const result = {
    ...(main ? {
      main_config: main.name, windows: main.windows, memory: main.memory, segments: main.segments, media_seconds: main.media_seconds,
      ffmpeg_s_per_media_s: main.ffmpeg_s_per_media_s, ffmpeg_cpu_s_per_media_s: main.ffmpeg_cpu_s_per_media_s,
      cpu_s_per_media_s: main.cpu_s_per_media_s, final_status: main.final_status,
    } : {}),
    configs,
    cmd: `scripts/bench${longest >= 1800 ? ' --long' : longest >= 600 ? ' --presets' : ''} (bench/client.mjs)`,
    method: `For each configuration, the extension, in a fresh browser, streams a tab with motion (bench/clock/clock.html?busy=1)
the size of the preset's picture in 2 s segments with low latency on (parts, the default) for
${configs.map((c) => `${c.name} ${(c.points.at(-1) / 60).toFixed(1)} min`).join(', ')}. Figures per media second come from ${WINDOW_S} s windows (median and min–max over the
windows, leaving out the first one, which holds the start-up, when there are at least three).
ffmpeg.wasm time is the extension's own count (wall time of its remux calls over the media time they
produced, from the offscreen document's status) and, as an independent check, the CPU time of the extension
process's \`DedicatedWorker\` threads (ffmpeg.wasm runs its core in a dedicated worker) from /proc, polled every
200 ms, over the EXTINF seconds the server lists. CPU is user+system time of the extension's renderer processes
(Chromium's \`--extension-process\` children of this browser: the offscreen document with the recorder's H.264
encoder, its workers, the worker and the idle options page the benchmark drives it from) from /proc, per media
second and as a share of one core (100% = one core). Memory is the PSS of those processes
(/proc/PID/smaps_rollup) and the offscreen document's JS heap as the extension reports it
(\`performance.memory.usedJSHeapSize\`; it leaves out wasm memories and workers, which PSS includes).
With the microphone and camera on, Chromium's built-in fake devices stand in (a beep; a moving test pattern at
the size the extension asks for), granted to the extension over the DevTools protocol, and the broadcast starts with
a real click on the toolbar button (Chrome refuses devices to the allowlisted extension the other rows use). Each configuration
passes only if ffprobe reads its newest stored segment at the preset's size and the extension reports the
preset, the microphone mixed in and the camera in the corner as asked.`,
  };
  if (failures.length) {
    const e = new Error(`client configuration(s) failed: ${failures.join(' | ')}`);
    e.result = result;
    throw e;
  }
  return result;
}
