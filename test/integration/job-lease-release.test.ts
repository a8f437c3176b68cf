/**
 * A clean `rt.stop()` gives back the supervision leases of the jobs the
 * runtime supervised: written as run out (`until` 0), the key kept, so
 * another runtime finds the job among the leases and takes it over at once,
 * not after `jobs.leaseMs`. The leases bucket is read through a connection
 * of this test's own, not through jetstate.
 */
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
// Far longer than the test waits: a lease left behind cannot run out meanwhile.
const leaseMs = 20_000;

describe("leases of the jobs a runtime supervised, after a clean stop", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  const runtimes: Runtime[] = [];

  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url, name: "lease-release-test" });
  });
  afterAll(async () => {
    for (const rt of runtimes) await rt.stop();
    await nc?.close();
    await server?.dispose();
  });

  const start = async (name: string) => {
    const rt = await createRuntime({ servers: server.url, name, logger, jobs: { leaseMs } });
    runtimes.push(rt);
    return rt;
  };
  const leaseOf = async (jobId: string) => {
    const kv = await new Kvm(nc).open("jetstate_leases");
    const entry = await kv.get(jobId);
    return entry?.operation === "PUT" ? entry.json<{ holder: string; until: number }>() : undefined;
  };

  it("are released by stop(), and another runtime takes the job over at once", async () => {
    const a = await start("lease-a");
    // No worker: the jobs stay running, supervised by A. Several: each actor releases its own.
    const jobs = await Promise.all(
      [1, 2, 3, 4, 5].map(() => a.jobs.submit({ queue: "lease-release", tasks: [1, 2, 3] })),
    );
    const ids = jobs.map((j) => j.id);
    const holders = async () => Promise.all(ids.map(async (id) => (await leaseOf(id))?.holder.split(".")[0]));
    await waitUntil(async () => (await holders()).every((h) => h === "lease-a"), {
      timeoutMs: 5000,
      message: "A holds the leases",
    });

    const stoppedAt = Date.now();
    await a.stop();
    // Given back: nobody holds them, and they are still there to be found.
    const given = await Promise.all(ids.map(leaseOf));
    expect(given.map((l) => l !== undefined && l.until <= stoppedAt)).toEqual(ids.map(() => true));

    const startedAt = Date.now();
    const b = await start("lease-b");
    await waitUntil(async () => (await holders()).every((h) => h === "lease-b"), {
      timeoutMs: 5000,
      message: "B took the jobs over",
    });
    expect(Date.now() - startedAt).toBeLessThan(leaseMs / 2);
    for (const id of ids) expect((await b.jobs.get(id))?.snapshot().status).toBe("running");
  }, 30_000);
});
