//! Reads CPU time and memory of processes from Linux /proc, to say what bounds a measured figure.

import { readFileSync, readdirSync } from 'node:fs';

const TICKS = 100; // USER_HZ on Linux

/** User + system CPU seconds that process `pid` (all its threads) has used; NaN once it is gone. */
export function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICKS; // utime, stime (fields 14 and 15)
  } catch { return NaN; }
}

/** Resident set size of `pid` in bytes; NaN once it is gone. */
export function rssBytes(pid) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
    return m ? Number(m[1]) * 1024 : NaN;
  } catch { return NaN; }
}

/**
 * Resident memory of `pid` split by where it lives (/proc/PID/smaps), in bytes: `pool` is the
 * mappings of 1 GiB or more of address space (the host's pooled wasm instance slots: linear
 * memories, tables and stacks reserved up front, resident only where an instance touched them
 * and kept so for reuse), `other` everything else (the allocator's heap and arenas, thread stacks,
 * code). NaN once the process is gone.
 */
export function rssSplit(pid) {
  try {
    let pool = 0;
    let other = 0;
    let size = 0;
    for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
      const range = line.match(/^([0-9a-f]+)-([0-9a-f]+) /);
      if (range) { size = Number(BigInt(`0x${range[2]}`) - BigInt(`0x${range[1]}`)); continue; }
      const rss = line.match(/^Rss:\s+(\d+) kB/);
      if (rss) { if (size >= 1 << 30) pool += Number(rss[1]) * 1024; else other += Number(rss[1]) * 1024; }
    }
    return { pool, other };
  } catch { return { pool: NaN, other: NaN }; }
}

/** Proportional set size of `pid` in bytes (shared pages split between sharers); falls back to RSS. */
export function pssBytes(pid) {
  try {
    const m = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').match(/^Pss:\s+(\d+) kB/m);
    return m ? Number(m[1]) * 1024 : rssBytes(pid);
  } catch { return rssBytes(pid); }
}

/** Every live process whose NUL-separated command line satisfies `test(args)`: `[{ pid, args }]`. */
export function processes(test) {
  const out = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const args = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').filter(Boolean);
      if (args.length && test(args)) out.push({ pid: Number(name), args });
    } catch { /* it exited meanwhile */ }
  }
  return out;
}

/** Measures CPU use of `pid` over an interval: call `.stop()` for `{ seconds, percent }`. */
export function cpuMeter(pid) {
  const c0 = cpuSeconds(pid);
  const t0 = performance.now();
  return {
    stop() {
      const seconds = cpuSeconds(pid) - c0;
      return { seconds, percent: (100 * seconds) / ((performance.now() - t0) / 1000) };
    },
  };
}

/** Parent pid of `pid` (NaN once it is gone). */
function parentOf(pid) {
  try {
    return Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^PPid:\s+(\d+)/m)[1]);
  } catch { return NaN; }
}

/** Every live process descending from `root` (not `root` itself): `[{ pid, args }]`. */
export function descendants(root) {
  const all = processes(() => true);
  const parent = new Map(all.map((p) => [p.pid, parentOf(p.pid)]));
  const isUnder = (pid) => {
    for (let p = parent.get(pid), hops = 0; p && hops < 64; p = parent.get(p), hops++) if (p === root) return true;
    return false;
  };
  return all.filter((p) => p.pid !== root && isUnder(p.pid));
}

/** Per-thread CPU seconds of `pid` whose thread name starts with `prefix`: `[{ tid, seconds }]`. */
function threads(pid, prefix) {
  const out = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const st = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const comm = st.slice(st.indexOf('(') + 1, st.lastIndexOf(')'));
        if (!comm.startsWith(prefix)) continue;
        const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
        out.push({ tid: Number(tid), seconds: (Number(f[11]) + Number(f[12])) / TICKS });
      } catch { /* the thread ended */ }
    }
  } catch { /* the process ended */ }
  return out;
}

/**
 * Follows the CPU time of matching threads of the processes `pids()` names, polling every `everyMs`, so
 * threads that end between reads (a worker terminated after each job) still count up to their last poll.
 * `total()` is the CPU seconds seen so far; call `stop()` when done.
 */
export function threadMeter(pids, prefix, everyMs = 200) {
  const seen = new Map();
  const poll = () => {
    for (const pid of pids()) for (const t of threads(pid, prefix)) seen.set(`${pid}/${t.tid}`, t.seconds);
  };
  poll();
  const timer = setInterval(poll, everyMs);
  return {
    total() { poll(); let s = 0; for (const v of seen.values()) s += v; return s; },
    stop() { clearInterval(timer); },
  };
}

/**
 * Follows the CPU time of the processes `pids()` names, polling every `everyMs`, so processes that start
 * or end meanwhile count too (up to their last poll). `total()` is the CPU seconds seen so far.
 */
export function processMeter(pids, everyMs = 200) {
  const seen = new Map();
  const poll = () => { for (const pid of pids()) { const s = cpuSeconds(pid); if (Number.isFinite(s)) seen.set(pid, s); } };
  poll();
  const timer = setInterval(poll, everyMs);
  return {
    total() { poll(); let s = 0; for (const v of seen.values()) s += v; return s; },
    stop() { clearInterval(timer); },
  };
}

/**
 * The mappings of `pid` (/proc/PID/smaps) with their address-space size and Pss, in bytes:
 * `[{ start, size, name, pss, rss }]` (`name` is the mapped file or `[heap]`-like label, '' for
 * anonymous memory). Empty once the process is gone.
 */
export function mappings(pid) {
  const out = [];
  try {
    let cur = null;
    for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
      const range = line.match(/^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/);
      if (range) {
        cur = { start: range[1], size: Number(BigInt(`0x${range[2]}`) - BigInt(`0x${range[1]}`)), name: range[3], pss: 0, rss: 0 };
        out.push(cur);
        continue;
      }
      const m = line.match(/^(Pss|Rss):\s+(\d+) kB/);
      if (m && cur) cur[m[1].toLowerCase()] = Number(m[2]) * 1024;
    }
  } catch { /* gone */ }
  return out;
}

/** Threads of `pid` whose name starts with `prefix` (a dedicated worker's is "DedicatedWorker"). */
export function threadCount(pid, prefix) {
  return threads(pid, prefix).length;
}
