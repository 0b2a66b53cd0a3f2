//! A broadcaster's side of wire contract v1: a fresh session secret, its stream id, and segment uploads.

import { request } from './http.mjs';
import { newSession as newSecret, streamId } from '../../tests/e2e/lib/push.mjs';

/** A new session: `{ secret, id }` where id = lowercase hex SHA-1(secret) (push.mjs derives both). */
export function newSession() {
  const secret = newSecret();
  return { secret, id: streamId(secret) };
}

/** PUT segment `seq` of `session`; resolves to the timed response from `request`. */
export function putSegment(base, session, seq, bytes, { duration = 2, pdt = new Date(), agent } = {}) {
  return request(`${base}/ingest/${session.secret}/${seq}.ts`, {
    method: 'PUT', agent, body: bytes,
    headers: {
      'content-type': 'video/mp2t', 'content-length': bytes.length,
      'x-duration': duration.toFixed(3), 'x-program-date-time': pdt.toISOString(),
    },
  });
}

/** PUT and insist on 201/200; throws with the server's answer otherwise (a secret never appears in it). */
export async function mustPut(base, session, seq, bytes, opts) {
  const r = await putSegment(base, session, seq, bytes, opts);
  if (r.status !== 201 && r.status !== 200) {
    throw new Error(`PUT segment ${seq} answered ${r.status || r.error}: ${r.body?.toString().slice(0, 200) ?? ''}`);
  }
  return r;
}

/** `/ingest/{session}/end`: the broadcaster stopped. */
export const endStream = (base, session) => request(`${base}/ingest/${session.secret}/end`, { method: 'POST' });
