import { type Logger, pino } from "pino";

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

export const defaultLogger = (name: string): Logger =>
  pino({ name, level: process.env.JETSTATE_LOG_LEVEL ?? process.env.LOG_LEVEL ?? "info" });

export const silentLogger = (): Logger => pino({ level: "silent" });

export const childLogger = (parent: Logger, keys: ActorLogKeys): Logger => parent.child(keys);
