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
