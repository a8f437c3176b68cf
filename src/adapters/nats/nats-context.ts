import type { NatsConnection } from "@nats-io/transport-node";
import type { LoopGroup } from "../../effects/loop-group.ts";
import type { ConnectionPort, OperationOptions } from "../../effects/run-operation.ts";
import type { Clock } from "../../kernel/clock.ts";
import type { Logger } from "../../kernel/logger.ts";

export type RunOptions = Partial<Pick<OperationOptions, "timeoutMs" | "retry" | "signal">>;

/**
 * What the NATS adapter needs from the runtime that hosts it, and nothing
 * more: the one supervised connection, the way to run an operation on it,
 * and the few settings that name and size what it creates. The runtime's
 * core satisfies it; the adapter never imports the runtime.
 */
export interface NatsContext {
  readonly options: {
    /** First token of every stream, bucket and subject. */
    readonly prefix: string;
    /** Replicas of every stream and bucket the adapter creates. */
    readonly replicas: number;
    readonly connection: {
      /** How long a task publish retries through an election before it fails. */
      readonly publishRetryMs: number;
    };
  };
  readonly clock: Clock;
  readonly logger: Logger;
  readonly connection: ConnectionPort<NatsConnection> & {
    /** The client if connected right now: hot paths check it without awaiting. */
    current(): NatsConnection | undefined;
  };
  /** Runs `op` on the connection with the runtime's deadline and retry policy. */
  run<A>(
    name: string,
    op: (nc: NatsConnection, signal: AbortSignal) => Promise<A>,
    options?: RunOptions,
  ): Promise<A>;
  /** Aborted when the runtime stops: every long-lived loop listens to it. */
  readonly stopping: AbortSignal;
  /**
   * The runtime's loops: what the adapter runs for the whole runtime (a queue's results feed)
   * runs here, and what it reads for a while (a job reader's catch-up) is tracked here, so
   * `stop()` waits for them.
   */
  readonly loops: Pick<LoopGroup, "run" | "track">;
}
