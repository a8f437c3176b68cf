/**
 * Records a runtime cannot read (a newer version's, during a rolling
 * upgrade; anything written by hand) in the jobs bucket: a record watch
 * passes over each, and goes on with the next at once. Each one failed the
 * watch's round: its consumer was made again, after a pause that grew to
 * 5 s when they came often, and the watch (every runtime's, and every
 * events reader's) fell behind. The oracle: the records this test wrote,
 * raw, against those handed over, and the rounds the watch made.
 */
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { newRecord } from "../contract/contract-helpers.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import {
  type RestartableBroker,
  startRestartableBroker,
  watchedRecords,
} from "../harness/restartable-broker.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

describe("a record watch over records it cannot read", () => {
  let server: NatsServerHandle;
  let broker: NatsBroker;
  let started: RestartableBroker | undefined;
  let raw: NatsConnection;
  beforeAll(async () => {
    started = await startRestartableBroker("unreadable", logger);
    ({ server, broker } = started);
    raw = await connect({ servers: server.url });
  });
  afterAll(async () => {
    await raw?.close();
    await started?.dispose();
  });

  it("passes over each in the same round, and hands over the records around them", async () => {
    await broker.createRecord(newRecord(1, 30_000)); // the bucket set up
    const watch = watchedRecords(broker);
    const { seen } = watch;
    try {
      await watch.inPlace();
      const kv = await new Kvm(raw).open("jetstate_jobs");
      const written: string[] = [];
      for (let n = 0; n < 4; n++) {
        await kv.put(`jbad${n}`, JSON.stringify({ v: 2, id: `jbad${n}`, shape: "of a later version" }));
        const record = newRecord(1, 30_000);
        await broker.createRecord(record);
        written.push(record.id);
      }
      await waitUntil(() => written.every((id) => seen.includes(id)), {
        timeoutMs: 20_000,
        message: () => `the records written around them (heard ${seen.length})`,
      });
      expect(watch.rounds()).toBe(1);
    } finally {
      await watch.stop();
    }
  }, 60_000);
});
