/**
 * Supervision takeover across processes (issue #5). Two runtimes in two
 * child processes (test/fixtures/job-supervisor.ts): A submits a job and
 * supervises it, B watches for orphans. Workers run here, on a runtime made
 * with `jobs.takeOver: false`, so the only runtime that may take over is B.
 * A is killed with SIGKILL mid-job; B must take the job over once A's lease
 * has run out (never before: the lease history in KV is checked), and finish
 * it with every task counted exactly once.
 */
import { StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import type { Worker } from "../../src/api/workers.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsRawResults, tally } from "../harness/raw-results.ts";
import {
  type Child,
  killAll,
  killAndWait,
  startChild as startSupervisor,
} from "../harness/supervisor-child.ts";
import { waitUntil } from "../harness/wait.ts";

const leaseMs = 1000;
const total = 400;
const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

const children: Child[] = [];
const startChild = (args: string[]) => startSupervisor(args, children);

interface LeaseWrite {
  readonly op: string;
  readonly holder?: string;
  readonly until?: number;
  /** Server time of the write. */
  readonly at: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe("takeover of a job whose supervising process was killed", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  let worker: Worker;
  let nc: NatsConnection;
  const handled = new Map<string, number[]>();
  const leaseWrites = new Map<string, LeaseWrite[]>();
  const takeoverMs: number[] = [];
  const endMs: number[] = [];

  beforeAll(async () => {
    server = await startNatsServer();
    // Every lease write, from the first: the bucket is made here as the runtimes make it.
    nc = await connect({ servers: server.url, name: "takeover-test" });
    const kv = await new Kvm(nc).create("jetstate_leases", { history: 1, storage: StorageType.File });
    const watch = await kv.watch();
    void (async () => {
      for await (const e of watch) {
        const lease = e.operation === "PUT" ? e.json<{ holder: string; until: number }>() : undefined;
        const writes = leaseWrites.get(e.key) ?? [];
        writes.push({ op: e.operation, ...lease, at: e.created.getTime() });
        leaseWrites.set(e.key, writes);
      }
    })();
    rt = await createRuntime({
      servers: server.url,
      name: "workers",
      logger,
      jobs: { takeOver: false, leaseMs },
    });
    // Steady: 2 in flight × 20 ms ≈ 100 tasks/s, so the 400-task job lasts ~4 s.
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
  });

  afterAll(async () => {
    await killAll(children);
    await worker?.stop();
    await rt?.stop();
    await nc?.close();
    await server?.dispose();
    if (takeoverMs.length > 0) {
      console.log(
        `takeover after SIGKILL: ${takeoverMs.join(", ")} ms (median ${median(takeoverMs)}); ` +
          `job end after SIGKILL: ${endMs.join(", ")} ms (median ${median(endMs)})`,
      );
    }
  });

  it.each([1, 2, 3])(
    "run %i: B takes over after A's lease ran out and finishes the job, every task counted once",
    async (run) => {
      const b = startChild([server.url, `child-B${run}`, "watch", String(leaseMs)]);
      await b.waitFor((l) => l.event === "ready", "ready");
      const earlier = new Set(handled.keys());
      const a = startChild([server.url, `child-A${run}`, "submit", String(total), String(leaseMs)]);
      const jobId = String((await a.waitFor((l) => l.event === "submitted", "submitted")).jobId);
      expect(earlier.has(jobId)).toBe(false);

      // Watched from the workers' runtime too: a runtime with takeOver off must never take it.
      const watched = (await rt.jobs.get<number>(jobId))!;
      // Counted where the work is done (not by a watcher, which may read results late).
      const handledNow = () => new Set(handled.get(jobId)).size;
      await waitUntil(() => handledNow() >= total / 4, {
        timeoutMs: 30_000,
        message: "a quarter of the job done",
      });
      const killedAt = Date.now();
      a.process.kill("SIGKILL");
      await a.exited;
      const doneAtKill = handledNow();
      const watcherAtKill = watched.snapshot().done;
      expect(doneAtKill).toBeLessThan(total);

      const took = await b.waitFor(
        (l) => l.jobId === jobId && String(l.msg).startsWith("taking over a job"),
        "taking over the job",
      );
      const tookAt = Number(took.time);
      const final = await watched.done();
      expect(final).toMatchObject({ status: "succeeded", total, done: total, failed: 0, dead: 0 });
      const record = (await rt.jobs.list()).jobs.find((r) => r.id === jobId);
      expect(record).toMatchObject({ status: "succeeded", counts: { done: total, failed: 0, dead: 0 } });

      // Every index counted once, against witnesses that do not de-duplicate (results() does, by
      // index): the results stream as the server stores it, read by this test's own consumer...
      const all = Array.from({ length: total }, (_, n) => n);
      const stored = new Set((await natsRawResults(nc, final.queue, jobId)).map((e) => e.i));
      expect([...stored].sort((a, b) => a - b)).toEqual(all);
      expect(final.done + final.failed + final.dead).toBe(stored.size);
      // ...and the workers' ledger: the kill is of the supervisor, not of a worker, so no task is
      // handed out again: each ran exactly once.
      const runs = tally(handled.get(jobId) ?? []);
      expect([...runs.keys()].sort((a, b) => a - b)).toEqual(all);
      expect([...runs].filter(([, n]) => n !== 1)).toEqual([]);
      // Each answer is its worker's (results() is fine for values: one per index).
      for await (const r of watched.results()) expect(r.ok && r.result).toBe(r.index * 3);

      // The lease went from A to B once, and only after A's last `until`: never two holders.
      // At the end B released it: purged from the bucket, nothing of it left (no watch event: a
      // purge of the stream sends none), so the bucket holds only the jobs not over.
      const leases = await new Kvm(nc).open("jetstate_leases");
      await waitUntil(async () => (await leases.get(jobId)) === null, {
        timeoutMs: 5000,
        message: "B released the lease at the end",
      });
      const puts = leaseWrites.get(jobId)!.filter((w) => w.op === "PUT");
      const holders = puts.map((w) => w.holder!.split(".")[0]);
      const firstB = holders.indexOf(`child-B${run}`);
      expect(firstB).toBeGreaterThan(0);
      expect(holders.slice(0, firstB).every((h) => h === `child-A${run}`)).toBe(true);
      expect(holders.slice(firstB).every((h) => h === `child-B${run}`)).toBe(true);
      const lastA = puts[firstB - 1]!;
      expect(puts[firstB]!.at).toBeGreaterThanOrEqual(lastA.until!);
      expect(tookAt).toBeGreaterThanOrEqual(lastA.until!);
      // A renewed until it died, so its lease ran out within leaseMs of the kill.
      expect(lastA.until! - killedAt).toBeLessThanOrEqual(leaseMs);

      takeoverMs.push(tookAt - killedAt);
      endMs.push(record!.finishedAt! - killedAt);
      console.log(
        `run ${run}: killed A at ${doneAtKill}/${total} handled (${watcherAtKill} counted by a watcher); ` +
          `B took over after ${tookAt - killedAt} ms ` +
          `(A's lease ran out ${lastA.until! - killedAt} ms after the kill); job ended after ` +
          `${record!.finishedAt! - killedAt} ms`,
      );
      await killAndWait(b, "SIGTERM");
    },
    90_000,
  );
});
