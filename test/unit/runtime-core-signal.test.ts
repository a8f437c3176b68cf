/**
 * The runtime's stop signal carries no listener per operation in flight.
 * Each operation used to hand that one signal to Effect's runPromise, which
 * adds an abort listener to it; Node's addEventListener walks the listeners
 * already there, so with thousands of operations in flight (the lease
 * renewals of 5,000 live jobs) adding one cost O(n): 10 % of a runtime's CPU
 * in a profile. The oracle is Node's own count of the signal's listeners.
 * Stop still ends every operation in flight.
 */
import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { RuntimeStopped } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";

describe("the runtime core's operations and its stop signal", () => {
  it("2,000 operations in flight add no listener each to the stop signal, and stop ends them all", async () => {
    // Not connected: every operation waits for the connection until the runtime stops.
    const core = await createRuntimeCore({ logger: silentLogger() }, { connect: false });
    const before = getEventListeners(core.stopping, "abort").length;
    const outcomes = Array.from({ length: 2000 }, (_, k) =>
      core
        .run(`op${k}`, async () => k, {
          timeoutMs: 60_000,
          ...(k % 2 ? { signal: new AbortController().signal } : {}),
        })
        .then(
          () => "resolved",
          (error: unknown) => (error instanceof RuntimeStopped ? "stopped" : String(error)),
        ),
    );
    await new Promise((resolve) => setImmediate(resolve));
    expect(getEventListeners(core.stopping, "abort").length - before).toBeLessThan(10);
    await core.stop();
    expect(new Set(await Promise.all(outcomes))).toEqual(new Set(["stopped"]));
  });
});
