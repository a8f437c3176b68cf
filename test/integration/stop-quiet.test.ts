/**
 * Once `worker.stop()` or `rt.stop()` has resolved, nothing of it logs, even
 * while its server is unreachable: a worker's first reads (the server's max
 * payload, its queue's settings) wait for the connection up to the operation
 * deadline, and their failure was logged at warn whenever it came: after a
 * worker's stop, or after the runtime's when the stop's abort reached them
 * last (a new user's trial). Oracle: the lines the runtime's logger wrote,
 * with their time, against the moment each stop resolved.
 */
import { afterAll, describe, expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { capturedLog, type LogLine } from "../harness/log-lines.ts";
import { closedAddress } from "../harness/nats-process.ts";
import { delay } from "../harness/wait.ts";

/** The deadline of every operation here: a read waiting for the connection fails after it. */
const operationTimeoutMs = 1000;
/** Past the deadline, and past the connection's backoff ceiling (250 ms first, doubling, 1 s here). */
const quietMs = operationTimeoutMs + 1500;

/** Pending timers (Node's `Timeout` resources) right now. */
const pendingTimers = () => process.getActiveResourcesInfo().filter((name) => name === "Timeout").length;

const linesAfter = (lines: readonly LogLine[], at: number) =>
  lines.filter((l) => (l.time as number) > at).map((l) => `${l.level} ${l.msg}`);

describe("after a stop, with the server unreachable", () => {
  const released: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const release of released) await release();
  });

  it("a stopped worker logs nothing more, nor its stopped runtime, which holds no timer", async () => {
    const address = await closedAddress();
    released.push(address.release);
    const { lines, logger } = capturedLog("debug");
    const timersBefore = pendingTimers();
    const rt = await createRuntime({
      servers: `nats://${address.host}:${address.port}`,
      logger,
      connection: { operationTimeoutMs, backoff: { initialMs: 250, maxMs: 1000, multiplier: 2, jitter: 0 } },
    });
    const worker = rt.workers.start({ queue: "away", handler: () => "ok" });
    await worker.stop();
    const workerStopped = Date.now();
    await delay(quietMs);
    const byWorker = lines.filter((l) => l.actor === "worker");
    expect(linesAfter(byWorker, workerStopped)).toEqual([]);

    await rt.stop();
    const runtimeStopped = Date.now();
    await delay(quietMs);
    expect(linesAfter(lines, runtimeStopped)).toEqual([]);
    expect(pendingTimers()).toBeLessThanOrEqual(timersBefore);
  });
});
