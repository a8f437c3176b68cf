/**
 * A cleanup pass lists the supervision leases, then the records. A submit
 * writes its lease and its record together, so a job's lease can be listed
 * and its record land just after the records were read: such a lease is its
 * job's, not a leftover, and must stay (without it takeover and the reaper
 * never find the job). Read from the leases bucket itself.
 */
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import type { NatsJobBroker } from "../../src/adapters/nats/job-broker.ts";
import { cleanupJobs } from "../../src/adapters/nats/job-cleanup.ts";
import type { NatsJobLeases } from "../../src/adapters/nats/job-leases.ts";
import { createNatsBroker, type NatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntimeCore, type RuntimeCore } from "../../src/api/runtime-core.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { record } from "../unit/fake-job-port.ts";

describe("a cleanup pass and a submit's lease", () => {
  let server: NatsServerHandle;
  let core: RuntimeCore & { stop(): Promise<void> };
  let broker: NatsBroker;
  beforeAll(async () => {
    server = await startNatsServer();
    core = await createRuntimeCore({ servers: server.url, logger: pino({ level: "silent" }), prefix: "clr" });
    broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "clr-a" });
    await broker.provision([]);
  });
  afterAll(async () => {
    await broker?.close();
    await core?.stop();
    await server?.dispose();
  });

  /** A cleanup pass during which `landing` is written just after the records were read. */
  const cleanupWhile = (landing: (jet: NatsJobBroker) => Promise<unknown>) => {
    const racing = new Proxy(broker.jetstream, {
      get(target, key) {
        const value = Reflect.get(target, key);
        if (typeof value !== "function") return value;
        if (key !== "listRecordsAndMarkers") return value.bind(target);
        return async () => {
          const listed = await target.listRecordsAndMarkers();
          await landing(target);
          return listed;
        };
      },
    }) as NatsJobBroker;
    return cleanupJobs(core, racing, broker.leases as NatsJobLeases, { retentionMs: 3600_000 });
  };

  /** The leases bucket's own entry of each job: its operation, or null when gone. */
  const storedLeases = async (...jobIds: string[]) => {
    const nc = await connect({ servers: server.url });
    try {
      const kv = await new Kvm(nc).open(brokerNames("clr").leasesBucket);
      return await Promise.all(jobIds.map(async (id) => (await kv.get(id))?.operation ?? null));
    } finally {
      await nc.close();
    }
  };

  it("a lease listed before its record landed stays; a leftover lease without a record goes", async () => {
    const fresh = record({ id: "jfresh", commitDeadline: Date.now() + 60_000 });
    await broker.leases.acquire(fresh.id, 60_000);
    await broker.leases.acquire("jleftover", 60_000);
    // The records are read; the fresh job's record lands right after, before the pass goes on.
    const report = await cleanupWhile((jet) => jet.createRecord(fresh));
    expect(report.leasesRemoved).toEqual(["jleftover"]);
    // The bucket itself: the fresh job's lease is there, the leftover's is gone.
    expect(await storedLeases(fresh.id, "jleftover")).toEqual(["PUT", null]);
  });

  it("a lease listed before its key's rolled-back record was taken over by a new submit stays", async () => {
    // A rolled-back submit of a key: its record stays, finished, and its lease went.
    const old = record({ id: "jretaken", phase: "rolledBack", status: "failed", reason: "submit failed: x" });
    const revision = await broker.createRecord(old);
    // The key submitted again: its lease, then its take-over of the record, which lands while the
    // records are read.
    await broker.leases.acquire(old.id, 60_000);
    const again = record({ id: old.id, submitId: "again", commitDeadline: Date.now() + 60_000 });
    const report = await cleanupWhile((jet) => jet.updateRecord(again, revision));
    expect(report.leasesRemoved).not.toContain(old.id);
    expect(await storedLeases(old.id)).toEqual(["PUT"]);
  });
});
