//! Small statistics helpers for the benchmarks: percentiles, medians and the spread over runs.

/** Percentile `p` (0..100) of `values` by linear interpolation; NaN when empty. */
export function percentile(values, p) {
  const xs = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return NaN;
  const rank = (p / 100) * (xs.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo);
}

export const median = (values) => percentile(values, 50);

/** Median, min and max of per-run figures: what every BENCHMARKS.md row reports. */
export function summary(values) {
  const xs = values.filter((v) => Number.isFinite(v));
  return {
    median: median(xs),
    min: xs.length ? Math.min(...xs) : NaN,
    max: xs.length ? Math.max(...xs) : NaN,
    runs: xs.length,
    values: xs,
  };
}
