import type { Logger } from "../kernel/logger.ts";
import type { ConnectionPort } from "./run-operation.ts";

export interface LoopOptions {
  readonly name: string;
  readonly log: Logger;
  /** Pause after the loop ended unexpectedly, doubling up to `maxPauseMs`. */
  readonly pauseMs?: number;
  readonly maxPauseMs?: number;
}

/**
 * Keeps a consume loop alive. Pull consumers are known to stop silently after
 * a reconnect or a server restart, so every loop runs under this: when its
 * body returns or throws (iterator ended, client replaced, consumer gone), it
 * waits for `connected` and starts the body again on the current client.
 * The body returns `"done"` to end supervision for good.
 */
export const superviseLoop = async <C>(
  port: ConnectionPort<C>,
  body: (client: C, signal: AbortSignal) => Promise<"done" | unknown>,
  signal: AbortSignal,
  options: LoopOptions,
): Promise<void> => {
  const base = options.pauseMs ?? 100;
  let pause = base;
  while (!signal.aborted) {
    let client: C;
    try {
      client = await port.whenConnected(signal);
    } catch {
      return; // stopped
    }
    const started = Date.now();
    try {
      if ((await body(client, signal)) === "done") return;
      if (!signal.aborted) options.log.debug({ loop: options.name }, "loop ended; restarting");
    } catch (error) {
      if (signal.aborted) return;
      options.log.warn({ loop: options.name, err: error }, "loop failed; restarting");
    }
    // A loop that ran for a while starts again quickly; one that keeps failing backs off.
    pause = Date.now() - started > 5000 ? base : Math.min(pause * 2, options.maxPauseMs ?? 5000);
    await sleep(pause, signal);
  }
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
