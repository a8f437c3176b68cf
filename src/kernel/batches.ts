/** `read` for each item, 32 at a time: a pass over many keys is not one round trip after another. */
export const inBatches = async <T, R>(items: readonly T[], read: (item: T) => Promise<R>): Promise<R[]> => {
  const out: R[] = [];
  for (let from = 0; from < items.length; from += 32)
    out.push(...(await Promise.all(items.slice(from, from + 32).map(read))));
  return out;
};
