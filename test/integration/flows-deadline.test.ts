/**
 * A flow node whose job's submit is rolled back for passing its commit
 * deadline (the broker slow for half a minute, an event loop stalled) is
 * submitted again by the flow's next step: it is not a refusal for good.
 * It was: the submit failed with an untagged error, which the job's actor
 * wrapped as a permanent refusal, and the node failed, its flow with it.
 * The deadline is passed by moving the runtime's clock on inside the job's
 * task publish; the oracles are the workers' ledger and the flow's end.
 */
import { describe, expect, it } from "vitest";
import type { JobRecord } from "../../src/index.ts";
import { realClock } from "../../src/kernel/clock.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { within } from "../harness/wait.ts";

describe("a flow node whose submit passed its commit deadline", () => {
  it("is submitted again, and the flow succeeds", { timeout: 20_000 }, async () => {
    let skew = 0;
    const clock = { ...realClock, now: () => Date.now() + skew };
    const { broker, calls } = spiedBroker(
      createMemoryBroker({ server: createMemoryServer() }),
      (name, _n, args, call) => {
        // The first publish of queue `late`'s tasks takes a minute by the runtime's clock: the
        // submit's deadline (30 s on) passes before its commit.
        if (name === "publishTasks" && (args[0] as JobRecord).queue === "late" && skew === 0) skew = 60_000;
        return call();
      },
    );
    const rt = await createTestRuntime({ broker, clock });
    try {
      const ran: string[] = [];
      rt.workers.start({ queue: "late", handler: (task) => ran.push(`late:${task.index}`) });
      rt.workers.start({ queue: "ok", handler: (task) => ran.push(`ok:${task.index}`) });
      const flow = await rt.flows.submit({
        parent: { queue: "ok", tasks: [1] },
        children: [{ queue: "late", tasks: [1, 2], lane: false }],
      });
      const end = await within(flow.done(), 15_000);
      expect(end).toMatchObject({ status: "succeeded" });
      // Published twice (the first submit rolled back), each task run once.
      expect(calls.get("publishTasks")).toBeGreaterThanOrEqual(3);
      expect(ran.sort()).toEqual(["late:0", "late:1", "ok:0"]);
    } finally {
      await rt.stop();
    }
  });
});
