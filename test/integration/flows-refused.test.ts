/**
 * A node whose job the broker refuses for good (a permanent error, not a
 * transient one) does not leave its flow waiting forever: the node fails
 * with the broker's reason and the flow goes on by its policy. The broker
 * is the memory broker behind a proxy that refuses the job records of one
 * queue; the oracle is the workers' ledger and the records read raw.
 */
import { describe, expect, it } from "vitest";
import type { JobRecord } from "../../src/index.ts";
import { PermanentBrokerError } from "../../src/kernel/errors.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";

describe("a flow node refused for good", () => {
  it("fails with the reason; under fail the parent is skipped, under continue it runs", {
    timeout: 15_000,
  }, async () => {
    const server = createMemoryServer();
    const { broker, calls } = spiedBroker(createMemoryBroker({ server }), (name, _n, args, call) => {
      if (name === "createRecord" && (args[0] as JobRecord).queue === "refused")
        throw new PermanentBrokerError({
          message: "queue refused by the server",
          operation: "job.record.create",
        });
      return call();
    });
    const rt = await createTestRuntime({ broker });
    try {
      const ran: string[] = [];
      rt.workers.start({ queue: "ok", handler: (task) => ran.push(task.jobId) });
      const refusedChild = { queue: "refused", tasks: [1] };
      const flow = await rt.flows.submit({ parent: { queue: "ok", tasks: [1] }, children: [refusedChild] });
      const end = await flow.done();
      expect(end.status).toBe("failed");
      expect(end.nodes.child0).toMatchObject({ status: "failed" });
      expect(end.nodes.child0?.reason).toMatch(/^not submitted: .*queue refused by the server/);
      expect(end.nodes.parent?.status).toBe("skipped");
      expect(await rt.jobs.record(end.nodes.child0?.jobId as string)).toBeUndefined();
      const going = await rt.flows.submit({
        parent: { queue: "ok", tasks: [1] },
        children: [refusedChild],
        policy: { onChildFailure: "continue" },
      });
      const after = await going.done();
      expect(after.status).toBe("succeeded");
      expect(ran).toEqual([after.nodes.parent?.jobId]);
      // Tried once per flow: a permanent refusal is not retried step after step.
      expect(calls.get("createRecord")).toBe(3);
    } finally {
      await rt.stop();
    }
  });
});
