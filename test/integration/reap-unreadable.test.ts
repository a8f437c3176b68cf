/**
 * The reaper finishes submits whose submitter died, reading the record of
 * every job that holds a supervision lease. One record it cannot read (a
 * newer version's, say) must not stop it: the dead submit beside it is
 * still rolled back. Memory broker; the records are written as a dead
 * submitter and a newer runtime would have left them.
 */
import { describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createTestRuntime, partsOf } from "../../src/api/runtime.ts";
import { planSubmit } from "../../src/effects/plan-submit.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";

describe("the reaper beside a record it cannot read", () => {
  it("still rolls back a dead submit", async () => {
    const server = createMemoryServer();
    const broker = createMemoryBroker({ server });
    const rt = await createTestRuntime({ name: "reaper", broker });
    try {
      // A submit that died after its record: submitting, with its lease.
      const { record } = await planSubmit({ queue: "q", tasks: [1] }, 1024 * 1024, Date.now());
      await broker.createRecord(record);
      await broker.leases.enrol(record.id);
      // A record of a newer version, with a lease.
      memoryServerState(server).records.put("test", "newer", JSON.stringify({ v: 2, id: "newer" }));
      await broker.leases.enrol("newer");
      const report = await partsOf(rt).jobs.reap(() => Date.now() + 10 * 60_000);
      expect(report.rolledBack).toEqual([record.id]);
      expect((await broker.getRecord(record.id))?.record).toMatchObject({ phase: "rolledBack" });
    } finally {
      await rt.stop();
    }
  });
});
