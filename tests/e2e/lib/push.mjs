// An independent Chalkstream broadcaster for tests and benchmarks: Debian's
// ffmpeg encodes `testsrc2` + `sine` into H.264/AAC MPEG-TS segments (a
// keyframe at every boundary), ffprobe measures them, and the segments are
// PUT to the server per wire contract v1 — at real-time pace if asked, with
// `X-Program-Date-Time` set to the wall-clock time each one "was captured".
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A fresh session secret: 32 URL-safe characters (192 bits from the CSPRNG). */
export function newSession() {
  return randomBytes(24).toString('base64url');
}

/** The public stream id of a session: lowercase hex SHA-1 of the secret. */
export function streamId(session) {
  return createHash('sha1').update(session).digest('hex');
}

/**
 * Encode `seconds * count` of `testsrc2` + `sine` (H.264 + AAC, an IDR frame every `seconds`)
 * into MPEG-TS files of `cut` seconds each in `dir`, named `{prefix}00000.ts`…, timestamps
 * continuous across files; cuts shorter than `seconds` fall on ordinary frames. Resolves to
 * the file names in order.
 */
async function encodeFiles({ seconds, count, width, height, fps, frequency, dir, prefix, cut }) {
  const gop = Math.round(seconds * fps);
  await run('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', `testsrc2=size=${width}x${height}:rate=${fps}`,
    '-f', 'lavfi', '-i', `sine=frequency=${frequency}:sample_rate=48000`,
    '-t', String(seconds * count), '-map', '0:v', '-map', '1:a',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-profile:v', 'main',
    '-pix_fmt', 'yuv420p', '-g', String(gop), '-keyint_min', String(gop), '-sc_threshold', '0',
    '-force_key_frames', `expr:gte(t,n_forced*${seconds})`,
    '-c:a', 'aac', '-b:a', '96k', '-ac', '2',
    '-f', 'segment', '-segment_time', String(cut), ...(cut < seconds ? ['-break_non_keyframes', '1'] : []),
    '-segment_format', 'mpegts', '-reset_timestamps', '0', join(dir, `${prefix}%05d.ts`),
  ], { maxBuffer: 1 << 20 });
  const pattern = new RegExp(`^${prefix}\\d{5}\\.ts$`);
  return readdirSync(dir).filter((f) => pattern.test(f)).sort();
}

/**
 * Encode `count` segments of `seconds` each (H.264 + AAC in MPEG-TS, timestamps
 * continuous across segments, an IDR frame opening every segment) into a new
 * temp dir. Resolves to `[{ seq, path, duration, offset }]`: `duration` in
 * seconds (the video's frame count / fps, so exact), `offset` the segment's
 * start from the first one, in seconds.
 */
export async function encodeSegments({
  seconds = 2, count = 6, width = 640, height = 360, fps = 30, frequency = 440, dir,
} = {}) {
  dir ??= mkdtempSync(join(tmpdir(), 'chalkstream-segments-'));
  const files = await encodeFiles({ seconds, count, width, height, fps, frequency, dir, prefix: 'seg', cut: seconds });
  const segments = [];
  let offset = 0;
  for (const [seq, name] of files.entries()) {
    const path = join(dir, name);
    const duration = await probeDuration(path);
    segments.push({ seq, path, duration, offset });
    offset = Math.round((offset + duration) * 1000) / 1000;
  }
  return segments;
}

/** A segment's duration in seconds, to the millisecond: video frames / frame rate. */
export async function probeDuration(path) {
  const { stdout } = await run('ffprobe', [
    '-v', 'error', '-select_streams', 'v:0', '-count_packets',
    '-show_entries', 'stream=nb_read_packets,r_frame_rate', '-of', 'json', path,
  ]);
  const [stream] = JSON.parse(stdout).streams;
  const [num, den] = stream.r_frame_rate.split('/').map(Number);
  const frames = Number(stream.nb_read_packets);
  if (!(frames > 0 && num > 0 && den > 0)) throw new Error(`ffprobe found no video in ${path}`);
  return Math.round((frames * den * 1000) / num) / 1000;
}

function authHeaders(token) {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/**
 * PUT one segment. Resolves to `{ status, body }` (the JSON answer) whatever
 * the status; `putSegment` never throws on a 4xx, callers assert on it.
 */
export async function putSegment({
  url, session, seq, body, duration, programDateTime, discontinuity = false, token,
}) {
  const headers = { 'content-type': 'video/mp2t', 'x-duration': String(duration), ...authHeaders(token) };
  if (programDateTime) headers['x-program-date-time'] = new Date(programDateTime).toISOString();
  if (discontinuity) headers['x-discontinuity'] = '1';
  const res = await fetch(`${url}/ingest/${session}/${seq}.ts`, { method: 'PUT', headers, body });
  return { status: res.status, body: await res.json().catch(() => null) };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/**
 * Broadcast `segments` (from `encodeSegments`) as seq `firstSeq`, `firstSeq + 1`, ….
 * With `realTime`, capture "starts" now and each segment is uploaded when it
 * would have finished recording, stamped with the time its first frame was
 * captured; without it, everything goes at once, stamped as if the capture
 * had just finished. Throws on any answer other than 200/201. `onSegment` is
 * called after each upload with `{ seq, status, body, sentAt }`.
 * Resolves to the list of those results.
 */
export async function pushLive({
  url, session, segments, realTime = true, firstSeq = 0, token, discontinuity = false,
  onSegment = () => {}, signal,
}) {
  const total = segments.reduce((sum, s) => sum + s.duration, 0);
  const start = realTime ? Date.now() : Date.now() - total * 1000;
  const results = [];
  for (const [i, segment] of segments.entries()) {
    if (signal?.aborted) break;
    const capturedAt = start + segment.offset * 1000;
    if (realTime) await sleep(capturedAt + segment.duration * 1000 - Date.now());
    const seq = firstSeq + i;
    const answer = await putSegment({
      url, session, seq, body: readFileSync(segment.path), duration: segment.duration,
      programDateTime: capturedAt, discontinuity: discontinuity && i === 0, token,
    });
    if (answer.status !== 200 && answer.status !== 201) {
      throw new Error(`PUT segment ${seq} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
    }
    const result = { seq, ...answer, sentAt: Date.now() };
    results.push(result);
    onSegment(result);
  }
  return results;
}

/** End the stream now (`POST /ingest/{session}/end`); throws unless `200`. */
export async function end({ url, session, token }) {
  const res = await fetch(`${url}/ingest/${session}/end`, { method: 'POST', headers: authHeaders(token) });
  const body = await res.json().catch(() => null);
  if (res.status !== 200) throw new Error(`end answered ${res.status}: ${JSON.stringify(body)}`);
  return body;
}

/**
 * Encode `count` segments of `seconds` each, every one cut into parts of
 * `partSeconds` (wire contract v2): an IDR frame opens every segment, and the
 * parts between are cut at ordinary frames (`break_non_keyframes`), as the
 * extension cuts them. Resolves to `[{ seq, duration, offset, parts: [{ path,
 * duration, independent }] }]`, durations in seconds to the millisecond.
 */
export async function encodeParts({
  seconds = 2, partSeconds = 0.5, count = 6, width = 640, height = 360, fps = 30, frequency = 440, dir,
} = {}) {
  dir ??= mkdtempSync(join(tmpdir(), 'chalkstream-parts-'));
  const files = await encodeFiles({ seconds, count, width, height, fps, frequency, dir, prefix: 'part', cut: partSeconds });
  const perSegment = Math.round(seconds / partSeconds);
  const segments = [];
  let offset = 0;
  for (let seq = 0; seq * perSegment < files.length; seq++) {
    const parts = [];
    for (const [i, name] of files.slice(seq * perSegment, (seq + 1) * perSegment).entries()) {
      const path = join(dir, name);
      parts.push({ path, duration: await probeDuration(path), independent: i === 0 });
    }
    const duration = Math.round(parts.reduce((sum, p) => sum + p.duration * 1000, 0)) / 1000;
    segments.push({ seq, duration, offset, parts });
    offset = Math.round((offset + duration) * 1000) / 1000;
  }
  return segments;
}

/**
 * Broadcast `segments` from `encodeParts` per wire contract v2: each part PUT
 * when it would have finished recording (with `realTime`), then the segment's
 * commit. `partTarget` (seconds) is the stream's part target. A seq in
 * `gaps` is given up instead (`POST …/{seq}/gap` when it would have finished
 * recording), as the extension does with one it dropped. Throws on any answer
 * other than 200/201.
 */
export async function pushLiveParts({
  url, session, segments, partTarget, targetDuration, realTime = true, token, signal, gaps = [],
}) {
  const total = segments.reduce((sum, s) => sum + s.duration, 0);
  const start = realTime ? Date.now() : Date.now() - total * 1000;
  const mustOk = async (res, what) => {
    const body = await res.json().catch(() => null);
    if (res.status !== 200 && res.status !== 201) throw new Error(`${what} answered ${res.status}: ${JSON.stringify(body)}`);
  };
  for (const segment of segments) {
    if (gaps.includes(segment.seq)) {
      if (realTime) await sleep(start + (segment.offset + segment.duration) * 1000 - Date.now());
      await mustOk(await fetch(`${url}/ingest/${session}/${segment.seq}/gap`,
        { method: 'POST', headers: { 'x-duration': segment.duration.toFixed(3), ...authHeaders(token) } }),
      `gap ${segment.seq}`);
      continue;
    }
    let at = segment.offset;
    for (const [part, p] of segment.parts.entries()) {
      if (signal?.aborted) return;
      const capturedAt = start + at * 1000;
      at += p.duration;
      if (realTime) await sleep(start + at * 1000 - Date.now());
      const headers = {
        'content-type': 'video/mp2t', 'x-duration': p.duration.toFixed(3),
        'x-part-target': partTarget.toFixed(3), 'x-target-duration': String(targetDuration), ...authHeaders(token),
      };
      if (p.independent) headers['x-independent'] = '1';
      if (part === 0) headers['x-program-date-time'] = new Date(capturedAt).toISOString();
      await mustOk(await fetch(`${url}/ingest/${session}/${segment.seq}/${part}.ts`,
        { method: 'PUT', headers, body: readFileSync(p.path) }), `PUT part ${segment.seq}.${part}`);
    }
    await mustOk(await fetch(`${url}/ingest/${session}/${segment.seq}/commit`,
      { method: 'POST', headers: { 'x-parts': String(segment.parts.length), ...authHeaders(token) } }),
    `commit ${segment.seq}`);
  }
}
