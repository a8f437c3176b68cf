/**
 * A flow of 200 children is cancelled while one child's submit is under way
 * (c000's tasks' publish held 25 s by its live submitter A: its lease is
 * renewed and its commit deadline is 30 s, so it is pending, not dead). The
 * cancel's step (runtime B) writes the 168 children never submitted
 * cancelled-in-submit and cancels the 31 running (they end failed); the flow is cancelled and
 * not settled until c000's submit returns.
 *
 * Since d383aee every sweep of a cancelled flow not settled reads every
 * node: each 2 s B's sweep reads the job of every cancelled-in-submit node
 * (`landedAfterCancel`), 168 reads, though nothing changed and none of them
 * was ever submitted. Before it a sweep read the nodes being submitted (one)
 * and every node each 30 s. What a step reads was to grow with the changes,
 * not with the flow.
 *
 * Oracle: B's broker's counted `getRecord` calls over 10 s of sweeps.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { memoryFlowSide } from "../harness/flow-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const keyOf = (record: unknown) => (record as JobRecord | undefined)?.idempotencyKey;
const children = 200;
const name = (i: number) => `c${String(i).padStart(3, "0")}`;

describe("a big cancelled flow left unsettled by one live submit", () => {
  it("is not read whole at every 2 s sweep", { timeout: 60_000 }, async () => {
    const side = await memoryFlowSide();
    let held = false;
    const wrapA = (inner: Broker) =>
      spiedBroker(inner, (method, _n, args, call) => {
        if (method === "publishTasks" && keyOf(args[0]) === `flow:f1:${name(0)}`) {
          held = true;
          return delay(25_000).then(call);
        }
        return call();
      }).broker;
    const a = await side.runtime("a", ["submitter", "supervisor"], wrapA);
    let spyB: ReturnType<typeof spiedBroker> | undefined;
    const b = await side.runtime("b", ["submitter", "supervisor"], (inner) => {
      spyB = spiedBroker(inner);
      return spyB.broker;
    });
    try {
      const jobs = Object.fromEntries(
        Array.from({ length: children }, (_, i) => [name(i), { queue: "q", tasks: [i] }]),
      );
      void a.flows.submit({ id: "f1", jobs }).catch(() => undefined);
      await waitUntil(() => held, { timeoutMs: 10_000, message: "c000's submit held" });
      await delay(300);
      const handle = await b.flows.get("f1");
      void handle?.cancel("stop").catch(() => undefined);
      let seen = "";
      await waitUntil(
        async () => {
          const flow = await side.storedFlow("f1");
          const counts = new Map<string, number>();
          for (const n of Object.values(flow?.nodes ?? {}))
            counts.set(n.status, (counts.get(n.status) ?? 0) + 1);
          seen = `${flow?.status} ${JSON.stringify([...counts])}`;
          return (
            counts.get("submitting") === 1 &&
            (counts.get("cancelled") ?? 0) + (counts.get("failed") ?? 0) === children - 1
          );
        },
        { timeoutMs: 10_000, message: () => `every node but c000 ended: ${seen}` },
      );
      const flow = await side.storedFlow("f1");
      expect(flow?.status).toBe("cancelled");
      expect(flow?.nodes[name(0)]?.status).toBe("submitting");
      const calls = spyB?.calls as Map<string, number>;
      const before = calls.get("getRecord") ?? 0;
      await delay(10_000);
      const reads = (calls.get("getRecord") ?? 0) - before;
      // Nothing changed meanwhile: the sweeps read c000's job, not the 199 ended nodes' each time.
      expect(reads, `B read ${reads} job records in 10 s of sweeps`).toBeLessThan(children);
    } finally {
      await side.dispose();
    }
  });
});
