import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { createRuntime } from "../../src/api/runtime.ts";
import { PermanentError, type Runtime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createTestRuntime } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";

/**
 * End to end, counted three ways that do not depend on each other: the
 * handlers' own ledger (every call and how it ended), the job's counts, and
 * the results as the broker stores them, read raw (a raw nats.js consumer on
 * NATS, the broker port's reader on memory) — not `results()`, which
 * de-duplicates by index. A result stored twice for one task (a worker that
 * died between its result and its ack) must be in the raw stream twice and
 * counted once.
 */

interface RawEntry {
  readonly i: number;
  readonly ok?: boolean;
  readonly dead?: boolean;
}

interface Backend {
  readonly rt: Runtime;
  /** Every results entry stored for the job, in order, duplicates included. */
  rawResults(queue: string, jobId: string): Promise<RawEntry[]>;
  /** The job record as stored. */
  rawRecord(jobId: string): Promise<{ status: string; counts: Record<string, number> } | undefined>;
  /** Stores a results message the way a worker does, past the runtime. */
  storeResult(queue: string, jobId: string, entries: RawEntry[], msgId: string): Promise<void>;
  stop(): Promise<void>;
}

const TOTAL = 30;
/** Fails permanently. */
const broken = (i: number) => i % 7 === 3;
/** Fails once, then works. */
const flaky = (i: number) => i % 5 === 1;
/** Always fails transiently: dies on its last delivery. */
const doomed = (i: number) => i === 12;

type Outcome = "ok" | "failed" | "retry" | "dead";

const run = async (b: Backend, queue: string) => {
  const ledger: Array<{ index: number; attempt: number; outcome: Outcome }> = [];
  const job = await b.rt.jobs.submit({
    queue,
    tasks: Array.from({ length: TOTAL }, (_, i) => i),
    maxDeliver: 2,
    backoff: [0],
    maxFailures: 0.5,
  });
  // A result for task 0 stored before any worker ran it: the worker's own answer makes two.
  await b.storeResult(queue, job.id, [{ i: 0, ok: true }], `${job.id}.early`);
  const workers = [0, 1].map(() =>
    b.rt.workers.start<number, number>({
      queue,
      concurrency: 4,
      handler: (task) => {
        const i = task.index;
        const last = task.attempt >= 2;
        const fail = (outcome: Outcome, error: Error) => {
          ledger.push({ index: i, attempt: task.attempt, outcome });
          throw error;
        };
        if (broken(i)) fail("failed", new PermanentError("broken"));
        if (doomed(i)) fail(last ? "dead" : "retry", new Error("upstream down"));
        if (flaky(i) && task.attempt === 1) fail("retry", new Error("busy"));
        ledger.push({ index: i, attempt: task.attempt, outcome: "ok" });
        return i;
      },
    }),
  );
  const final = await job.done();
  await Promise.all(workers.map((w) => w.stop()));
  return { job, final, ledger };
};

const check = async (b: Backend, queue: string) => {
  const { job, final, ledger } = await run(b, queue);
  // The ledger: every task ended once (retries aside), as the handler decided.
  const ends = ledger.filter((l) => l.outcome !== "retry");
  expect(new Set(ends.map((l) => l.index)).size).toBe(ends.length);
  expect(ends.map((l) => l.index).sort((x, y) => x - y)).toEqual(Array.from({ length: TOTAL }, (_, i) => i));
  const tally = (o: Outcome) => ends.filter((l) => l.outcome === o).length;
  expect(
    ledger
      .filter((l) => l.outcome === "retry")
      .map((l) => l.index)
      .sort((x, y) => x - y),
  ).toEqual(Array.from({ length: TOTAL }, (_, i) => i).filter((i) => doomed(i) || (flaky(i) && !broken(i))));

  // The job's counts are the ledger's.
  expect(final).toMatchObject({
    done: tally("ok"),
    failed: tally("failed"),
    dead: tally("dead"),
    total: TOTAL,
  });
  expect(final.status).toBe(
    tally("failed") + tally("dead") <= Math.floor(0.5 * TOTAL) ? "succeeded" : "failed",
  );

  // The raw stream holds every answer the handlers gave, plus the early one: task 0 twice.
  const raw = await b.rawResults(queue, job.id);
  expect(raw).toHaveLength(TOTAL + 1);
  expect(raw.filter((e) => e.i === 0)).toHaveLength(2);
  const lastOf = new Map(raw.map((e) => [e.i, e] as const));
  for (const l of ends) {
    const stored = lastOf.get(l.index)!;
    const as: Outcome = stored.ok ? "ok" : stored.dead ? "dead" : "failed";
    expect(as, `task ${l.index}`).toBe(l.outcome);
  }
  // And the record holds the same end.
  expect(await b.rawRecord(job.id)).toMatchObject({
    status: final.status,
    counts: { done: tally("ok"), failed: tally("failed"), dead: tally("dead") },
  });
};

describe("ledger vs job vs raw results: memory broker", () => {
  let b: Backend;
  beforeAll(async () => {
    const broker: Broker = createMemoryBroker();
    const rt = await createTestRuntime({ broker });
    b = {
      rt,
      rawResults: async (queue, jobId) => {
        const entries: RawEntry[] = [];
        const ac = new AbortController();
        await broker.readResults(
          queue,
          jobId,
          (body, pending) => {
            entries.push(...(JSON.parse(body) as RawEntry[]));
            if (pending === 0) ac.abort();
          },
          ac.signal,
          () => ac.abort(),
        );
        return entries;
      },
      rawRecord: async (jobId) => (await broker.getRecord(jobId))?.record as never,
      storeResult: (queue, jobId, entries, msgId) =>
        broker.publishResults(queue, jobId, JSON.stringify(entries), msgId),
      stop: () => rt.stop(),
    };
  });
  afterAll(async () => {
    await b?.stop();
  });

  it("every answer in the ledger, the counts and the raw stream; the duplicate stored, counted once", async () => {
    await check(b, "ledger");
  });
});

describe("ledger vs job vs raw results: NATS", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  let b: Backend;
  beforeAll(async () => {
    server = await startNatsServer();
    const rt = await createRuntime({ servers: server.url, logger: silentLogger() });
    nc = await connect({ servers: server.url });
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    b = {
      rt,
      rawResults: async (queue, jobId) => {
        const subject = `jetstate.results.${queue}.${jobId}`;
        const info = await jsm.streams.info("jetstate_results", { subjects_filter: subject });
        const stored = info.state.subjects?.[subject] ?? 0;
        // An ephemeral consumer of our own (nats-server 2.9 has no ordered consumer with a filter list).
        const { name } = await jsm.consumers.add("jetstate_results", {
          filter_subject: subject,
          ack_policy: AckPolicy.None,
          inactive_threshold: 60_000_000_000,
        });
        const consumer = await js.consumers.get("jetstate_results", name);
        const entries: RawEntry[] = [];
        for (let n = 0; n < stored; n++) {
          const msg = await consumer.next({ expires: 5_000 });
          if (!msg) throw new Error(`results message ${n + 1} of ${stored} not delivered`);
          entries.push(...msg.json<RawEntry[]>());
        }
        return entries;
      },
      rawRecord: async (jobId) => {
        const kv = await new Kvm(nc).open("jetstate_jobs");
        const entry = await kv.get(jobId);
        return entry?.operation === "PUT" ? entry.json() : undefined;
      },
      storeResult: async (queue, jobId, entries, msgId) => {
        await js.publish(`jetstate.results.${queue}.${jobId}`, JSON.stringify(entries), { msgID: msgId });
      },
      stop: async () => {
        await rt.stop();
        await nc.close();
        await server.dispose();
      },
    };
  });
  afterAll(async () => {
    await b?.stop();
  });

  it("every answer in the ledger, the counts and the raw stream; the duplicate stored, counted once", async () => {
    await check(b, "ledger");
  });
});
