/**
 * A parser of the Prometheus text exposition format, written here so tests
 * read a scrape the way Prometheus does instead of asking the registry:
 * one sample per line, `name{label="value",…} value`, comments skipped.
 */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export const parseExposition = (text: string): Sample[] => {
  const samples: Sample[] = [];
  for (const raw of text.split("\n")) {
    const trimmed = raw.trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const match = line.exec(trimmed);
    if (!match) throw new Error(`not an exposition line: ${raw}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? "").matchAll(label))
      labels[key as string] = (value as string).replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    const value = match[3] === "+Inf" ? Number.POSITIVE_INFINITY : Number(match[3]);
    if (Number.isNaN(value) && match[3] !== "NaN") throw new Error(`bad value in: ${raw}`);
    samples.push({ name: match[1] as string, labels, value });
  }
  return samples;
};

/** The value of the one sample of `name` whose labels include `labels`; undefined when there is none. */
export const sampleValue = (
  samples: readonly Sample[],
  name: string,
  labels: Readonly<Record<string, string>> = {},
): number | undefined => {
  const found = samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
  return found[0]?.value;
};

/** The metric families a scrape declares (`# TYPE <name> <type>`), each with its type. */
export const familiesOf = (text: string): Map<string, string> => {
  const families = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const match = /^# TYPE (\S+) (\S+)$/.exec(raw.trim());
    if (match) families.set(match[1] as string, match[2] as string);
  }
  return families;
};

/** True when `name` is a family of the scrape, or a series of one of its histograms (`_bucket`, `_sum`, `_count`). */
export const isScraped = (families: ReadonlyMap<string, string>, name: string): boolean => {
  if (families.has(name)) return true;
  const stem = /^(.*)_(bucket|sum|count)$/.exec(name)?.[1];
  return stem !== undefined && families.get(stem) === "histogram";
};
