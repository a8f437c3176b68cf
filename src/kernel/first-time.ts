/**
 * Whether a key is seen for the first time: what a loop that meets the same
 * bad thing at every pass (a record it cannot read) uses to say it once, not
 * every pass. At most `max` keys are remembered; past them the oldest is
 * forgotten (and said again should it come back).
 */
export const firstTime = (max = 10_000): ((key: string) => boolean) => {
  const seen = new Set<string>();
  return (key) => {
    if (seen.has(key)) return false;
    if (seen.size >= max) seen.delete(seen.values().next().value as string);
    seen.add(key);
    return true;
  };
};
