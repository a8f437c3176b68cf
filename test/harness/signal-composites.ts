/**
 * On Node 20 every `AbortSignal.any` leaves a weak reference in each of its
 * sources' signals, never pruned: a long-lived signal fed once per job or
 * per request grows for good. `composites(run)` counts, per source signal,
 * the composites made while `run` runs, read from the platform call itself.
 */
export const composites = async (run: () => Promise<void>): Promise<number[]> => {
  const platformAny = AbortSignal.any;
  const fed = new Map<AbortSignal, number>();
  AbortSignal.any = (signals: Iterable<AbortSignal>) => {
    const sources = [...signals];
    for (const source of sources) fed.set(source, (fed.get(source) ?? 0) + 1);
    return platformAny.call(AbortSignal, sources);
  };
  try {
    await run();
  } finally {
    AbortSignal.any = platformAny;
  }
  return [...fed.values()];
};
