import { classifyNatsError } from "../adapters/nats/classify-error.ts";
import type { NatsContext } from "../adapters/nats/nats-context.ts";
import { SupervisedConnection } from "../adapters/nats/supervised-connection.ts";
import { LoopGroup, settlesWithin } from "../effects/loop-group.ts";
import { OperationsInFlight, runOperationPromise } from "../effects/run-operation.ts";
import { realClock } from "../kernel/clock.ts";
import { ConnectionUnavailable, workOver } from "../kernel/errors.ts";
import { childLogger, defaultLogger } from "../kernel/logger.ts";
import { LinkedControllers } from "../kernel/signals.ts";
import { createInspector, type RuntimeInspector } from "./inspect.ts";
import { type ResolvedOptions, type RuntimeOptions, resolveOptions } from "./options.ts";
import { Telemetry } from "./telemetry.ts";

/**
 * What the parts of a runtime (jobs, workers, agents, the HTTP API) share:
 * one connection and one way to run an operation on it. It is the NATS
 * adapter's context too, with the whole of the resolved options.
 */
export interface RuntimeCore extends NatsContext {
  readonly options: ResolvedOptions;
  readonly connection: SupervisedConnection;
  readonly inspect: RuntimeInspector | undefined;
  /** The runtime's background loops; `stop()` ends them and waits for them. Its signal is `stopping`. */
  readonly loops: LoopGroup;
  /** What workers tell whoever measures them (`createMetrics`); costs nothing while nobody listens. */
  readonly telemetry: Telemetry;
  /**
   * Controllers aborted as the runtime stops, for what also has a signal of its own (an
   * operation a caller may abort, a `results()` reader): not an `AbortSignal.any` with
   * `stopping`, which on Node 20 leaves a weak reference in it for good, one per call.
   * `unlink` each once it is done with.
   */
  readonly stopLinks: LinkedControllers;
}

/** How long stop() waits for the loops before it closes the connection under them. */
const loopsStopWaitMs = 10_000;

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
  // Every loop and every operation in flight listens to its signal, `stopping`.
  const loops = new LoopGroup(log);
  const stopLinks = new LinkedControllers(loops.signal);
  // Every call of an operation until it settles, let go of or not: stop waits for them.
  const operations = new OperationsInFlight();
  // An in-memory runtime has no NATS: its connection actor stays `idle`.
  if (connect) connection.start();
  return {
    options: resolved,
    clock: options.clock ?? realClock,
    logger,
    connection,
    inspect,
    loops,
    telemetry: new Telemetry(),
    stopping: loops.signal,
    stopLinks,
    run: (name, op, runOptions = {}) => {
      // The runtime's stop signal as it is (no signal made per operation: an `AbortSignal.any`
      // each was ~5 % of a small job's CPU): the first attempt adds no listener to it, and the
      // Effect program of a retry links one of its own (`sharedSignal`). Joined with the
      // caller's signal when there is one, through `stopLinks` (a submit's publish passes its
      // own: an `AbortSignal.any` left a weak reference in `stopping` for every job).
      const linked = runOptions.signal ? stopLinks.link(runOptions.signal) : undefined;
      return runOperationPromise(connection, op, classifyNatsError, {
        name,
        timeoutMs: runOptions.timeoutMs ?? resolved.connection.operationTimeoutMs,
        retry: runOptions.retry ?? resolved.connection.retry,
        signal: linked?.signal ?? loops.signal,
        sharedSignal: linked === undefined,
        inFlight: operations,
      })
        .catch((error: unknown) => {
          throw error instanceof ConnectionUnavailable
            ? explainUnavailable(error, resolved, connection)
            : error;
        })
        .finally(() => {
          if (!linked) return;
          // What the operation left running (a first attempt past its deadline) ends with it.
          linked.abort(workOver);
          stopLinks.unlink(linked);
        });
    },
    /** Ends every loop (and waits for them), drains the connection, stops the inspector. */
    stop: async () => {
      // A loop that does not heed its signal must not keep the runtime from stopping: closing
      // the client ends every pull loop, so the connection closes under what is left. While the
      // server is away, what a loop awaits (a request the client holds while it reconnects)
      // can only time out: the connection is closed under the loops at once then, which fails
      // those requests; stop() still waits for every loop below.
      const down = connect ? whenDown(connection) : undefined;
      const waitUntil = Date.now() + loopsStopWaitMs;
      const ended = await loops.closeWithin(loopsStopWaitMs, down?.promise);
      // Then the operations still running, within the same wait: one the stop's abort let go of
      // (a retry's attempt, which Effect's `tryPromise` leaves running) still does its last steps,
      // a scan's delete of its consumer. Drained under it, that delete failed and the consumer
      // stayed on the server (test/integration/stop-operations-in-flight.test.ts).
      const settled =
        ended && (await settlesWithin(operations.idle(), Math.max(0, waitUntil - Date.now()), down?.promise));
      down?.cancel();
      if (ended && !settled && connection.state === "connected")
        log.warn(
          { operations: operations.count },
          "operations still running after stop; closing the connection",
        );
      if (!ended) {
        const left = { loops: loops.running() };
        if (down && connection.state !== "connected")
          log.debug(left, "connection down; closing it under the loops still running");
        else log.warn(left, "loops still running after stop; closing the connection");
      }
      await connection.stop();
      if (!(await loops.closeWithin(loopsStopWaitMs)))
        log.error(
          { loops: loops.running() },
          "loops still running after the connection closed; not waited for",
        );
      await inspect?.stop();
      log.info({ runtime: resolved.name }, "runtime stopped");
    },
  };
};

/**
 * Waits for `work` unless the NATS connection is (or goes) down meanwhile:
 * what it waits on then (requests nats.js holds while it reconnects) could
 * only time out. At once for an in-memory runtime (its connection stays idle).
 */
export const unlessDown = async (connection: SupervisedConnection, work: Promise<unknown>): Promise<void> => {
  const down = whenDown(connection);
  try {
    await Promise.race([work, down.promise]);
  } finally {
    down.cancel();
  }
};

/** Resolves once `connection` is not `connected` (at once if it is not now); `cancel` stops watching. */
const whenDown = (connection: SupervisedConnection): { promise: Promise<void>; cancel: () => void } => {
  let cancel = () => {};
  const promise = new Promise<void>((resolve) => {
    if (connection.state !== "connected") return resolve();
    cancel = connection.subscribe(({ state }) => {
      if (state !== "connected") resolve();
    });
  });
  return { promise, cancel };
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
