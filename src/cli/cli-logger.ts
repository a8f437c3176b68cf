import type { Logger } from "../index.ts";

/**
 * The runtime's log lines, as JSON lines on stderr, at `JETSTATE_LOG_LEVEL`
 * (default `silent`): stdout carries only the command's output, so `--json`
 * stays one parseable document. Written here rather than importing pino: the
 * CLI uses jetstate's public API, commander and node builtins only.
 */
const levels = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity } as const;
type Level = keyof typeof levels;

const levelFrom = (value: string | undefined): Level =>
  value !== undefined && value in levels ? (value as Level) : "silent";

const make = (threshold: number, bindings: Record<string, unknown>): Logger => {
  const write =
    (level: Exclude<Level, "silent">) =>
    (first?: unknown, second?: unknown): void => {
      if (levels[level] < threshold) return;
      const fields =
        typeof first === "object" && first !== null
          ? first instanceof Error
            ? { err: { type: first.name, message: first.message } }
            : errorsFlattened(first as Record<string, unknown>)
          : {};
      const msg = typeof first === "string" ? first : typeof second === "string" ? second : undefined;
      process.stderr.write(
        `${JSON.stringify({ level: levels[level], time: Date.now(), ...bindings, ...fields, ...(msg ? { msg } : {}) })}\n`,
      );
    };
  const logger = {
    level: threshold === Infinity ? "silent" : "info",
    trace: write("trace"),
    debug: write("debug"),
    info: write("info"),
    warn: write("warn"),
    error: write("error"),
    fatal: write("fatal"),
    silent: () => undefined,
    child: (more: Record<string, unknown>) => make(threshold, { ...bindings, ...more }),
    isLevelEnabled: (level: string) => levels[levelFrom(level)] >= threshold,
  };
  // Only the calls jetstate makes are implemented; the runtime checks for exactly those.
  return logger as unknown as Logger;
};

/** An Error in a field prints as its name and message (JSON.stringify would print `{}`). */
const errorsFlattened = (fields: Record<string, unknown>): Record<string, unknown> =>
  Object.fromEntries(
    Object.entries(fields).map(([k, v]) => [
      k,
      v instanceof Error ? { type: v.name, message: v.message } : v,
    ]),
  );

export const cliLogger = (): Logger => {
  const level = levelFrom(process.env.JETSTATE_LOG_LEVEL);
  return make(levels[level], { name: "jetstate-cli" });
};
