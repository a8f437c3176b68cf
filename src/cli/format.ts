/**
 * Output for people: plain aligned columns, durations, a progress bar. A
 * table library would add box drawing and colour that `grep` and `awk` then
 * have to strip; see docs/architecture.md ("The CLI").
 */

/** Rows under a header, each column as wide as its widest cell, two spaces apart; the last column is not padded. */
export const table = (header: readonly string[], rows: readonly (readonly string[])[]): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
};

/** `label: value` lines, labels aligned. */
export const fields = (pairs: readonly (readonly [string, string])[]): string => {
  const width = Math.max(...pairs.map(([label]) => label.length));
  return pairs.map(([label, value]) => `${`${label}:`.padEnd(width + 1)} ${value}`).join("\n");
};

/** 950 ms, 12 s, 4 m 05 s, 2 h 03 m, 3 d 04 h. */
export const duration = (ms: number): string => {
  if (!Number.isFinite(ms)) return "-";
  const abs = Math.abs(ms);
  const sign = ms < 0 ? "-" : "";
  if (abs < 1000) return `${sign}${Math.round(abs)} ms`;
  const s = Math.floor(abs / 1000);
  if (s < 60) return `${sign}${s} s`;
  const pad = (n: number) => String(n).padStart(2, "0");
  if (s < 3600) return `${sign}${Math.floor(s / 60)} m ${pad(s % 60)} s`;
  if (s < 86_400) return `${sign}${Math.floor(s / 3600)} h ${pad(Math.floor(s / 60) % 60)} m`;
  return `${sign}${Math.floor(s / 86_400)} d ${pad(Math.floor(s / 3600) % 24)} h`;
};

/** An epoch-ms time as UTC ISO, and how long ago. */
export const when = (at: number | undefined, now: number): string =>
  at === undefined || at <= 0 ? "-" : `${new Date(at).toISOString()} (${duration(now - at)} ago)`;

/** `[#########.........]  45%` */
export const bar = (fraction: number, width = 30): string => {
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  const filled = Math.round(f * width);
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${String(Math.floor(f * 100)).padStart(3)}%`;
};

/** Cuts a cell to `max` characters (an error message in a table), marking the cut. */
export const clip = (text: string, max: number): string =>
  text.length <= max ? text : `${text.slice(0, Math.max(0, max - 1))}…`;

/** One JSON document on stdout. */
export const printJson = (value: unknown): void => {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
};

// biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point.
const controlCharacters = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/g;

/**
 * Control characters (ESC, BEL, the C1 set…) written as `\xNN`, newlines
 * kept: what tasks, handlers and other processes wrote (errors, reasons,
 * host names) never drives the operator's terminal (retitles it, hides
 * lines, writes the clipboard). `--json` needs none of it: JSON escapes them.
 */
export const printable = (text: string): string =>
  text.replace(controlCharacters, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);

export const print = (text: string): void => {
  process.stdout.write(`${printable(text)}\n`);
};
