/**
 * A lease is released up to the revision its holder wrote. A server back
 * with an empty store starts its sequences over, so the revision of a lease
 * written before may be another lease's sequence now: a release must name
 * its key (a purge filtered by it), never remove by sequence alone, or it
 * removes a lease another job's supervision rests on. The oracle is the
 * bucket as stored, read through a connection of this test's own.
 */
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { describe, expect, it, onTestFinished } from "vitest";
import { partsOf, type Runtime } from "../../src/api/runtime.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { useNatsRuntime } from "../harness/runtime.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

describe("a lease written before the server lost its store", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  useNatsRuntime({ name: "holder", logger, jobs: { takeOver: false, cleanupIntervalMs: 0 } }, (started) => {
    ({ server, rt } = started);
  });

  it("is released without touching the lease that now has its sequence", async () => {
    const { leases } = partsOf(rt).broker;
    // Job ids of this test's own: no record, so no actor acts on them.
    expect(await leases.acquire("jbefore", 60_000)).toBe(true);
    const before = await connect({ servers: server.url, name: "lease-reset-test" });
    const revisionBefore = (await (await new Kvm(before).open("jetstate_leases")).get("jbefore"))?.revision;
    await before.close();

    await server.restartEmpty();
    // The bucket made again from the start: the next lease takes the sequence the old one had.
    expect(await leases.acquire("jafter", 60_000)).toBe(true);
    const nc = await connect({ servers: server.url, name: "lease-reset-test" });
    onTestFinished(() => nc.close());
    const bucket = await new Kvm(nc).open("jetstate_leases");
    expect((await bucket.get("jafter"))?.revision).toBe(revisionBefore);

    await leases.release("jbefore");
    expect((await bucket.get("jafter"))?.operation).toBe("PUT");
    expect(await bucket.get("jbefore")).toBeNull();
  }, 60_000);
});
