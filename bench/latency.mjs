//! Part 1, glass-to-glass latency: the extension streams a tab that shows the time; the player, in another
//! browser, reads the time back from the frame it shows and compares it with its own clock.

import { startHost } from './lib/host.mjs';
import { startClockServer } from './lib/clock-server.mjs';
import { launchViewer, openPlayer } from './lib/viewer.mjs';
import { launchBroadcaster } from './lib/broadcaster.mjs';
import { percentile, summary } from './lib/stats.mjs';
import { sleep } from './lib/http.mjs';

/** Wait until the viewer has decoded a first clock frame; bounded by `ms`. */
export async function firstFrame(player, ms) {
  const until = Date.now() + ms;
  for (;;) {
    const r = await player.read();
    if (r.samples.length) return r.samples[0].t;
    if (Date.now() > until) {
      throw new Error(`the player showed no readable clock frame within ${ms / 1000} s `
        + `(player state ${r.state}, ${r.frames} frames presented, ${r.unreadable} unreadable)`);
    }
    await sleep(250);
  }
}

/** How a setting reads in the log. */
const label = (segmentS, lowLatency, mic, overlay) => `${segmentS} s segments, ${lowLatency ? 'low latency (parts)' : 'whole segments'}`
  + `${mic ? ', mic mixed in' : ''}${overlay ? ', camera in the corner' : ''}`;

async function oneRun({ server, clock, viewer, segmentS, lowLatency, mic, overlay, seconds, log }) {
  const b = await launchBroadcaster({ serverUrl: server.url, segmentSeconds: segmentS, lowLatency, mic, overlay });
  try {
    const { streamId } = await b.streamTab(`${clock.url}/clock.html`, { width: 1280, height: 720 });
    const player = await openPlayer(viewer.context, `${server.url}/play/${streamId}`);
    try {
      const t0 = await firstFrame(player, 60_000 + 4 * segmentS * 1000);
      await sleep(t0 + seconds * 1000 - Date.now());
      const r = await player.read();
      const window = r.samples.filter((s) => s.t <= t0 + seconds * 1000);
      const ms = window.map((s) => s.ms);
      const own = window.map((s) => s.player_ms).filter((x) => x != null);
      const edge = window.map((s) => s.edge_ms).filter((x) => x != null);
      const target = window.map((s) => s.target_ms).filter((x) => x != null);
      const st = await b.status();
      // With the microphone or camera asked for, the run counts only if the extension really used them.
      if (mic && st?.mic !== 'on') throw new Error(`the microphone is not mixed in (mic ${st?.mic}: ${st?.notice})`);
      if (overlay && st?.overlay !== true) throw new Error(`the camera is not in the corner (${st?.notice})`);
      const out = {
        p50: percentile(ms, 50) / 1000, p95: percentile(ms, 95) / 1000,
        player_p50: percentile(own, 50) / 1000, player_p95: percentile(own, 95) / 1000,
        frames: r.frames, undecoded: r.unreadable, samples: window.length, config: r.config,
        behind_edge: percentile(edge, 50) / 1000,
        // hls.js's target latency: PART-HOLD-BACK (or the whole-segment hold-back) plus 1 s per stall seen.
        target: target.length ? percentile(target, 50) / 1000 : NaN,
        // When hls.js saw its buffer run dry, in s from the first frame.
        stalls: (r.stalls ?? []).map((x) => Number(((x.t - t0) / 1000).toFixed(1))),
        remux_per_segment: st && st.segments_sent ? st.remux_ms_total / (st.media_ms_total / (segmentS * 1000)) / 1000 : NaN,
        remux_per_media_s: st && st.media_ms_total ? st.remux_ms_total / st.media_ms_total : NaN,
        ack: st ? st.ack_latency_ms_avg / 1000 : NaN, dropped: st?.segments_dropped ?? NaN,
        fps: window.length / seconds,
        start_s: (t0 - b.startedAt) / 1000,
        low_latency: r.low_latency,
        // Every frame's figure (ms), so the report pools percentiles over all frames of all runs.
        samples_ms: ms.map((x) => Math.round(x)),
        // The longest time between two frames shown: a frozen page shows none for seconds.
        longest_gap_s: window.reduce((m, s, i) => (i ? Math.max(m, s.t - window[i - 1].t) : m), 0) / 1000,
        unstuck: r.unstuck ?? 0, leaps: r.leaps ?? 0, rejoins: r.rejoins ?? 0,
      };
      log(`  latency ${label(segmentS, lowLatency, mic, overlay)}: p50 ${out.p50.toFixed(2)} s, p95 ${out.p95.toFixed(2)} s, player's own p50 `
        + `${out.player_p50.toFixed(2)} s over ${out.samples} frames (${out.undecoded} unreadable), first frame after ${out.start_s.toFixed(1)} s; `
        + `player ${out.behind_edge.toFixed(2)} s behind the live edge (target ${out.target.toFixed(2)} s; stalls at ${JSON.stringify(out.stalls)} s), ffmpeg.wasm ${out.remux_per_media_s.toFixed(2)} s per media s, upload ack ${out.ack.toFixed(2)} s; `
        + `longest without a frame ${out.longest_gap_s.toFixed(2)} s, unstuck ${out.unstuck}, leaps ${out.leaps}, rejoins ${out.rejoins}`);
      return out;
    } finally {
      await player.page.close();
    }
  } finally {
    await b.close();
  }
}

/**
 * Run part 1 for each setting in `cfg.latency.settings` (segment length, parts on or off, the microphone mixed in and
 * the camera in the corner or not), `cfg.latency.runs` times each.
 */
export async function runLatency({ root, cfg, log }) {
  // CHALKSTREAM_LATENCY_RUNS=N runs each setting N times; CHALKSTREAM_LATENCY_SETTINGS=0,2 keeps only those
  // settings of the mode (by index: in the default mode 0 is 2 s segments with parts).
  const runsEach = Number(process.env.CHALKSTREAM_LATENCY_RUNS) || cfg.latency.runs;
  const pick = process.env.CHALKSTREAM_LATENCY_SETTINGS?.split(',').map(Number);
  const settings = pick ? cfg.latency.settings.filter((_, i) => pick.includes(i)) : cfg.latency.settings;
  const clock = await startClockServer();
  const server = await startHost(root, 'latency');
  const viewer = await launchViewer();
  try {
    const rows = [];
    let config;
    for (const { segment_s: segmentS, low_latency: lowLatency, mic = false, overlay = false } of settings) {
      const runs = [];
      for (let i = 0; i < runsEach; i++) {
        runs.push(await oneRun({ server, clock, viewer, segmentS, lowLatency, mic, overlay, seconds: cfg.latency.seconds, log }));
      }
      config ??= runs[0].config;
      rows.push({
        segment_s: segmentS, low_latency: lowLatency, mic, overlay,
        // Whether the player really played in low-latency mode (it decides from the playlist).
        player_low_latency: runs.every((r) => r.low_latency === true),
        measured_p50: summary(runs.map((r) => r.p50)), measured_p95: summary(runs.map((r) => r.p95)),
        // Over every frame of every run together, not a median of per-run figures.
        pooled_p50: percentile(runs.flatMap((r) => r.samples_ms), 50) / 1000,
        pooled_p95: percentile(runs.flatMap((r) => r.samples_ms), 95) / 1000,
        // Each run on its own (the worst one is shown beside the pooled figures).
        per_run: runs.map((r) => ({ p50: r.p50, p95: r.p95, frames: r.samples, start_s: r.start_s,
          longest_gap_s: r.longest_gap_s, unstuck: r.unstuck, leaps: r.leaps, rejoins: r.rejoins, stalls: r.stalls.length })),
        player_p50: summary(runs.map((r) => r.player_p50)), player_p95: summary(runs.map((r) => r.player_p95)),
        frames: runs.reduce((a, r) => a + r.samples, 0), undecoded: runs.reduce((a, r) => a + r.undecoded, 0),
        start_s: summary(runs.map((r) => r.start_s)),
        behind_edge: summary(runs.map((r) => r.behind_edge)),
        target: summary(runs.map((r) => r.target)),
        stalls: summary(runs.map((r) => r.stalls.length)),
        remux_per_segment: summary(runs.map((r) => r.remux_per_segment)),
        remux_per_media_s: summary(runs.map((r) => r.remux_per_media_s)),
        ack: summary(runs.map((r) => r.ack)),
        fps: summary(runs.map((r) => r.fps)),
        dropped: runs.reduce((a, r) => a + r.dropped, 0),
      });
    }
    return {
      rows, seconds: cfg.latency.seconds,
      player_settings: `\`${JSON.stringify(config?.hls ?? {})}\` (hls.js, as shipped in player/src/player.js)`,
      cmd: `${['CHALKSTREAM_LATENCY_RUNS', 'CHALKSTREAM_LATENCY_SETTINGS'].filter((k) => process.env[k])
        .map((k) => `${k}=${process.env[k]} `).join('')}scripts/bench (bench/latency.mjs)`,
      method: `The extension (loaded unpacked from extension/dist into its own headless Chromium) streams a
1280x720 tab that draws, on every animation frame, the wall-clock time in ms as 32 black/white blocks
over their complement (bench/clock/). The player page (/play/{id}), in a second Chromium with its own
profile, reads the blocks back from each frame it presents (requestVideoFrameCallback, canvas
drawImage) and subtracts the decoded time from its own Date.now(): both browsers share this
machine's clock, so nothing depends on our timestamps. With the microphone mixed in and the camera in the
corner, Chromium's built-in fake devices stand in (granted over the DevTools protocol, the broadcast started by a
real toolbar click); the camera covers
the bottom-right corner, below the clock's rows. Per run, every presented frame counts over
${cfg.latency.seconds} s from the first one; the player's own figure is its PDT-based delay
(\`window.chalkstreamPlayer.delay\`, from EXT-X-PROGRAM-DATE-TIME) sampled at the same frames.`,
    };
  } finally {
    await viewer.close();
    await server.stop();
    await clock.close();
  }
}
