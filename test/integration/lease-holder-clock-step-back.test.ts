/**
 * A supervisor whose clock is set back while it holds a job's lease (NTP
 * stepping a clock that ran a minute ahead), then cut off from the server:
 * another runtime takes the job over once the lease ran out by the server's
 * time, and the first must stop supervising by then. It held the lease by
 * the `until` it wrote before the step, a minute on: back on the server, it
 * wrote the job's record as its supervisor beside the runtime that took it
 * over (and, its job chores due by the wall clock, renewed nothing for the
 * minute after the step). Oracles: the leases read raw, and the bytes the first runtime sent
 * through the proxy in front of it (its writes to the job's record).
 */
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import type { RuntimeOptions } from "../../src/index.ts";
import { realClock } from "../../src/kernel/clock.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { liveEntries } from "../harness/kv-keys.ts";
import { rawJobRecords } from "../harness/raw-job-records.ts";
import { useServerConnection } from "../harness/server-connection.ts";
import { tcpProxy } from "../harness/tcp-proxy.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

const leaseMs = 2000;

describe("a lease holder whose clock is set back, then cut off", () => {
  const served = useServerConnection();

  it("stops supervising once its lease ran out: it writes nothing of the job after its taker", async () => {
    const prefix = `step${randomUUID().slice(0, 8)}`;
    /** What runtime A sent through the proxy, byte for byte (latin1: one char a byte). */
    let sent = "";
    const proxy = await tcpProxy(served.server.url, { sent: (bytes) => (sent += bytes.toString("latin1")) });
    const runtimes: Runtime[] = [];
    const runtime = async (name: string, options: RuntimeOptions) => {
      const rt = await createRuntime({
        servers: served.server.url,
        prefix,
        name,
        logger: silentLogger(),
        ...options,
        jobs: { leaseMs, cleanupIntervalMs: 0, reapIntervalMs: 0, ...options.jobs },
      });
      runtimes.push(rt);
      return rt;
    };
    /** The leases and heartbeats stored, read raw. */
    const leases = async () =>
      (await liveEntries(served.nc, `${prefix}_leases`)).map(({ key, entry }) => ({
        key,
        ...entry.json<{ holder: string; at: number }>(),
      }));
    const leaseHolder = async (jobId: string) => (await leases()).find(({ key }) => key === jobId)?.holder;
    const release = gate();
    try {
      const queue = "q";
      const w = await runtime("w", { roles: ["worker"] });
      w.workers.start({
        queue,
        handler: async () => {
          await release.opened;
          return 1;
        },
      });
      // A's host runs a minute ahead, and takes nothing over (it only supervises its own job).
      let aheadMs = 60_000;
      const a = await runtime("a", {
        servers: proxy.url,
        clock: { ...realClock, now: () => Date.now() + aheadMs },
        connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
        jobs: { takeOver: false },
      });
      const job = await a.jobs.submit({ queue, tasks: [1], lane: false, stallAfterMs: 60_000 });
      await waitUntil(async () => (await leaseHolder(job.id))?.startsWith("a.") === true, {
        timeoutMs: 10_000,
        message: "the job's lease held by A",
      });
      // NTP sets A's clock right: it renews its leases on (its heartbeat written by its clock
      // set right; the job chores due by the wall clock held them a minute). Then A is cut off
      // from the server: its renewals stop.
      aheadMs = 0;
      await waitUntil(
        async () =>
          (await leases()).some(
            (l) => l.key.startsWith("heartbeat.") && l.holder.startsWith("a.") && l.at < Date.now() + 30_000,
          ),
        { timeoutMs: 15_000, message: "A's heartbeat written after its clock was set back" },
      );
      proxy.cut();
      await runtime("b", {});
      let holder: string | undefined;
      await waitUntil(
        async () => {
          holder = await leaseHolder(job.id);
          return holder?.startsWith("b.") === true;
        },
        {
          timeoutMs: 20_000,
          message: () => `the job's lease taken over by B (holder: ${holder})`,
        },
      );
      // B supervises the job now; A comes back to the server.
      const backAt = sent.length;
      proxy.restore();
      await waitUntil(() => sent.includes("CONNECT ", backAt), {
        timeoutMs: 10_000,
        message: "A connected again",
      });
      release.open();
      expect(await within(job.done(), 20_000)).toMatchObject({ status: "succeeded", done: 1 });
      const stored = (await rawJobRecords(served.nc, `${prefix}_jobs`)).find((r) => r.id === job.id);
      expect(stored).toMatchObject({ status: "succeeded", counts: { done: 1, failed: 0, dead: 0 } });
      // A heard the job's end; what it wrote to the record since it came back, the supervisor's writes.
      const recordWrites = sent.slice(backAt).split(`PUB $KV.${prefix}_jobs.${job.id} `).length - 1;
      expect(recordWrites, "A's writes to the job's record after B took it over").toBe(0);
    } finally {
      release.open();
      for (const rt of runtimes.reverse()) await rt.stop();
      await proxy.close();
    }
  }, 90_000);
});
