/**
 * `rt.stop()` ends every background loop of the runtime (record watch,
 * reaper, takeover, dead letters, cleanup, a worker's pull loops) and waits
 * for each to return: once it resolves no loop body runs again and none of
 * their timers is pending. The loops are observed at the broker port.
 */
import { describe, expect, it } from "vitest";
import { createMemoryBroker } from "../../src/adapters/memory/memory-broker.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { whenAborted } from "../../src/kernel/signals.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { delay } from "../harness/wait.ts";

/** Pending timers (Node's `Timeout` resources) right now. */
const pendingTimers = () => process.getActiveResourcesInfo().filter((name) => name === "Timeout").length;

/**
 * The memory broker, each call counted; its long-running loops (record
 * watches, dead-letter processing) end only when the test lets them, some
 * time after their signal aborted (as a NATS loop closing its consumer does),
 * and never before: a loop whose signal never aborts keeps `rt.stop()` waiting.
 */
const slowToEndBroker = () => {
  /** The loops that run, each with the function that lets it end once its signal aborted. */
  const running = new Map<string, () => void>();
  const endsWhenLet = (name: string, signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      // Let end, it still returns only once its signal has aborted (a worker's stop waits for
      // its watch before the runtime's own loops are told to stop).
      running.set(name, () => {
        running.delete(name);
        void whenAborted(signal).then(resolve);
      });
    });
  const { broker, calls } = spiedBroker(createMemoryBroker({ prefix: "jetstate" }), (key, n, args, call) => {
    if (key === "watchRecordChanges") return endsWhenLet(`changes${n}`, args[1] as AbortSignal);
    if (key === "processExhausted") return endsWhenLet(`dead${n}`, args[0] as AbortSignal);
    return call();
  });
  return { broker, calls, running };
};

describe("rt.stop()", () => {
  // changes1: the runtime's record watch (changes from its start), its job actors' and its
  // worker's; dead1: the dead-letter processing. Each in turn is the last to end: stop() must
  // wait for that one too.
  it.each(["changes1", "dead1"])(
    "ends every background loop and waits for each (%s last): no loop body runs afterwards, no timer is left",
    async (last) => {
      const timersBefore = pendingTimers();
      const { broker, calls, running } = slowToEndBroker();
      const rt = await createRuntime({
        broker,
        logger: silentLogger(),
        jobs: { reapIntervalMs: 5, cleanupIntervalMs: 5, leaseMs: 20 },
      });
      rt.workers.start({ queue: "q", handler: async () => "ok" });
      await delay(60);
      // Every loop ran: the reaper and the takeover list the leases, the cleanup cleans up.
      expect(calls.get("leases.list") ?? 0).toBeGreaterThan(2);
      expect(calls.get("cleanup") ?? 0).toBeGreaterThan(1);
      expect([...running.keys()].sort()).toEqual(["changes1", "dead1"]);

      let stopped = false;
      const stopping = rt.stop().then(() => {
        stopped = true;
      });
      for (const name of ["changes1", "dead1"].filter((n) => n !== last)) {
        await delay(20);
        running.get(name)?.();
      }
      await delay(20);
      expect(stopped).toBe(false);
      running.get(last)?.();
      await stopping;
      expect(running.size).toBe(0);
      const after = new Map(calls);
      expect(pendingTimers()).toBeLessThanOrEqual(timersBefore);
      await delay(50);
      expect(calls).toEqual(after);
    },
  );

  it("ends the loops of a job's actor (lease renewal, lost-task check, results feed): no timer is left", async () => {
    const timersBefore = pendingTimers();
    const broker = createMemoryBroker({ prefix: "jetstate" });
    const rt = await createRuntime({ broker, logger: silentLogger(), jobs: { leaseMs: 30 } });
    // No worker: the job stays running, its lease renewed every 20 ms.
    await rt.jobs.submit({ queue: "q", tasks: [1, 2], stallAfterMs: 10 });
    await delay(80);
    await rt.stop();
    expect(pendingTimers()).toBeLessThanOrEqual(timersBefore);
  });

  it("waits for a worker's pass over its queue's jobs, which reads no record after it", async () => {
    // 200 jobs of the queue found by their consumers, each record read in 30 ms: a pass of seven
    // batches, stopped in its first. `untilDone` once let go of it at the abort: rt.stop() took
    // 4 ms, and 136 reads followed.
    let stopped = false;
    let readsAfter = 0;
    const { broker } = spiedBroker(createMemoryBroker({ prefix: "jetstate" }), (key, _n, _args, call) => {
      if (key === "queueConsumers")
        return Promise.resolve({ jobIds: Array.from({ length: 200 }, (_, k) => `j${k}`), lane: false });
      if (key === "getRecord") {
        if (stopped) readsAfter++;
        return delay(30).then(() => undefined);
      }
      return call();
    });
    const rt = await createRuntime({ broker, logger: silentLogger(), roles: ["worker"] });
    rt.workers.start({ queue: "q", handler: () => "ok" });
    await delay(50);
    await rt.stop();
    stopped = true;
    await delay(300);
    expect(readsAfter).toBe(0);
  });
});
