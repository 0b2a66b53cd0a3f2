// The viewer: waits politely for a stream, plays it live with hls.js (native
// HLS where the browser has no Media Source Extensions, as on older iPhones),
// replays it from the start once it has ended, and recovers from network
// blips and stalls without a reload. Tests and tools read
// `window.chalkstreamPlayer = { hls, video, state, delay, firstFrameAt, lowLatency, steering, catchUps, unstuck,
// stalls, forgiven, leaps, rejoins }` and
// may preset `window.chalkstreamPlayerConfig` (see `defaults`) before load.

const $ = (id) => document.getElementById(id);
const stream = document.body.dataset.stream;
const embed = document.body.dataset.embed === '1';
const video = $('video');
const frame = $('frame');
const badge = $('badge');
const delayEl = $('delay');
const durationEl = $('duration');
const statusEl = $('status');
const jumpButton = $('jump');
const downloadHint = $('download-hint');
const downloadLink = $('download');
const unmuteButton = $('unmute');
const retryButton = $('retry');
// An ended playlist is cached for long; after a resume, `?resumed=N` gets past that cache.
let resumes = 0;
// When hls.js last reported a stall (or started), for `forgive`.
let lastStallAt = 0;
const playlistUrl = () => `/playlist/${stream}.m3u8${resumes ? `?resumed=${resumes}` : ''}`;
const shortId = stream.slice(0, 8);

const defaults = {
  // A 404 means "not started yet" for this long after the page opened, then "not found".
  waitGraceMs: 45_000,
  pollMs: 2_000,
  slowPollMs: 10_000,
  // Once ended, how often to check whether the broadcaster resumed the stream.
  resumePollMs: 15_000,
  // Low latency. A stream uploaded in parts (LL-HLS) is played PART-HOLD-BACK
  // (three parts) behind its live edge, with blocking reloads and part loads;
  // one of whole segments two segments behind (`wholeSegments` below). Either
  // way hls.js catches up by playing up to 1.2x (pitch kept) rather than
  // jumping, which it only does in lowLatencyMode. hls.js lets a configured
  // liveSyncDurationCount override PART-HOLD-BACK, so it is set only for
  // streams without parts.
  hls: {
    lowLatencyMode: true,
    maxLiveSyncPlaybackRate: 1.2,
    backBufferLength: 60,
    // Transmux on the main thread: starting hls.js's inline worker re-parses all
    // of hls.js and cost ~0.9 s of first-frame time here; the work itself is small.
    enableWorker: false,
  },
  // Added to `hls` for a live stream without parts (hls.js takes a maximum only beside a sync count).
  wholeSegments: { liveSyncDurationCount: 2, liveMaxLatencyDurationCount: 6 },
  // Added to `hls` for a live stream with parts: the player steers the playback rate itself
  // (`steer` below), so hls.js's own rate control is off. hls.js moves its target latency 1 s
  // further from the edge at every stall, for good: with a 1 s PART-HOLD-BACK one start-up
  // stall doubled the latency of the whole session. About a part per stall still backs off
  // from a connection that cannot keep up (to at most one target duration more).
  parts: { maxLiveSyncPlaybackRate: 1, liveSyncOnStallIncrease: 0.3 },
  // Steering with parts: up to `maxRate` (pitch kept) while more than `slackS` (and less than
  // `maxOverS`) behind hls.js's target latency with more than `minAheadS` buffered ahead; 1x otherwise.
  steer: { maxRate: 1.15, slackS: 0.08, maxOverS: 2, minAheadS: 0.5 },
  // With parts: after `forgiveStallS` of playback without a stall, take back one of hls.js's
  // stall steps (`liveSyncOnStallIncrease`), down to PART-HOLD-BACK (see `forgive`).
  forgiveStallS: 12,
  // A live playhead that has not moved for `stuckMs` while it should play, outside everything
  // buffered (a seek to where no media is), is brought back to what is buffered (see `unstick`).
  stuckMs: 1_000,
};
const preset = window.chalkstreamPlayerConfig || {};
// `hls` in the preset replaces our hls.js settings entirely (`{}` = hls.js defaults).
const config = { ...defaults, ...preset, hls: preset.hls ?? defaults.hls };

const player = {
  hls: null, video, state: 'loading', delay: null, firstFrameAt: null, lowLatency: false, steering: false, catchUps: 0, unstuck: 0,
  stalls: 0, forgiven: 0, leaps: 0, rejoins: 0, config,
};
window.chalkstreamPlayer = player;

const openedAt = performance.now();
let pollTimer = 0;
let targetDuration = 2;
let networkRetries = 0;
let lastMediaRecovery = -Infinity;

// ---- State and what the page says about it ----

const COPY = {
  loading: { badge: 'Loading', title: 'Loading…', text: '' },
  waiting: {
    badge: 'Waiting', title: 'Waiting for the stream to start',
    text: 'This page will start playing by itself as soon as the broadcast begins.',
    status: 'Waiting for the stream to start.', page: 'Waiting',
  },
  live: { badge: 'Live', status: 'Playing live.', page: '● Live' },
  ended: { badge: 'Ended', status: 'The stream has ended: this is the recording, from the start.', page: 'Replay' },
  notfound: {
    badge: 'Not found', title: 'No stream at this link',
    text: 'Nothing is streaming here: the link may be incomplete, or the stream ended and has expired. '
      + 'If the broadcast is about to start, keep this page open: it plays by itself once it begins.',
    status: 'No stream at this link.', page: 'Not found',
  },
  error: { badge: 'Error', title: 'This stream can’t be played here', status: '', page: 'Error' },
};

function setState(state, detail = '') {
  const copy = COPY[state];
  const changed = player.state !== state;
  player.state = state;
  document.body.dataset.state = state;
  frame.dataset.state = state;
  badge.dataset.state = state;
  badge.textContent = copy.badge;
  if (copy.title) $('overlay-title').textContent = copy.title;
  $('overlay-text').textContent = detail || copy.text || '';
  retryButton.hidden = state !== 'notfound';
  // Nothing to control (or tab to) behind the overlay until there is video.
  video.controls = state === 'live' || state === 'ended';
  delayEl.hidden = true;
  jumpButton.hidden = true;
  jumpButton.textContent = 'Jump to live';
  // The recording as far as it is stored: all of it once ended, what there is so far while live.
  downloadHint.hidden = state !== 'live' && state !== 'ended';
  downloadLink.textContent = state === 'ended' ? 'Download the recording' : 'Download it so far';
  badge.classList.remove('behind');
  if (changed) say(detail || copy.status || '');
  if (changed && state === 'ended') watchForResume();
  document.title = `${copy.page ? `${copy.page} · ` : ''}Stream ${shortId} · Chalkstream`;
  showDuration();
}

/** Put a sentence in the polite live region (screen readers announce it). */
function say(text) {
  statusEl.textContent = text;
}

/** A passing problem (network blip, stall): say so; `recovered()` takes it back. */
function noteTrouble(text) {
  if (statusEl.textContent !== text) say(text);
}

// ---- Waiting for the stream ----

async function fetchStatus() {
  const res = await fetch(`/api/streams/${stream}`, { cache: 'no-store' });
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`the server answered ${res.status}`);
  return res.json();
}

async function poll() {
  clearTimeout(pollTimer);
  let status;
  try {
    status = await fetchStatus();
  } catch {
    if (player.state === 'loading') setState('waiting');
    noteTrouble('Can’t reach the server right now — trying again…');
    if (player.state === 'waiting' || player.state === 'notfound') $('overlay-text').textContent = statusEl.textContent;
    pollTimer = setTimeout(poll, config.pollMs);
    return;
  }
  if (!status || status.segments === 0) {
    const patient = performance.now() - openedAt < config.waitGraceMs;
    setState(patient ? 'waiting' : 'notfound');
    pollTimer = setTimeout(poll, patient ? config.pollMs : config.slowPollMs);
    return;
  }
  if (Number.isFinite(status.target_duration)) targetDuration = status.target_duration;
  play(status.state === 'ended');
}

retryButton.addEventListener('click', () => poll());

// ---- Playing ----

function play(ended) {
  setState(ended ? 'ended' : 'live');
  if (window.Hls?.isSupported()) {
    playWithHlsJs(ended);
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    playNatively();
  } else {
    setState('error', 'This browser can’t play HLS video. Open the link in a current Chrome, Edge, Firefox or Safari.');
  }
}

/** Whether the live playlist offers parts (LL-HLS), so hls.js should hold back by PART-HOLD-BACK. */
async function hasParts() {
  try {
    const res = await fetch(playlistUrl(), { cache: 'no-store' });
    return res.ok && (await res.text()).includes('#EXT-X-PART-INF:');
  } catch {
    return false;
  }
}

async function playWithHlsJs(ended) {
  const { Hls } = window;
  const lowLatency = !ended && config.hls.lowLatencyMode !== false && await hasParts();
  player.lowLatency = lowLatency;
  // A page that brings its own hls.js settings (`preset.hls`) gets exactly those.
  player.steering = lowLatency && !preset.hls;
  const extra = ended || preset.hls ? {} : lowLatency ? config.parts : config.wholeSegments;
  const hls = new Hls({ ...config.hls, ...extra, startPosition: ended ? 0 : -1 });
  player.hls = hls;
  hls.on(Hls.Events.MANIFEST_PARSED, () => autoplay());
  hls.on(Hls.Events.LEVEL_UPDATED, (_, { details }) => {
    targetDuration = details.targetduration || targetDuration;
    if (!details.live && player.state === 'live') setState('ended');
  });
  hls.on(Hls.Events.FRAG_BUFFERED, () => recovered());
  hls.on(Hls.Events.ERROR, (_, data) => onHlsError(hls, data));
  lastStallAt = performance.now();
  hls.loadSource(playlistUrl());
  hls.attachMedia(video);
}

function onHlsError(hls, data) {
  const { ErrorTypes, ErrorDetails } = window.Hls;
  if (data.details === ErrorDetails.BUFFER_STALLED_ERROR) {
    player.stalls += 1;
    lastStallAt = performance.now();
  }
  if (!data.fatal) {
    if (data.type === ErrorTypes.NETWORK_ERROR) noteTrouble('Connection trouble — retrying…');
    return;
  }
  if (data.type === ErrorTypes.MEDIA_ERROR) {
    // hls.js's documented sequence: recover, and if that fails again soon, swap the audio codec too.
    noteTrouble('Playback hiccup — recovering…');
    if (performance.now() - lastMediaRecovery < 3_000) hls.swapAudioCodec();
    lastMediaRecovery = performance.now();
    hls.recoverMediaError();
    return;
  }
  if (data.type === ErrorTypes.NETWORK_ERROR && hls.levels?.length) {
    // The playlist is known; keep loading with a growing pause (1, 2, 4, 8 s).
    noteTrouble('Connection lost — reconnecting…');
    const wait = Math.min(8_000, 1_000 * 2 ** networkRetries++);
    setTimeout(() => player.hls === hls && hls.startLoad(), wait);
    return;
  }
  // Anything else (the playlist itself is gone, an unknown failure): start over
  // from the status API, which also notices a stream that has expired meanwhile.
  noteTrouble('Connection lost — reconnecting…');
  startOver();
}

function playNatively() {
  video.src = playlistUrl();
  video.addEventListener('loadedmetadata', () => autoplay(), { once: true });
  video.addEventListener('durationchange', () => {
    if (Number.isFinite(video.duration) && player.state === 'live') setState('ended');
  });
  video.addEventListener('error', () => { noteTrouble('Connection lost — reconnecting…'); startOver(); }, { once: true });
  watchNativeEnd(video.src);
}

/**
 * The end of a natively played live stream, from the stream's status. A browser's own HLS
 * reports an ended playlist as a finite duration in some versions and not in others (Chromium
 * 148's never did), so the status API decides, as it does for the first state.
 */
function watchNativeEnd(src) {
  const check = async () => {
    if (player.state !== 'live' || video.src !== src) return;
    try {
      const status = await fetchStatus();
      if (status?.state === 'ended' && player.state === 'live' && video.src === src) {
        setState('ended');
        return;
      }
    } catch {
      // A passing network problem: the media element reports its own; check again later.
    }
    setTimeout(check, config.pollMs);
  };
  setTimeout(check, config.pollMs);
}

function startOver(delay = config.pollMs) {
  if (player.hls) player.hls.destroy();
  player.hls = null;
  video.removeAttribute('src');
  video.load();
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, delay);
}

function recovered() {
  networkRetries = 0;
  if (/reconnecting|retrying|recovering|reach the server|stalled/i.test(statusEl.textContent)) {
    say(COPY[player.state]?.status ?? '');
  }
}

/** Start playing; browsers refuse sound without a click, so fall back to muted with an Unmute button. */
async function autoplay() {
  try {
    await video.play();
  } catch (err) {
    if (err.name !== 'NotAllowedError') return;
    video.muted = true;
    try {
      await video.play();
      unmuteButton.hidden = false;
    } catch {
      say('Press play to start.');
    }
  }
}

unmuteButton.addEventListener('click', () => {
  video.muted = false;
  unmuteButton.hidden = true;
  video.focus();
});
video.addEventListener('volumechange', () => {
  if (!video.muted) unmuteButton.hidden = true;
});

// First frame on screen, for "time from page load to first frame".
if ('requestVideoFrameCallback' in video) {
  video.requestVideoFrameCallback(() => { player.firstFrameAt = performance.now(); });
} else {
  video.addEventListener('playing', () => { player.firstFrameAt ??= performance.now(); }, { once: true });
}

video.addEventListener('playing', () => recovered());
video.addEventListener('pause', () => {
  if (player.state !== 'live' || video.ended) return;
  holdPausedPicture(true);
  say('Paused. “Jump to live” picks up where the stream is now.');
});
video.addEventListener('play', () => {
  holdPausedPicture(false);
  if (player.state === 'live') say(COPY.live.status);
});
video.addEventListener('durationchange', showDuration);
video.addEventListener('ended', () => {
  if (player.state === 'ended') say('End of the recording. Press play to watch it again.');
});

// ---- Live: delay behind live, "jump to live" ----

/** The wall-clock time of the frame on screen (from EXT-X-PROGRAM-DATE-TIME), or null. */
function playingDate() {
  if (player.hls) return player.hls.playingDate;
  const start = video.getStartDate?.();
  if (!start || Number.isNaN(start.getTime())) return null;
  return new Date(start.getTime() + video.currentTime * 1000);
}

// hls.js and the playing position while paused (see `holdPausedPicture`).
let held = null;

/**
 * A live video the viewer paused stays on the frame it was paused at. hls.js moves a playhead that is
 * more than its maximum latency (`liveMaxLatencyDurationCount` target durations) behind the live edge
 * to its sync point at every playlist update, paused or not: a paused picture jumped ahead by itself
 * every few seconds, the delay shown fell back each time, and "Jump to live" had only the seconds
 * since the last such jump left to catch up. While paused that limit is lifted (hls.js reads it from
 * its config at every update); playing puts it back, so playback that falls behind is still brought
 * back to live. A position that leaves the playlist is still moved by hls.js, paused or not.
 */
function holdPausedPicture(hold) {
  if (held && (!hold || held.hls !== player.hls)) {
    held.hls.config.liveMaxLatencyDuration = held.maxLatency;
    held = null;
  }
  const { hls } = player;
  if (hold && hls && !held) {
    held = { hls, maxLatency: hls.config.liveMaxLatencyDuration };
    hls.config.liveMaxLatencyDuration = Infinity;
  }
}

/** Where "live" is: hls.js's sync point, or near the end of what a native player can seek to. */
function liveSyncPosition() {
  if (player.hls) return player.hls.liveSyncPosition;
  const { seekable } = video;
  return seekable.length ? seekable.end(seekable.length - 1) - 2 * targetDuration : null;
}

function isBehind() {
  const sync = liveSyncPosition();
  if (sync == null || video.readyState < 2) return false;
  return video.paused || sync - video.currentTime > 1.5 * targetDuration + 1;
}

/** Seconds buffered ahead of the playhead. */
function bufferedAhead() {
  const { buffered, currentTime } = video;
  for (let i = 0; i < buffered.length; i += 1) {
    if (buffered.start(i) <= currentTime + 0.1 && currentTime < buffered.end(i)) return buffered.end(i) - currentTime;
  }
  return 0;
}

let steeredRate = 1;

/**
 * Low latency: keep playing at hls.js's target latency (PART-HOLD-BACK, three parts) behind the live
 * edge. hls.js speeds playback up toward it only with more than 1 s buffered ahead, which a 1 s
 * target never has, so what the start-up or a late part added would stay for good: the player
 * plays a little faster while it is behind and has half a second buffered, 1x otherwise. A rate
 * the viewer picked (the video's menu) is left alone.
 */
function steer() {
  const { hls } = player;
  // The viewer's choice (1x counts as ours: `load()` also resets the rate to it).
  if (video.playbackRate !== steeredRate && video.playbackRate !== 1) return;
  let rate = 1;
  if (player.steering && hls && player.state === 'live' && !video.paused && video.readyState >= 3) {
    const over = hls.latency - hls.targetLatency;
    const { maxRate, slackS, maxOverS = Infinity, minAheadS } = config.steer;
    // 1.05 from 0.1 s behind, the most from 0.3 s. Seconds behind is not a drift to steer away
    // (a stall, or hls.js's idea of the edge jumping): playing fast would only drain the buffer.
    if (Number.isFinite(over) && over > slackS && over < maxOverS && bufferedAhead() > minAheadS) {
      rate = Math.min(maxRate, Math.max(1.05, Math.round((1 + over / 2) * 20) / 20));
    }
  }
  if (rate !== video.playbackRate) {
    if (rate > 1 && video.playbackRate === 1) player.catchUps += 1;
    video.playbackRate = rate;
  }
  steeredRate = rate;
}

/**
 * Low latency: hls.js adds `liveSyncOnStallIncrease` to its target latency at every stall and
 * never takes it back, so one late part early on costs the whole session. Once playback has gone
 * `config.forgiveStallS` without a stall, one such step is taken back (never below PART-HOLD-BACK);
 * `steer` then closes the distance. A connection that keeps stalling keeps its margin: every stall
 * restarts the quiet period.
 */
function forgive() {
  const { hls } = player;
  if (!player.steering || !hls || player.state !== 'live' || video.paused) return;
  const now = performance.now();
  if (now - lastStallAt < config.forgiveStallS * 1000) return;
  const details = hls.levels?.[hls.currentLevel]?.details;
  const base = details?.partHoldBack;
  const target = hls.targetLatency;
  if (!base || !Number.isFinite(target) || target <= base + 0.01) return;
  // hls.js's setter starts its stall count again from this latency.
  hls.targetLatency = Math.max(base, target - hls.config.liveSyncOnStallIncrease);
  player.forgiven += 1;
  lastStallAt = now;
}

/**
 * Low latency: a session more than `steer.maxOverS` over hls.js's target latency jumps to hls.js's
 * live sync position, as far as it is buffered in the range being played. hls.js loads from the
 * INDEPENDENT part at or before its sync point, and only a segment's first part is one (a keyframe
 * opens each segment), so in a stream's first seconds that is the stream's very start; its seek to
 * the sync point is then often lost (its gap controller skips the sliver before the first frame,
 * and the start seek gives up on a seeking video: "could not seek to …, already seeking" in
 * hls.js 1.7.4's log). With parts hls.js never moves a buffered playhead that is behind (its
 * maximum latency is unlimited) and `steer` leaves more than `maxOverS` alone, so such a session,
 * or one that stalls went on to add to, stayed seconds behind for good. Media that is buffered is
 * there to play, so the jump cannot land where nothing comes, whatever hls.js thinks its edge is.
 */
function leap() {
  const { hls } = player;
  if (!player.steering || !hls || player.state !== 'live' || video.paused || video.seeking || video.readyState < 3) return;
  const over = hls.latency - hls.targetLatency;
  const sync = hls.liveSyncPosition;
  if (!Number.isFinite(over) || over <= config.steer.maxOverS || !Number.isFinite(sync)) return;
  const ahead = bufferedAhead();
  // The position must lie inside the range being played, with a part's worth left after it.
  const partTarget = hls.levels?.[hls.currentLevel]?.details?.partTarget || 0.5;
  const to = Math.min(sync, video.currentTime + ahead - partTarget);
  if (to - video.currentTime <= config.steer.maxOverS / 2) return;
  player.leaps += 1;
  video.currentTime = to;
}

let stillSince = 0;
let stillAt = -1;

/**
 * A live playhead that should play but has not moved for `config.stuckMs` while it sits outside
 * everything buffered (past the newest range, or in a hole hls.js does not skip): a seek to where
 * no media will come (hls.js's live edge placed seconds ahead of the stream's at start-up froze
 * pages so, for good). The playhead goes back to the newest buffered range, where playback goes on
 * and hls.js loads from. A playhead inside buffered media that does not move is a stall hls.js
 * handles itself (it waits for data or nudges).
 */
function unstick() {
  const now = performance.now();
  // Before the first frame hls.js places the playhead itself (it skips a hole at the start).
  if (video.paused || video.ended || player.state !== 'live' || player.firstFrameAt === null
    || video.currentTime !== stillAt) {
    stillAt = video.currentTime;
    stillSince = now;
    return;
  }
  const { buffered } = video;
  if (now - stillSince < config.stuckMs || !buffered.length) return;
  const t = video.currentTime;
  // In a range, or at its end waiting for the next part (an ordinary stall): hls.js's business.
  for (let i = 0; i < buffered.length; i += 1) {
    if (buffered.start(i) <= t + 0.1 && t <= buffered.end(i) + 0.25) return;
  }
  // In a hole: the start of the range after it; past everything: a second before the end.
  let to = null;
  for (let i = 0; i < buffered.length && to === null; i += 1) {
    if (buffered.start(i) > t) to = buffered.start(i);
  }
  if (to === null) to = Math.max(buffered.start(buffered.length - 1), buffered.end(buffered.length - 1) - 1);
  stillSince = now;
  player.unstuck += 1;
  video.currentTime = to;
}

let progressAt = 0;
let progressMark = '';

/**
 * hls.js's live edge running away from the media: seen at start-up with the extension's streams
 * (hls.js 1.7.4, old player, one page in twenty): the playlist's edge at 96.8 s and hls.js's latency
 * at 83.6 s while the stream was 25 s old and the video sat still at the end of what was buffered
 * (13.3 s), for good. hls.js's timeline no longer matches the media's, so it loads and waits for
 * media where none will come. When the playhead and the end of the buffer have both stood still
 * for `config.stuckMs` while playing live, and hls.js's edge lies more than three target durations
 * past the buffer (an ordinary stall waits for a part or two), the player starts hls.js afresh
 * (`startOver`): a new instance computes its timeline from the playlist and the media again.
 */
function rejoin() {
  const { hls } = player;
  const now = performance.now();
  const { buffered } = video;
  const end = buffered.length ? buffered.end(buffered.length - 1) : 0;
  const mark = `${video.currentTime}|${end}`;
  if (!hls || video.paused || video.ended || player.state !== 'live' || player.firstFrameAt === null || mark !== progressMark) {
    progressMark = mark;
    progressAt = now;
    return;
  }
  if (now - progressAt < config.stuckMs) return;
  const details = hls.levels?.[hls.currentLevel]?.details;
  if (!details?.live || !(details.edge - end > 3 * (details.targetduration || targetDuration))) return;
  progressAt = now;
  player.rejoins += 1;
  noteTrouble('Playback stalled — catching up with the stream…');
  startOver(0);
}

function tick() {
  forgive();
  leap();
  steer();
  unstick();
  rejoin();
  if (player.state !== 'live') return;
  const date = playingDate();
  if (!date || video.readyState < 2) {
    delayEl.hidden = true;
    return;
  }
  player.delay = (Date.now() - date.getTime()) / 1000;
  delayEl.textContent = `${Math.max(0, player.delay).toFixed(1)} s behind live`;
  delayEl.hidden = false;
  const behind = isBehind();
  badge.classList.toggle('behind', behind);
  if (jumpButton.hidden === behind) {
    if (!behind && document.activeElement === jumpButton) video.focus();
    jumpButton.hidden = !behind;
  }
}
setInterval(tick, 250);

function jumpToLive() {
  const sync = liveSyncPosition();
  if (sync != null) video.currentTime = sync;
  video.play().catch(() => {});
}
jumpButton.addEventListener('click', () => {
  if (player.state === 'ended') resume(); else jumpToLive();
});

// ---- Ended: duration ----

function formatTime(seconds) {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

function showDuration() {
  const known = player.state === 'ended' && Number.isFinite(video.duration) && video.duration > 0;
  durationEl.hidden = !known;
  if (known) durationEl.textContent = `Duration ${formatTime(video.duration)}`;
}

// ---- Ended: the broadcaster may resume the same stream later ----

let resumeTimer = 0;
function watchForResume() {
  clearTimeout(resumeTimer);
  resumeTimer = setTimeout(async () => {
    if (player.state !== 'ended') return;
    const status = await fetchStatus().catch(() => undefined);
    if (status?.state === 'live') {
      if (video.ended || video.paused) {
        say('The stream is live again.');
        resume();
        return;
      }
      jumpButton.textContent = 'Live again: watch live';
      jumpButton.hidden = false;
    }
    // Gone (404) means expired: playback errors take the page to "not found".
    if (status !== null) watchForResume();
  }, config.resumePollMs);
}

function resume() {
  resumes += 1;
  startOver(0);
}

// ---- Keyboard: k or space play/pause, m mute, f full screen, l jump to live ----

document.addEventListener('keydown', (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target.closest?.('input, textarea, button, a, select')) return;
  const key = event.key.toLowerCase();
  if (key === 'k' || (key === ' ' && target !== video)) {
    if (video.paused) video.play().catch(() => {}); else video.pause();
  } else if (key === 'm') {
    video.muted = !video.muted;
  } else if (key === 'f') {
    if (document.fullscreenElement) document.exitFullscreen(); else frame.requestFullscreen?.();
  } else if (key === 'l' && player.state === 'live') {
    jumpToLive();
  } else {
    return;
  }
  event.preventDefault();
});

// ---- Share: copy buttons ----

for (const button of document.querySelectorAll('[data-copy]')) {
  button.addEventListener('click', async () => {
    const field = $(button.dataset.copy);
    try {
      await navigator.clipboard.writeText(field.value);
    } catch {
      field.select();
      document.execCommand('copy');
    }
    const label = button.textContent;
    button.textContent = 'Copied';
    button.classList.add('copied');
    say(button.dataset.copy === 'share-link' ? 'Link copied.' : 'Embed code copied.');
    setTimeout(() => { button.textContent = label; button.classList.remove('copied'); }, 1_800);
  });
}

if (embed) document.querySelector('.embed-brand').setAttribute('aria-label', 'Open this stream on Chalkstream');
poll();
