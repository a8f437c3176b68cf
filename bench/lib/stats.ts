/** Small numeric helpers for the bench: medians, percentiles, rounding. */

export const median = (values: readonly number[]): number => {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** Nearest-rank percentile (p in 0..100) of the values that are ≥ 0 (unset slots are -1). */
export const percentiles = (values: Float64Array, ps: readonly number[]): number[] => {
  const seen = values.filter((v) => v >= 0).sort();
  return ps.map((p) => {
    if (seen.length === 0) return Number.NaN;
    const rank = Math.min(seen.length - 1, Math.max(0, Math.ceil((p / 100) * seen.length) - 1));
    return seen[rank]!;
  });
};

export const round = (value: number, digits = 1): number => {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
};

/** Microseconds of user + system CPU this process spent since `start`. */
export const cpuMicrosSince = (start: NodeJS.CpuUsage): number => {
  const d = process.cpuUsage(start);
  return d.user + d.system;
};

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export const mib = (bytes: number): number => round(bytes / 1024 / 1024, 1);
