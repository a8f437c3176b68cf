/**
 * A stalled job seen by a runtime that did not stall it: a watcher opened
 * after the stall, and a supervisor that takes it over. Both start from the
 * record, which says `stalled` since its stall was written. The oracles: the
 * record as the server holds it (read raw, with its history of statuses
 * from a raw watch of the bucket) and the stall's time as written there.
 */
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { type RawRecord, rawJobRecords } from "../harness/raw-job-records.ts";
import { waitUntil } from "../harness/wait.ts";

let server: NatsServerHandle;
let nc: NatsConnection;
const runtimes: Runtime[] = [];
const runtime = async (name: string) => {
  const rt = await createRuntime({
    servers: server.url,
    name,
    logger: silentLogger(),
    jobs: { leaseMs: 600 },
  });
  runtimes.push(rt);
  return rt;
};
beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
});
afterAll(async () => {
  for (const rt of runtimes.reverse()) await rt.stop().catch(() => undefined);
  await nc?.close();
  await server?.dispose();
});

const stored = async (id: string): Promise<RawRecord> => {
  const found = (await rawJobRecords(nc, "jetstate_jobs")).find((r) => r.id === id);
  if (!found) throw new Error(`no record ${id}`);
  return found;
};

/** Every status the record was written with, in order, with its `updatedAt`, from a raw watch of its key. */
const statusHistory = async (id: string) => {
  const kv = await new Kvm(nc).open("jetstate_jobs");
  const statuses: string[] = [];
  const stamps: number[] = [];
  const watch = await kv.watch({ key: id });
  (async () => {
    for await (const entry of watch)
      if (entry.value.length > 0) {
        statuses.push(entry.json<RawRecord>().status);
        stamps.push(entry.json<RawRecord>().updatedAt);
      }
  })();
  return { statuses, stamps, stop: () => watch.stop() };
};

it("a job opened from another runtime after it stalled is stalled there too", async () => {
  const submitter = await runtime("stall-submitter");
  const watcher = await runtime("stall-watcher");
  // No worker: nothing answers, so the job stalls and stays stalled (no stalled timeout).
  const job = await submitter.jobs.submit({ queue: "stallwatch", tasks: [1, 2, 3], stallAfterMs: 300 });
  await waitUntil(async () => (await stored(job.id)).status === "stalled", {
    timeoutMs: 10_000,
    message: "the record says stalled",
  });
  const opened = await watcher.jobs.get(job.id);
  expect(opened?.snapshot().status).toBe("stalled");
  await job.cancel("done looking");
});

it("a stalled job taken over fails its stalled timeout after its stall, and its record never says it ran again", async () => {
  const first = await runtime("stall-first");
  const job = await first.jobs.submit({
    queue: "stalltakeover",
    tasks: [1, 2, 3],
    stallAfterMs: 300,
    stalledTimeoutMs: 3000,
  });
  const history = await statusHistory(job.id);
  await waitUntil(async () => (await stored(job.id)).status === "stalled", {
    timeoutMs: 10_000,
    message: "the record says stalled",
  });
  const stalledAt = (await stored(job.id)).updatedAt;
  // Its supervisor goes (its lease given back): another runtime takes the job over.
  await first.stop();
  await runtime("stall-second");
  await waitUntil(async () => (await stored(job.id)).status === "failed", {
    timeoutMs: 15_000,
    message: "the job fails",
  });
  const end = await stored(job.id);
  history.stop();
  expect(end.reason).toMatch(/^stalled: no progress for/);
  // Its stalled timeout ran from its stall: it ends 3 s after it at the soonest, and the
  // takeover (a second or so on a busy machine) adds no new stall and no new timeout.
  expect(end.finishedAt! - stalledAt).toBeGreaterThanOrEqual(3000);
  expect(end.finishedAt! - stalledAt).toBeLessThan(6000);
  // The takeover writes the record as it read it, naming its new supervisor: the stall as
  // written, its time unchanged, never `running`.
  const sinceStall = history.statuses.slice(history.statuses.indexOf("stalled"));
  expect(sinceStall.at(-1)).toBe("failed");
  expect(sinceStall.slice(0, -1).every((status) => status === "stalled")).toBe(true);
  const stallStamps = history.stamps.slice(history.statuses.indexOf("stalled"), -1);
  expect(new Set(stallStamps)).toEqual(new Set([stalledAt]));
}, 30_000);
