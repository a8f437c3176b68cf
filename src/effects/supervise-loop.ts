import { Effect } from "effect";
import { isNotProvisioned } from "../kernel/errors.ts";
import type { Logger } from "../kernel/logger.ts";
import { untilSettled } from "./loop-group.ts";
import { backoffSchedule } from "./retry.ts";
import { type ConnectionPort, explained } from "./run-operation.ts";

export interface LoopOptions {
  readonly name: string;
  readonly log: Logger;
  /** Pause after the loop ended unexpectedly, doubling up to `maxPauseMs`. */
  readonly pauseMs?: number;
  readonly maxPauseMs?: number;
}

/** A body that ran longer than this was working: it starts again after the base pause. */
const longRunMs = 5000;

/** A round that ended within `longRunMs`: the next start waits longer (`Effect.retry`'s schedule). */
class EndedQuickly {
  readonly _tag = "EndedQuickly";
}

/**
 * Keeps a consume loop alive. Pull consumers are known to stop silently after
 * a reconnect or a server restart, so every loop runs under this: when its
 * body returns or throws (iterator ended, client replaced, consumer gone), it
 * waits for `connected` and starts the body again on the current client.
 * The body returns `"done"` to end supervision for good. A body that keeps
 * ending quickly is started again after pauses from `backoffSchedule`
 * (2·pauseMs, doubling, capped at maxPauseMs); one that ran for a while,
 * after `pauseMs`. Aborting `signal` interrupts the pause at once and waits
 * for a running body to return. A failure is logged as the port explains it
 * (`ConnectionPort.explain`), at warn once per spell of the same failure.
 */
export const superviseLoop = async <C>(
  port: ConnectionPort<C>,
  body: (client: C, signal: AbortSignal) => Promise<"done" | unknown>,
  signal: AbortSignal,
  options: LoopOptions,
): Promise<void> => {
  if (signal.aborted) return;
  const base = options.pauseMs ?? 100;
  // The message of the failure that ended the last round, while rounds keep failing alike.
  let failing: string | undefined;
  const round = async (): Promise<"stop" | "long" | "quick"> => {
    let client: C;
    try {
      client = await port.whenConnected(signal);
    } catch {
      // It rejects only when the runtime stops or `signal` aborts: the loop's end, not a failure.
      return "stop";
    }
    const started = Date.now();
    try {
      if ((await body(client, signal)) === "done" || signal.aborted) return "stop";
      failing = undefined;
      options.log.debug({ loop: options.name }, "loop ended; restarting");
    } catch (error) {
      if (signal.aborted) return "stop";
      const failure = explained(port, client, error, options.name);
      const message = failure instanceof Error ? failure.message : String(failure);
      // One warning per spell of the same failure (a server with no JetStream: every round,
      // for good); its repeats at debug. A stream or bucket this user may not make is said at
      // warn once for the runtime where its create was refused, not once per loop.
      if (message === failing || isNotProvisioned(failure))
        options.log.debug({ loop: options.name, err: failure }, "loop failed again, as before; restarting");
      else options.log.warn({ loop: options.name, err: failure }, "loop failed; restarting");
      failing = message;
    }
    const long = Date.now() - started > longRunMs;
    if (long) failing = undefined;
    return long ? "long" : "quick";
  };
  // The body's own signal is `signal`: the round's controller is left alone.
  const rounds = untilSettled(round).pipe(
    Effect.flatMap((ended) => (ended === "quick" ? Effect.fail(new EndedQuickly()) : Effect.succeed(ended))),
    Effect.retry({
      schedule: backoffSchedule({ initialMs: base * 2, maxMs: options.maxPauseMs ?? 5000 }),
      while: (error) => error instanceof EndedQuickly,
    }),
  );
  const supervised = Effect.gen(function* () {
    while ((yield* rounds) === "long") yield* Effect.sleep(`${base} millis`);
  });
  await Effect.runPromise(supervised, { signal }).catch((error: unknown) => {
    // Aborted: the interruption is the loop's end. Anything else is a bug to see.
    if (!signal.aborted) throw error;
  });
};

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
