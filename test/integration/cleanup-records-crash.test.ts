/**
 * A record cleanup removed stays removed when the server is killed right
 * after the pass. On nats-server 2.9 a delete by sequence without erasure
 * is forgotten by a server killed before it flushes, and a KV delete whose
 * marker was then removed brought back the record behind it (the limit's
 * removal of the record, in an older block, was not flushed either): most
 * of 200 came back that way. The oracle is each key as the restarted server
 * stores it, read through a connection of this test's own.
 */
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { describe, expect, it, onTestFinished } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import { finishedRecord } from "../harness/finished-records.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { useNatsRuntime } from "../harness/runtime.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");
// Large enough to fill several of the store's blocks, as a deployment's records do over time;
// the oldest expired, the rest kept (a block left empty goes as a whole, which a kill keeps).
const records = 900;
const expiredRecords = 200;
const padding = "x".repeat(10_000);

describe("records cleanup removed, then the server killed", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  useNatsRuntime({ name: "cleaner", logger, jobs: { cleanupIntervalMs: 0 } }, (started) => {
    ({ server, rt } = started);
  });

  it("do not come back", async () => {
    await rt.jobs.list(); // the bucket, made by the runtime as it makes it
    const raw = await connect({ servers: server.url, name: "records-crash-writer" });
    const bucket = await new Kvm(raw).open(names.jobsBucket);
    const ids: string[] = [];
    for (let n = 0; n < records; n++) {
      const at = n < expiredRecords ? Date.now() - 3_600_000 : Date.now();
      const record = { ...finishedRecord(n, at), note: padding };
      await bucket.put(record.id, JSON.stringify(record));
      if (n < expiredRecords) ids.push(record.id);
    }
    await raw.close();

    const report = await rt.admin.cleanup({ retentionMs: 60_000 });
    expect(report.recordsRemoved).toHaveLength(expiredRecords);
    await server.kill();
    await server.restart();

    const nc = await connect({ servers: server.url, name: "records-crash-reader" });
    onTestFinished(() => nc.close());
    const after = await new Kvm(nc).open(names.jobsBucket);
    let back = 0;
    for (const id of ids) if ((await after.get(id))?.operation === "PUT") back++;
    expect(back).toBe(0);
  }, 120_000);
});
