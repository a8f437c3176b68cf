/**
 * Attack on `rt.schedules.upsert` (review of 60b2016): with no reading of the
 * server's clock yet (NATS: a runtime in its first seconds, before its
 * scheduler's first listing, or one with the scheduler off; a reading gone
 * stale), an upsert reads its write back to show the next tick by the server's
 * stamp. That read is one more request after the write was stored: when it
 * fails (a timeout, the connection dropping right after the write's ack) the
 * upsert rejects, though the schedule is stored and fires. A caller is told
 * its upsert failed when it took effect (and one that undoes or reports on
 * failure acts on a lie); before the merge it returned once the write was in.
 *
 * Oracle: the store itself (the record is there) and the upsert's outcome.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { memoryScheduleStore } from "../../src/adapters/memory/memory-schedule-store.ts";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import type { ScheduleStore } from "../../src/adapters/schedule-store.ts";
import type { JobRegistry } from "../../src/api/jobs.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { createSchedules } from "../../src/api/schedules.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryServer } from "../../src/testing.ts";

describe("an upsert whose write is stored, with no reading of the server's clock", () => {
  it("resolves when the read of its write back fails (a timeout after the write's ack)", async () => {
    const server = createMemoryServer();
    const inner = memoryScheduleStore(memoryServerState(server).schedules, () => undefined);
    let reads = 0;
    // As a NATS store before its first listing: no reading of the server's clock; its second
    // read (the read-back after the write) times out.
    const store: ScheduleStore = {
      ...inner,
      serverTime: () => undefined,
      read: async (id) => {
        if (++reads === 2) throw new Error("TIMEOUT");
        return inner.read(id);
      },
    };
    const core = await createRuntimeCore(
      { logger: silentLogger(), jobs: { scheduler: false } },
      { connect: false },
    );
    try {
      const schedules = createSchedules(
        core,
        { maxPayload: async () => 1024 * 1024 } as unknown as Broker,
        store,
        undefined as unknown as JobRegistry,
      );
      const outcome = await schedules
        .upsert({ id: "s", everyMs: 1000, job: { queue: "q", tasks: [1] } })
        .then(
          () => "resolved",
          (error: unknown) => `rejected: ${error instanceof Error ? error.message : String(error)}`,
        );
      const stored = await inner.read("s");
      expect({ stored: stored !== undefined, outcome }).toEqual({ stored: true, outcome: "resolved" });
    } finally {
      await core.stop();
      server.close();
    }
  });
});
