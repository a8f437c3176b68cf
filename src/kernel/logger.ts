import { type Logger, pino } from "pino";
import { InvalidArgument } from "./errors.ts";

export type { Logger } from "pino";

/** Fixed keys every actor's child logger may carry; see docs/architecture.md. */
export interface ActorLogKeys {
  readonly actor:
    | "connection"
    | "job"
    | "worker"
    | "agent-lock"
    | "runtime"
    | "http"
    | "reaper"
    | "metrics"
    | "mover"
    | "flow"
    | "scheduler";
  readonly jobId?: string;
  readonly queue?: string;
  readonly agentId?: string;
  readonly workerId?: string;
}

/**
 * A pino logger at `JETSTATE_LOG_LEVEL`, else `LOG_LEVEL`, else `info`. A level pino does not
 * know is an `InvalidArgument` naming the variable (pino's own error names neither).
 */
export const defaultLogger = (name: string): Logger => {
  const variable = process.env.JETSTATE_LOG_LEVEL !== undefined ? "JETSTATE_LOG_LEVEL" : "LOG_LEVEL";
  const level = process.env[variable] ?? "info";
  try {
    return pino({ name, level });
  } catch {
    throw new InvalidArgument({
      field: "logger",
      message: `logger: ${variable}=${JSON.stringify(level)} is not a log level (trace, debug, info, warn, error, fatal or silent)`,
    });
  }
};

export const silentLogger = (): Logger => pino({ level: "silent" });

export const childLogger = (parent: Logger, keys: ActorLogKeys): Logger => parent.child(keys);

const levelMethods = new Set(["trace", "debug", "info", "warn", "error", "fatal"]);
const quiet = (): void => undefined;
type LevelMethod = (first?: unknown, ...rest: unknown[]) => void;

interface KeyedLog {
  readonly parent: Logger;
  readonly keys: ActorLogKeys;
  child?: Logger;
}

const childOf = (log: KeyedLog): Logger => {
  log.child ??= log.parent.child(log.keys);
  return log.child;
};

const keyed: ProxyHandler<KeyedLog> = {
  get(log, prop) {
    const { parent, keys } = log;
    if (typeof prop === "string" && levelMethods.has(prop) && typeof parent.isLevelEnabled === "function") {
      if (!parent.isLevelEnabled(prop)) return quiet;
      const write = Reflect.get(parent, prop) as LevelMethod;
      // A line's fields with the keys first: what the child's line would say. An Error or
      // anything else as first argument goes through the child, which pino formats its way.
      return (first?: unknown, ...rest: unknown[]) => {
        if (typeof first === "string") write.call(parent, { ...keys }, first, ...rest);
        else if (typeof first === "object" && first !== null && !(first instanceof Error))
          write.call(parent, { ...keys, ...first }, ...rest);
        else (Reflect.get(childOf(log), prop) as LevelMethod).call(childOf(log), first, ...rest);
      };
    }
    const child = childOf(log);
    const value: unknown = Reflect.get(child, prop);
    return typeof value === "function" ? value.bind(child) : value;
  },
};

/**
 * A logger whose lines carry `keys`, as a child's do, with no child made for
 * them: a pino child keeps its keys as JSON text built key by key, ~0.5 KiB
 * of heap for the life of a job that logs three lines (10,000 live jobs were
 * 5 MiB of it). Each line's fields get the keys instead. Anything else (its
 * `child()`, its `level`, a user's logger without `isLevelEnabled`) is a child
 * made on first use.
 */
export const keyedLogger = (parent: Logger, keys: ActorLogKeys): Logger =>
  // The proxy answers every property a logger has, so it is one to its callers.
  new Proxy<KeyedLog>({ parent, keys }, keyed) as unknown as Logger;
