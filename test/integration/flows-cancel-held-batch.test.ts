/**
 * One submit of a driver's batch fails at once (transiently) while another
 * of that batch hangs (y's tasks' publish held 15 s). Since ba52fc8 the
 * batch is waited for whole (`Promise.allSettled`): the step that failed at
 * once is held until the slowest submit returns, and with it every wake of
 * the flow on this runtime (one step at a time per flow). A cancel then
 * writes the record at once but its step, the one that cancels the running
 * jobs, waits behind the held batch: c's task, running, runs on ~15 s after
 * `cancel()` was called. Before ba52fc8 the step rejected with z's failure
 * and the cancel's step ran at once.
 *
 * Oracle: W's ledger (when c's handler's signal aborts), measured from the
 * call of `cancel()`.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { TransientBrokerError } from "../../src/kernel/errors.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { memoryFlowSide } from "../harness/flow-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const keyOf = (record: unknown) => (record as JobRecord | undefined)?.idempotencyKey;
const holdMs = 15_000;

describe("a cancel while one submit of the driver's batch failed and another hangs", () => {
  it("cancels the running jobs at once, not after the hanging submit", { timeout: 60_000 }, async () => {
    const side = await memoryFlowSide();
    let zFailed = false;
    const wrapA = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        const key = keyOf(args[0]);
        if (name === "publishTasks" && key === "flow:f1:y") return delay(holdMs).then(call);
        if (name === "publishTasks" && key === "flow:f1:z")
          return delay(100).then(() => {
            zFailed = true;
            return Promise.reject(
              new TransientBrokerError({ message: "z: publish failed", operation: "publishTasks" }),
            );
          });
        return call();
      }).broker;
    const a = await side.runtime("a", ["submitter", "supervisor"], wrapA);
    const w = await side.runtime("w", ["worker"]);
    const abortedAt = new Map<string, number>();
    const started = new Set<string>();
    const ended = new AbortController();
    w.workers.start<string, number>({
      queue: "q",
      concurrency: 4,
      handler: (task, ctx) => {
        started.add(task.payload);
        return new Promise((resolve) => {
          ctx.signal.addEventListener("abort", () => {
            abortedAt.set(task.payload, Date.now());
            resolve(0);
          });
          ended.signal.addEventListener("abort", () => resolve(0));
        });
      },
    });
    try {
      void a.flows
        .submit({
          id: "f1",
          jobs: {
            c: { queue: "q", tasks: ["c"] },
            y: { queue: "q", tasks: ["y"] },
            z: { queue: "q", tasks: ["z"] },
          },
        })
        .catch(() => undefined);
      await waitUntil(() => zFailed && started.has("c"), { timeoutMs: 10_000, message: "c runs, z failed" });
      await delay(200);
      const handle = await a.flows.get("f1");
      const calledAt = Date.now();
      void handle?.cancel("stop").catch(() => undefined);
      await waitUntil(() => abortedAt.has("c"), { timeoutMs: holdMs + 10_000, message: "c's task aborted" });
      const late = (abortedAt.get("c") as number) - calledAt;
      // A driver's sweep is 2 s: a cancel's jobs cancelled within it, not after the hanging submit.
      expect(late, `c's task aborted ${late} ms after cancel()`).toBeLessThan(3000);
    } finally {
      ended.abort();
      await side.dispose();
    }
  });
});
