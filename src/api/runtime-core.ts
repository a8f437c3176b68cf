import { setMaxListeners } from "node:events";
import { classifyNatsError } from "../adapters/nats/classify-error.ts";
import type { NatsContext } from "../adapters/nats/nats-context.ts";
import { SupervisedConnection } from "../adapters/nats/supervised-connection.ts";
import { runOperationPromise } from "../effects/run-operation.ts";
import { realClock } from "../kernel/clock.ts";
import { ConnectionUnavailable } from "../kernel/errors.ts";
import { childLogger, defaultLogger } from "../kernel/logger.ts";
import { createInspector, type RuntimeInspector } from "./inspect.ts";
import { type ResolvedOptions, type RuntimeOptions, resolveOptions } from "./options.ts";

/**
 * What the parts of a runtime (jobs, workers, agents, the HTTP API) share:
 * one connection and one way to run an operation on it. It is the NATS
 * adapter's context too, with the whole of the resolved options.
 */
export interface RuntimeCore extends NatsContext {
  readonly options: ResolvedOptions;
  readonly connection: SupervisedConnection;
  readonly inspect: RuntimeInspector | undefined;
}

export const createRuntimeCore = async (
  options: RuntimeOptions = {},
  { connect = true }: { connect?: boolean } = {},
): Promise<RuntimeCore & { stop(): Promise<void> }> => {
  // Validate everything before anything connects.
  const resolved = resolveOptions(options);
  const logger = options.logger ?? defaultLogger("jetstate");
  const log = childLogger(logger, { actor: "runtime" });
  const inspect = await createInspector(options.inspect, log);
  const connection = new SupervisedConnection(resolved, logger, inspect?.inspect);
  const stopping = new AbortController();
  // Every operation in flight listens to it (and lets go when it ends): a busy
  // runtime has hundreds, which is not the leak Node's default limit of 10 warns about.
  setMaxListeners(0, stopping.signal);
  // An in-memory runtime has no NATS: its connection actor stays `idle`.
  if (connect) connection.start();
  return {
    options: resolved,
    clock: options.clock ?? realClock,
    logger,
    connection,
    inspect,
    stopping: stopping.signal,
    run: (name, op, runOptions = {}) => {
      const signal = runOptions.signal
        ? AbortSignal.any([runOptions.signal, stopping.signal])
        : stopping.signal;
      return runOperationPromise(connection, op, classifyNatsError, {
        name,
        timeoutMs: runOptions.timeoutMs ?? resolved.connection.operationTimeoutMs,
        retry: runOptions.retry ?? resolved.connection.retry,
        signal,
      }).catch((error: unknown) => {
        throw error instanceof ConnectionUnavailable
          ? explainUnavailable(error, resolved, connection)
          : error;
      });
    },
    /** Aborts every loop, drains the connection, stops the inspector. */
    stop: async () => {
      stopping.abort();
      await connection.stop();
      await inspect?.stop();
      log.info({ runtime: resolved.name }, "runtime stopped");
    },
  };
};

/** "No NATS connection" alone sends people hunting: say which servers, in what state, and why. */
const explainUnavailable = (
  error: ConnectionUnavailable,
  options: ResolvedOptions,
  connection: SupervisedConnection,
): ConnectionUnavailable => {
  const { state, lastError } = connection.snapshot();
  const context = `servers ${options.servers.join(", ")}, connection ${state}`;
  const message = `${error.message} (${context}${lastError ? `; last error: ${lastError}` : ""})`;
  return new ConnectionUnavailable({ message, state });
};
