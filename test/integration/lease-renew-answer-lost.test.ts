/**
 * A lease renewal stored whose answer was lost (a disconnect, a timeout) is
 * tried again by its operation: that try's compare-and-set meets the first
 * one's write. The lease still names this runtime, but the renewal took it
 * for another's: it forgot the lease and said so. A runtime that takes no
 * job over then never took it back, and its heartbeat kept it alive to every
 * other runtime: nobody supervised the job. The oracle: the lease as stored,
 * written raw through a nats.js client of the test's own (the first try's
 * write, as the server stored it).
 */
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, partsOf } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

describe("a lease renewal that meets a write", () => {
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

  it.each([
    ["its own (a try whose answer was lost): the lease is still held", true],
    ["another runtime's: the lease is lost", false],
  ])("%s", async (_name, own) => {
    const rt = await createRuntime({
      servers: server.url,
      logger: silentLogger(),
      jobs: { takeOver: false },
    });
    try {
      const { leases } = partsOf(rt).broker;
      const jobId = `renewed_${own}`;
      expect(await leases.acquire(jobId, 60_000)).toBe(true);
      const kv = await new Kvm(nc).open("jetstate_leases");
      const entry = await kv.get(jobId);
      const holder = own ? leases.holder : "another.runtime";
      await kv.update(jobId, JSON.stringify({ v: 1, holder, until: Date.now() + 60_000 }), entry!.revision);
      expect(await leases.renew(jobId, 60_000)).toBe(own);
      expect(leases.supervises(jobId)).toBe(own);
      if (!own) return;
      // Held at the revision stored: the next renewal is a write of its own.
      expect(await leases.renew(jobId, 60_000)).toBe(true);
      expect((await kv.get(jobId))?.json<{ holder: string }>().holder).toBe(leases.holder);
    } finally {
      await rt.stop();
    }
  });
});
