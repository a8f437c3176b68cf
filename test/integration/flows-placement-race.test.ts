/**
 * A driver's full pass that started before its record watch was placed,
 * and ended after, must not count as a full pass read after the placement.
 *
 * A submitted a flow (x, one task; a parent depending on it) and stopped;
 * S (supervisor, drives no flow) took over x's job. B, a new driving runtime,
 * starts: its record watch is placed late (a slow first placement: it
 * starts at the stream's end then, and what was written before is never
 * delivered). Right away `b.flows.get` wakes a full pass; it reads x's job
 * running. x then ends (S writes its end) before the watch is placed: B
 * never hears that change. Then the watch is placed (`onPlaced` clears what
 * B held: the next sweep must read every node) and B's full pass, started
 * before, ends after it and writes its start time back as "every node read".
 *
 * Expected (policy): the parent is submitted once x succeeded and the flow
 * succeeds within a few sweeps (2 s each). Since 3651ce9 B's sweeps read
 * only the nodes `submitting`, and x is `running` in the record: the flow
 * waits for B's 30 s full pass.
 *
 * Oracles: the flow record and x's job record read raw; W's ledger.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryFlowSide, natsFlowSide } from "../harness/flow-sides.ts";
import { delay, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memoryFlowSide],
  ["nats", natsFlowSide],
] as const)("a driver's record watch placed late, on %s", (_k, makeSide) => {
  it("a full pass that straddles the watch's placement does not stand for one after it", {
    timeout: 90_000,
  }, async () => {
    const side = await makeSide();
    const ran: string[] = [];
    let go: (() => void) | undefined;
    const xMayEnd = new Promise<void>((resolve) => (go = resolve));
    try {
      const a = await side.runtime("a", ["submitter"]);
      await side.runtime("s", ["supervisor"]);
      const w = await side.runtime("w", ["worker"]);
      w.workers.start<string, number>({
        queue: "q",
        concurrency: 4,
        handler: async (task) => {
          ran.push(task.payload);
          if (task.payload === "x") await xMayEnd;
          return 1;
        },
      });
      await a.flows.submit({
        id: "f1",
        jobs: { x: { queue: "q", tasks: ["x"] }, parent: { queue: "q", tasks: ["p"], dependsOn: ["x"] } },
      });
      await waitUntil(() => ran.includes("x"), { timeoutMs: 15_000, message: "x's task started" });
      await waitUntil(async () => (await side.storedFlow("f1"))?.nodes.x?.status === "running", {
        timeoutMs: 15_000,
        message: "x running in the flow record",
      });
      const xJob = (await side.storedFlow("f1"))?.nodes.x?.jobId as string;
      await a.stop();
      // S takes x's job over (its supervision pass): x's end is written at once once it answers.
      await delay(8000);
      const xEnded = async () => (await side.storedJob(xJob))?.status === "succeeded";

      let placedAt: number | undefined;
      let armed = true;
      const wrapB = (inner: Broker): Broker =>
        new Proxy(inner, {
          get(target, key) {
            if (key === "watchRecordChanges")
              return async (...args: Parameters<Broker["watchRecordChanges"]>) => {
                const [onRecord, signal, onWatching, label] = args;
                // A slow first placement: x's end is written before it.
                await waitUntil(xEnded, { timeoutMs: 30_000, message: "x ended (S wrote it)" });
                return inner.watchRecordChanges(
                  onRecord,
                  signal,
                  (restarted) => {
                    placedAt = Date.now();
                    onWatching?.(restarted);
                  },
                  label,
                );
              };
            if (key === "getRecord")
              return async (id: string) => {
                const found = await inner.getRecord(id);
                if (id !== xJob || !armed) return found;
                armed = false;
                // Read while x runs; its answer comes back after x ended and the watch was placed.
                go?.();
                await waitUntil(() => placedAt !== undefined, {
                  timeoutMs: 30_000,
                  message: "B's watch placed",
                });
                await delay(200);
                return found;
              };
            // Bound to the broker itself: the memory broker's methods read its private fields.
            const value = Reflect.get(target, key, target);
            return typeof value === "function" ? value.bind(target) : value;
          },
        });
      const b = await side.runtime("b", ["submitter"], wrapB);
      const bStarted = Date.now();
      const handle = await b.flows.get("f1");
      expect(handle).toBeDefined();
      await waitUntil(() => placedAt !== undefined && !armed, { timeoutMs: 30_000, message: "the race ran" });
      // The race as meant: B's first step ended before its first sweep (2 s), which would have asked for another.
      expect(placedAt as number).toBeLessThan(bStarted + 1500);
      expect(await xEnded()).toBe(true);

      // x succeeded: the parent is submitted and the flow succeeds within a few of B's sweeps.
      await waitUntil(async () => (await side.storedFlow("f1"))?.status === "succeeded", {
        timeoutMs: 10_000,
        message: () => `the flow succeeded within 10 s (${Date.now() - bStarted} ms since B started)`,
      }).catch(async (error: unknown) => {
        throw new Error(
          `${String(error)}; the flow as stored: ${JSON.stringify((await side.storedFlow("f1"))?.nodes)}; ran: ${ran}`,
        );
      });
      expect(ran.sort()).toEqual(["p", "x"]);
    } finally {
      go?.();
      await side.dispose();
    }
  });
});
