/**
 * Takeover does not slow down with the jobs kept: 20,000 finished job
 * records (written straight into the jobs bucket, as past jobs leave them)
 * and one live job, whose supervisor (a child process,
 * test/fixtures/job-supervisor.ts) is SIGKILLed mid-job. Another runtime
 * (B, here, on a broker that counts what it reads) must take the job over
 * within `leaseMs` + 1 s of the kill and finish it with every task counted
 * once. The oracles: the workers' own ledger, the results stream and the
 * lease history as the server stores them, read through this test's own
 * connection; and B's reads of job records, which must not grow with the
 * records stored (a takeover pass reads the leases, one per live job, and
 * the record of a lease that ran out — not every record).
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { JobRegistry } from "../../src/api/jobs.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore, type RuntimeCore } from "../../src/api/runtime-core.ts";
import type { Worker } from "../../src/api/workers.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { encodeRecord } from "../../src/kernel/job-record-codec.ts";
import { finishedRecord } from "../harness/finished-records.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsRawResults, tally } from "../harness/raw-results.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { type Child, killAll, startChild } from "../harness/supervisor-child.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const leaseMs = 1000;
const total = 400;
const finishedRecords = Number(process.env.FINISHED_RECORDS ?? 20_000);

/** Writes the records pipelined, 1,000 puts in flight at most. */
const writeRecords = async (nc: NatsConnection, records: readonly JobRecord[]) => {
  const js = jetstream(nc);
  for (let from = 0; from < records.length; from += 1000) {
    await Promise.all(
      records.slice(from, from + 1000).map((r) => js.publish(`$KV.jetstate_jobs.${r.id}`, encodeRecord(r))),
    );
  }
};

interface LeaseWrite {
  readonly op: string;
  readonly holder?: string;
  readonly until?: number;
  /** Server time of the write. */
  readonly at: number;
}

describe(`takeover with ${finishedRecords} finished records kept`, () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  let rt: Runtime;
  let worker: Worker;
  let core: RuntimeCore & { stop(): Promise<void> };
  let registry: JobRegistry | undefined;
  let bBroker: Broker | undefined;
  const children: Child[] = [];
  const handled = new Map<string, number[]>();
  const leaseWrites = new Map<string, LeaseWrite[]>();
  /** What B read of the job records: records listed plus records read one by one. */
  let recordsRead = 0;

  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url, name: "many-records-test" });
    // Workers only: no takeover here, so the only runtime that may take over is B.
    rt = await createRuntime({
      servers: server.url,
      name: "workers",
      logger,
      jobs: { takeOver: false, leaseMs },
    });
    await rt.admin.provision(["takeover"]);
    const started = Date.now();
    await writeRecords(
      nc,
      Array.from({ length: finishedRecords }, (_, n) => finishedRecord(n, started - 3600_000, "takeover")),
    );
    console.log(`${finishedRecords} finished records written in ${Date.now() - started} ms`);
    const watch = await (await new Kvm(nc).open("jetstate_leases")).watch();
    void (async () => {
      for await (const e of watch) {
        const lease = e.operation === "PUT" ? e.json<{ holder: string; until: number }>() : undefined;
        const writes = leaseWrites.get(e.key) ?? [];
        writes.push({ op: e.operation, ...lease, at: e.created.getTime() });
        leaseWrites.set(e.key, writes);
      }
    })();
    // Steady: 2 in flight × 20 ms ≈ 100 tasks/s, so the job lasts ~4 s.
    worker = rt.workers.start<number, number>({
      queue: "takeover",
      concurrency: 2,
      handler: async (task) => {
        const seen = handled.get(task.jobId) ?? [];
        seen.push(task.index);
        handled.set(task.jobId, seen);
        await new Promise((r) => setTimeout(r, 20));
        return task.payload * 3;
      },
    });
  }, 120_000);

  afterAll(async () => {
    await killAll(children);
    await registry?.stop();
    await core?.stop();
    await bBroker?.close();
    await worker?.stop();
    await rt?.stop();
    await nc?.close();
    await server?.dispose();
  });

  it("B takes the job over within leaseMs + 1 s of the kill, reading records for live jobs only", async () => {
    // B: every role, takeover on; its broker counts the job records it reads.
    core = await createRuntimeCore({ servers: server.url, name: "B", logger });
    const inner = createNatsBroker(core, { retentionMs: 7 * 24 * 3600_000, holder: "B.spied" });
    const { broker } = spiedBroker(inner, (key, _n, _args, call) => {
      const result = call();
      if (key === "getRecord") recordsRead++;
      if (key === "listRecords")
        void (result as Promise<JobRecord[]>).then(
          (rows) => {
            recordsRead += rows.length;
          },
          () => undefined,
        );
      return result;
    });
    bBroker = broker;
    registry = new JobRegistry(core, broker, {
      reapIntervalMs: 2000,
      reapGraceMs: 10_000,
      leaseMs,
      takeOver: true,
    });
    await inner.leases.list(); // B is connected (an operation waits for it)

    const a = startChild([server.url, "child-A", "submit", String(total), String(leaseMs)], children);
    const jobId = String((await a.waitFor((l) => l.event === "submitted", "submitted")).jobId);
    const handledNow = () => new Set(handled.get(jobId)).size;
    await waitUntil(() => handledNow() >= total / 4, {
      timeoutMs: 30_000,
      message: "a quarter of the job done",
    });
    const readBeforeKill = recordsRead;
    const killedAt = Date.now();
    a.process.kill("SIGKILL");
    await a.exited;
    expect(handledNow()).toBeLessThan(total);

    // The lease as the server stores it: B's first write after A's.
    const firstB = () => (leaseWrites.get(jobId) ?? []).find((w) => w.op === "PUT" && w.holder === "B.spied");
    await waitUntil(() => firstB() !== undefined, { timeoutMs: 30_000, message: "B took the lease" });
    const tookAfterMs = firstB()!.at - killedAt;
    const readUntilTakeover = recordsRead - readBeforeKill;
    console.log(
      `${finishedRecords} finished records: B took over ${tookAfterMs} ms after the kill ` +
        `(leaseMs ${leaseMs}); B read ${readUntilTakeover} job records from the kill to the takeover`,
    );
    expect(tookAfterMs).toBeLessThanOrEqual(leaseMs + 1000);

    const handle = (await registry.get<number>(jobId))!;
    const final = await handle.done();
    expect(final).toMatchObject({ status: "succeeded", total, done: total, failed: 0, dead: 0 });
    // Every index stored once, and run once by the workers (the kill is of the supervisor).
    const all = Array.from({ length: total }, (_, n) => n);
    const stored = new Set((await natsRawResults(nc, "takeover", jobId)).map((e) => e.i));
    expect([...stored].sort((x, y) => x - y)).toEqual(all);
    const runs = tally(handled.get(jobId) ?? []);
    expect([...runs.keys()].sort((x, y) => x - y)).toEqual(all);
    expect([...runs].filter(([, n]) => n !== 1)).toEqual([]);
    // The lease went from A to B, never back, and only after A's last `until`: its own, and
    // A's heartbeat (which renewed it).
    const puts = (leaseWrites.get(jobId) ?? []).filter((w) => w.op === "PUT");
    const aBeats = [...leaseWrites]
      .filter(([key]) => key.startsWith("heartbeat."))
      .flatMap(([, writes]) => writes)
      .filter((w) => w.op === "PUT" && w.holder?.startsWith("child-A."));
    expect(aBeats.length).toBeGreaterThan(0);
    const holders = puts.map((w) => w.holder!.split(".")[0]);
    const fromB = holders.indexOf("B");
    expect(fromB).toBeGreaterThan(0);
    expect(holders.slice(0, fromB).every((h) => h === "child-A")).toBe(true);
    expect(holders.slice(fromB).every((h) => h === "B")).toBe(true);
    expect(puts[fromB]!.at).toBeGreaterThanOrEqual(puts[fromB - 1]!.until!);
    expect(puts[fromB]!.at).toBeGreaterThanOrEqual(Math.max(...aBeats.map((w) => w.until!)));
    // At the end B released it, purged: the leases bucket holds no key of a finished job.
    const leases = await new Kvm(nc).open("jetstate_leases");
    await waitUntil(async () => (await leases.get(jobId)) === null, {
      timeoutMs: 5000,
      message: "B released the lease at the end",
    });
    // Only the runtimes' heartbeats are left (A's ran out; cleanup removes it).
    const left = await jetstreamManager(nc).then((jsm) =>
      jsm.streams.info("KV_jetstate_leases", { subjects_filter: "$KV.jetstate_leases.>" }),
    );
    expect(Object.keys(left.state.subjects ?? {}).filter((s) => !s.includes(".heartbeat."))).toEqual([]);

    console.log(`B read ${recordsRead} job records in all`);
    // O(live jobs), not O(records stored): a handful of reads of the live job's record.
    expect(recordsRead).toBeLessThan(100);
  }, 120_000);
});
