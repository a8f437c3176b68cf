/**
 * The schedule store's contract (adapters/schedule-store.ts), the same on
 * NATS KV and in memory: every write a compare-and-set on the key's
 * revision, a deleted schedule gone for reads and lists and creatable again.
 * On NATS the stored value is also read back raw with nats.js.
 */
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMemoryBroker, memorySchedulesOf } from "../../src/adapters/memory/memory-broker.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import type { ScheduleStore } from "../../src/adapters/schedule-store.ts";
import { createRuntimeCore } from "../../src/api/runtime-core.ts";
import { RevisionConflict } from "../../src/kernel/errors.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import type { ScheduleRecord } from "../../src/kernel/schedule-record.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

let server: NatsServerHandle;
let nc: NatsConnection;
beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
});
afterAll(async () => {
  await nc?.close();
  await server?.dispose();
});

interface Made {
  readonly store: ScheduleStore;
  /** The stored value as the backend holds it, read without the store. */
  raw(id: string): Promise<unknown>;
  dispose(): Promise<void>;
}

const backends: Array<{ name: string; make(): Promise<Made> }> = [
  {
    name: "memory",
    make: async () => {
      const broker = createMemoryBroker();
      const store = memorySchedulesOf(broker)!;
      return {
        store,
        raw: async (id) => (await store.read(id))?.record,
        dispose: () => broker.close(),
      };
    },
  },
  {
    name: "nats",
    make: async () => {
      const core = await createRuntimeCore({
        servers: server.url,
        prefix: "contract",
        logger: silentLogger(),
      });
      const broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "contract" });
      return {
        store: broker.schedules,
        raw: async (id) => {
          const entry = await (await new Kvm(nc).open("contract_schedules")).get(id);
          return entry?.operation === "PUT" ? entry.json() : undefined;
        },
        dispose: async () => {
          await broker.close();
          await core.stop();
        },
      };
    },
  },
];

const record = (id: string, lastTick?: number): ScheduleRecord => ({
  v: 1,
  id,
  rule: { everyMs: 1000 },
  missed: "skip",
  job: { queue: "q", tasks: [1] },
  since: 1,
  ...(lastTick === undefined ? {} : { lastTick }),
  createdAt: 1,
  updatedAt: 1,
});

describe.each(backends)("the schedule store on $name", ({ make }) => {
  it("creates once, updates at the latest revision only, removes, and lists what is stored", async () => {
    const { store, raw, dispose } = await make();
    try {
      expect(await store.read("a")).toBeUndefined();
      expect(await store.list()).toEqual([]);
      expect(await store.remove("a")).toBe(false);
      const first = await store.create(record("a"));
      expect(await raw("a")).toEqual(record("a"));
      await expect(store.create(record("a"))).rejects.toBeInstanceOf(RevisionConflict);
      const second = await store.update(record("a", 5), first);
      await expect(store.update(record("a", 9), first)).rejects.toBeInstanceOf(RevisionConflict);
      expect(await store.read("a")).toEqual({
        record: record("a", 5),
        revision: second,
        storedAt: expect.any(Number),
      });
      expect(await raw("a")).toEqual(record("a", 5));
      await store.create(record("b"));
      expect((await store.list()).map((s) => s.record.id).sort()).toEqual(["a", "b"]);
      await expect(store.remove("a", first)).rejects.toBeInstanceOf(RevisionConflict);
      expect(await store.remove("a", second)).toBe(true);
      expect(await store.read("a")).toBeUndefined();
      expect(await raw("a")).toBeUndefined();
      expect((await store.list()).map((s) => s.record.id)).toEqual(["b"]);
      // A removed schedule can be made again.
      await store.create(record("a", 7));
      expect((await store.read("a"))?.record.lastTick).toBe(7);
    } finally {
      await dispose();
    }
  });

  it("stamps each entry with the server's clock, and reads the server's clock as it lists", async () => {
    const { store, dispose } = await make();
    try {
      // The server here runs on this host's clock: its stamps fall between two reads of it.
      const before = Date.now();
      const revision = await store.create(record("c"));
      await store.update(record("c", 3), revision);
      const read = await store.read("c");
      const after = Date.now();
      expect(read?.storedAt).toBeGreaterThanOrEqual(before - 5);
      expect(read?.storedAt).toBeLessThanOrEqual(after + 5);
      const listed = (await store.list()).find((s) => s.record.id === "c");
      expect(Math.abs(listed!.storedAt! - read!.storedAt!)).toBeLessThanOrEqual(1);
      const seen = store.serverTime();
      const serverNow = seen!.at + (performance.now() - seen!.seenAt);
      expect(Math.abs(serverNow - Date.now())).toBeLessThan(100);
    } finally {
      await dispose();
    }
  });
});
