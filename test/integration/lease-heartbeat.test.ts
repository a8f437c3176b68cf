/**
 * A runtime renews the leases of all the jobs it supervises with one write,
 * its heartbeat: the writes to the leases bucket do not grow with the jobs
 * held. The oracle is the server's own count of the messages stored in the
 * bucket's stream (its last sequence), read through a connection of this
 * test's own, and the leases as stored, read raw.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
// Long enough that a loaded machine (a full test run on 2 cores) rarely answers a heartbeat
// after the last one ran out: such a gap renews every lease once on its own (below).
const leaseMs = 1500;
const jobs = 40;
const watchMs = 4500;

describe("lease renewals of a runtime holding many jobs", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  let rt: Runtime | undefined;

  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url, name: "lease-heartbeat-test" });
  });
  afterAll(async () => {
    await rt?.stop();
    await nc?.close();
    await server?.dispose();
  });

  it("cost one heartbeat write per third of the lease, not one per job", async () => {
    rt = await createRuntime({ servers: server.url, name: "holder", logger, jobs: { leaseMs } });
    // No worker: every job stays running, its lease held.
    const ids: string[] = [];
    for (let n = 0; n < jobs; n++) ids.push((await rt.jobs.submit({ queue: "held", tasks: [n, n + 1] })).id);
    const leases = await new Kvm(nc).open("jetstate_leases");
    const heldByRt = async () => {
      let held = 0;
      for (const id of ids)
        if ((await leases.get(id))?.json<{ holder: string }>().holder.startsWith("holder.")) held++;
      return held;
    };
    await waitUntil(async () => (await heldByRt()) === jobs, {
      timeoutMs: 10_000,
      message: "every lease taken",
    });
    const jsm = await jetstreamManager(nc);
    const stored = async () => (await jsm.streams.info("KV_jetstate_leases")).state.last_seq;
    // Past the first lease periods: leases taken before the first heartbeat are renewed once on their own.
    await new Promise((resolve) => setTimeout(resolve, leaseMs * 2));
    const before = await stored();
    // The measuring window: the writes in it are counted, not waited for.
    await new Promise((resolve) => setTimeout(resolve, watchMs));
    const written = (await stored()) - before;
    console.log(
      `${jobs} jobs held for ${watchMs} ms (lease ${leaseMs} ms): ${written} writes to the leases bucket`,
    );

    // A renewal per job per third of the lease would be jobs × watchMs / (leaseMs / 3) = 360.
    // One heartbeat a third of the lease is 9; each late heartbeat (a gap) adds a renewal of
    // each lease, once: the bound allows two of them (a machine busy with other test files),
    // 92 writes, far from a renewal per job per period.
    const periods = watchMs / (leaseMs / 3);
    expect(written).toBeGreaterThan(0); // the heartbeat is written
    expect(written).toBeLessThanOrEqual(periods + 3 + 2 * jobs);
    // Still held by the runtime, and not run out for another one: the lease's own `until` is
    // long past (never rewritten), its holder's heartbeat is not.
    expect(await heldByRt()).toBe(jobs);
    const now = Date.now();
    const { broker } = partsOf(rt);
    expect(ids.filter((id) => !broker.leases.holds(id, now))).toEqual([]);
    const listed = (await broker.leases.list()).filter((l) => ids.includes(l.jobId));
    expect(listed.filter((l) => l.lease.until <= now).map((l) => l.jobId)).toEqual([]);
    const own = await Promise.all(
      ids.map(async (id) => (await leases.get(id))!.json<{ until: number }>().until),
    );
    // Unless a heartbeat came late (a loaded machine): then each lease was renewed once on its own.
    if (written <= periods + 3) expect(own.filter((until) => until > now)).toEqual([]);
  });
});
