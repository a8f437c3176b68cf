/**
 * A cancel whose runtime dies right after writing it: the other drivers must
 * cancel the flow's running jobs promptly (their sweep, every 2 s), not 30 s
 * late.
 *
 * B drives flows (and owns the jobs it submits); W works. B submits a flow:
 * x (one long task) and a parent depending on it. Once x runs, A (another
 * driving runtime, started then) cancels the flow through a handle; A's step
 * writes the record (the parent cancelled, x still running in the record) and
 * dies at its cancel of x's job (its hook throws, and A stops: a driver
 * stopped or SIGKILLed at that step). The cancel is written; cancelling the
 * running jobs is left to B.
 *
 * Since 3651ce9, B's 2 s sweep reads only the nodes `submitting`; a node
 * `running` is read only by a full pass, which B owes no flow here (its first
 * sweep did one, 30 s before the next). Nothing else wakes it: x's job writes
 * no change while it runs. x's task runs on for up to 30 s after the cancel
 * was written, the flow stays unsettled meanwhile. Before, every sweep read
 * every node and cancelled x within ~2 s.
 *
 * Oracles: W's ledger (x's handler's signal aborting), x's job record and
 * the flow record read raw from the server.
 */
import { describe, expect, it } from "vitest";
import { partsOf } from "../../src/api/runtime.ts";
import { memoryFlowSide, natsFlowSide } from "../harness/flow-sides.ts";
import { delay, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memoryFlowSide],
  ["nats", natsFlowSide],
] as const)("a canceller that dies after its cancel write, on %s", (_k, makeSide) => {
  it("another driver cancels the running job within a few sweeps", { timeout: 60_000 }, async () => {
    const side = await makeSide();
    const ran = new Map<string, { aborted: boolean; finished: boolean }>();
    const ended = new AbortController();
    try {
      const b = await side.runtime("b", ["submitter", "supervisor"]);
      const bStarted = Date.now();
      const w = await side.runtime("w", ["worker"]);
      w.workers.start<string, number>({
        queue: "q",
        concurrency: 4,
        handler: (task, ctx) => {
          const run = { aborted: false, finished: false };
          ran.set(task.payload, run);
          return new Promise((resolve) => {
            ctx.signal.addEventListener("abort", () => {
              run.aborted = true;
              resolve(0);
            });
            ended.signal.addEventListener("abort", () => resolve(0));
          });
        },
      });
      await b.flows.submit({
        id: "f1",
        jobs: { x: { queue: "q", tasks: ["x"] }, parent: { queue: "q", tasks: ["p"], dependsOn: ["x"] } },
      });
      await waitUntil(() => ran.has("x"), { timeoutMs: 15_000, message: "x's task started" });
      await waitUntil(async () => (await side.storedFlow("f1"))?.nodes.x?.status === "running", {
        timeoutMs: 15_000,
        message: "x running in the flow record",
      });
      // B's first sweep (a full pass) is behind it: what it reads from now on is its own choice.
      const sinceB = Date.now() - bStarted;
      if (sinceB < 5000) await delay(5000 - sinceB);

      const a = await side.runtime("a", ["submitter"]);
      let died = false;
      partsOf(a).flows.driver.hook = (point) => {
        if (point !== "cancel" || died) return;
        died = true;
        void a.stop();
        throw new Error("A dies at its cancel of x's job");
      };
      const handle = await a.flows.get("f1");
      const cancelAt = Date.now();
      await handle?.cancel("stop").catch(() => undefined);
      expect(died).toBe(true);
      expect((await side.storedFlow("f1"))?.status).toBe("cancelled");
      const xJob = (await side.storedFlow("f1"))?.nodes.x?.jobId as string;

      // Policy: a cancelled flow's running jobs are cancelled. B's sweeps (every 2 s) see it.
      await waitUntil(() => ran.get("x")?.aborted === true, {
        timeoutMs: 10_000,
        message: () => `x's task aborted within 10 s of the cancel (${Date.now() - cancelAt} ms)`,
      }).catch(async (error: unknown) => {
        throw new Error(
          `${String(error)}; x's job as stored: ${(await side.storedJob(xJob))?.status}; the flow as stored: ${JSON.stringify((await side.storedFlow("f1"))?.nodes)}`,
        );
      });
      await waitUntil(
        async () => {
          const flow = await side.storedFlow("f1");
          return flow !== undefined && Object.values(flow.nodes).every((n) => n.status !== "running");
        },
        { timeoutMs: 5000, message: "the flow settled" },
      );
      // A cancelled job ends failed (its reason says the cancel).
      expect((await side.storedJob(xJob))?.status).toBe("failed");
      expect(ran.has("p")).toBe(false);
    } finally {
      ended.abort();
      await side.dispose();
    }
  });
});
