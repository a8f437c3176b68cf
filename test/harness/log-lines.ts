import { pino } from "pino";

/** One line a logger wrote, parsed: its message and fields. */
export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** A pino logger whose lines are kept, parsed, for the test to read. */
export const capturedLog = (level = "info") => {
  const lines: LogLine[] = [];
  const logger = pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) });
  return { lines, logger };
};
