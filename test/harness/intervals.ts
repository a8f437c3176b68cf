/**
 * What a ledger of handler runs says about a limit: how many ran at once,
 * and how many started in any one second. Times in ms on one clock.
 */

/** The most intervals open at once; one that ends when another starts does not overlap it. */
export const maxOverlap = (
  intervals: ReadonlyArray<{ readonly start: number; readonly end: number }>,
): number => {
  const edges = intervals.flatMap(({ start, end }) => [
    { at: start, d: 1 },
    { at: end, d: -1 },
  ]);
  edges.sort((a, b) => a.at - b.at || a.d - b.d);
  let open = 0;
  let most = 0;
  for (const { d } of edges) {
    open += d;
    most = Math.max(most, open);
  }
  return most;
};

/** The most starts in any window [t, t + 1000 ms). */
export const mostStartsPerSecond = (starts: readonly number[]): number => {
  const sorted = [...starts].sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (j < sorted.length && (sorted[j] as number) < (sorted[i] as number) + 1000) j++;
    most = Math.max(most, j - i);
  }
  return most;
};

/**
 * The most starts surely in one window [t, t + 1000 ms), where each start
 * is known only to lie in [earliest, latest] (a remote worker sees its
 * lease between sending its pull and reading the answer). A start counts in
 * a window only when its whole span does, so the count never exceeds the
 * true one, however slow the answers: a result over a limit is a real breach.
 */
export const mostSurelyStartedPerSecond = (
  spans: ReadonlyArray<{ readonly earliest: number; readonly latest: number }>,
): number => {
  let most = 0;
  for (const { earliest: t } of spans) {
    const inside = spans.filter((s) => s.earliest >= t && s.latest < t + 1000).length;
    most = Math.max(most, inside);
  }
  return most;
};
