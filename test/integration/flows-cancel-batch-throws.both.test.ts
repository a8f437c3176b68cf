/**
 * A cancel lands while the driver (A, the one runtime that drives flows
 * here) has a batch of submits in flight, and one submit of that batch fails
 * transiently (z's tasks' publish: "tried again by the next step").
 * `Promise.all` rejects at once, the step throws, and its check after the
 * batch ("a cancel may have landed meanwhile: the jobs this step submitted
 * are cancelled by it") never runs, while the batch's other submits go on
 * and land.
 *
 * Of that batch: x's job record is made late, so the cancel's step finds no
 * job for x and writes it `cancelled` ("flow cancelled while its job was
 * being submitted", an end); y's record is made at once but its tasks
 * published late, so y stays `submitting` (pending). x's job then lands and
 * runs while the flow is cancelled but not settled: such a step looks only
 * at the nodes not ended (`stepFlow`), and `#landedAfterCancel` reads the
 * jobs of cancelled-in-submit nodes only once the flow has settled, which
 * the step that settles it (y's end) does not. Nothing wakes the flow after
 * (it is unmarked: the sweep skips it), and x's task runs on after
 * `cancel()` resolved, for good.
 *
 * Oracle: W's ledger (its handler's signal aborting), and x's job record
 * read raw from the server.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { TransientBrokerError } from "../../src/kernel/errors.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { memoryFlowSide, natsFlowSide } from "../harness/flow-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const keyOf = (record: unknown) => (record as JobRecord | undefined)?.idempotencyKey;

describe.each([
  ["memory", memoryFlowSide],
  ["nats", natsFlowSide],
] as const)("a cancel while a batch is in flight and one of its submits fails, on %s", (_k, makeSide) => {
  it("every job of that batch that lands is cancelled: its task aborts", { timeout: 60_000 }, async () => {
    const side = await makeSide();
    let zTried = false;
    // A: x's record create is held 800 ms; y's tasks' publish 2500 ms; z's publish fails (after 300 ms).
    const wrapA = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        const key = keyOf(args[0]);
        if (name === "createRecord" && key === "flow:f1:x") return delay(800).then(call);
        if (name === "publishTasks" && key === "flow:f1:y") return delay(2500).then(call);
        if (name === "publishTasks" && key === "flow:f1:z") {
          zTried = true;
          return delay(300).then(() =>
            Promise.reject(
              new TransientBrokerError({ message: "z: publish failed", operation: "publishTasks" }),
            ),
          );
        }
        return call();
      }).broker;
    const a = await side.runtime("a", ["submitter", "supervisor"], wrapA);
    const w = await side.runtime("w", ["worker"]);
    const ran = new Map<string, { aborted: boolean }>();
    // Each handler runs until its signal aborts (or the test ends).
    const ended = new AbortController();
    w.workers.start<string, number>({
      queue: "q",
      concurrency: 4,
      handler: (task, ctx) => {
        const run = { aborted: false };
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
    try {
      const submitted = a.flows.submit({
        id: "f1",
        jobs: {
          x: { queue: "q", tasks: ["x"] },
          y: { queue: "q", tasks: ["y"] },
          z: { queue: "q", tasks: ["z"] },
        },
      });
      // A's batch is in flight: z's publish under way (to fail), x's record not made yet.
      await waitUntil(() => zTried, { timeoutMs: 10_000, message: "A's batch in flight" });
      const handle = await a.flows.get("f1");
      const cancelled = await handle?.cancel("stop");
      expect(cancelled?.status).toBe("cancelled");
      await submitted.catch(() => undefined);
      const xJob = cancelled?.nodes.x?.jobId as string;
      // x's job landed after the cancel's step: its task starts, and must be cancelled.
      await waitUntil(() => ran.has("x"), { timeoutMs: 15_000, message: "x's task started" });
      await waitUntil(() => [...ran.values()].every((r) => r.aborted), {
        timeoutMs: 10_000,
        message: () =>
          `every task started aborted; still running: ${[...ran].filter(([, r]) => !r.aborted).map(([p]) => p)}`,
      }).catch(async (error: unknown) => {
        throw new Error(
          `${String(error)}; x's job as stored: ${(await side.storedJob(xJob))?.status}; the flow as stored: ${JSON.stringify((await side.storedFlow("f1"))?.nodes)}`,
        );
      });
      expect((await side.storedJob(xJob))?.status).not.toBe("running");
    } finally {
      ended.abort();
      await side.dispose();
    }
  });
});
