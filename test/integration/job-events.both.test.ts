/**
 * `rt.jobs.events()` read by a process that neither submitted nor supervises
 * the jobs, on NATS (the reader a child process: test/fixtures/job-events-reader.ts)
 * and on the memory broker (the reader a runtime of its own on the shared
 * server). One runtime submits 50 jobs, a worker runtime answers (some tasks
 * fail for good), a third runtime cancels one. The oracle is the test's own
 * ledger of job ids and the end each one must have; the reader's ends must
 * equal it exactly, also after ended records are written again unchanged.
 * On NATS the reader's consumers on the records bucket are counted raw.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { type JetStreamManager, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import type { JobHandle } from "../../src/api/job-handle.ts";
import type { Role } from "../../src/api/permissions.ts";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { RoleNotHeld } from "../../src/kernel/errors.ts";
import type { JobEvent, JobEventType } from "../../src/kernel/job-event.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { encodeRecord } from "../../src/kernel/job-record-codec.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { PermanentError } from "../../src/kernel/task-outcome.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const root = path.resolve(import.meta.dirname, "../..");
const READER = path.join(root, "test/fixtures/job-events-reader.ts");
const timeoutMs = 30_000;
const endTypes: ReadonlySet<JobEventType> = new Set(["succeeded", "failed", "cancelled"]);

interface Reader {
  /** What the reader printed, in the order it read them. */
  readonly events: JobEvent[];
  /** Ends its iterator (`return()`); resolves once it has ended. */
  end(): Promise<void>;
  /** Stops its runtime. */
  close(): Promise<void>;
}

interface Backend {
  /** A runtime; `lane`: its 1-task jobs go on their queue's lane. */
  runtime(roles?: Role[], lane?: boolean): Promise<Runtime>;
  /** A reader of job events, started and watching (on NATS, in another process). */
  reader(queue?: string): Promise<Reader>;
  /** Writes the job's record again, unchanged: a new revision with the same end. */
  rewrite(id: string): Promise<void>;
  /** Writes a record raw, as a new revision of its key. */
  put(record: JobRecord): Promise<void>;
  /** Names of the event readers' consumers on the records bucket's stream, read raw; memory has none. */
  readerConsumers(): Promise<string[] | undefined>;
  stop(): Promise<void>;
}

const jobsOptions = { leaseMs: 30_000, cleanupIntervalMs: 0 };

/** A committed job's record, as its supervisor writes it: running with one answer, or succeeded. */
const record = (id: string, queue: string, status: "running" | "succeeded", at: number): JobRecord => ({
  v: 1,
  id,
  queue,
  status,
  phase: "committed",
  total: 2,
  submitId: "s",
  settings: {
    maxFailures: 0,
    ackWaitMs: 30_000,
    maxDeliver: 5,
    backoffMs: [0],
    stallAfterMs: 60_000,
    stalledTimeoutMs: 0,
  },
  counts: { done: status === "running" ? 1 : 2, failed: 0, dead: 0 },
  createdAt: at,
  updatedAt: at,
  commitDeadline: at + 30_000,
  ...(status === "succeeded" ? { finishedAt: at } : {}),
});

const memoryBackend = async (): Promise<Backend> => {
  const server = createMemoryServer();
  const records = memoryServerState(server).records;
  const runtimes: Runtime[] = [];
  const runtime = async (roles?: Role[], lane = false) => {
    const rt = await createTestRuntime({
      broker: createMemoryBroker({ server }),
      jobs: { ...jobsOptions, lane },
      ...(roles ? { roles } : {}),
    });
    runtimes.push(rt);
    return rt;
  };
  return {
    runtime,
    async reader(queue) {
      const rt = await runtime(["submitter"]);
      const iterator = rt.jobs.events(queue ? { queue } : {});
      const events: JobEvent[] = [];
      const reading = (async () => {
        for await (const event of iterator) events.push(event);
      })();
      await iterator.ready;
      return {
        events,
        end: async () => {
          await iterator.return();
          await reading;
        },
        close: () => rt.stop(),
      };
    },
    async rewrite(id) {
      const entry = records.get("test.rewrite", id);
      if (entry?.value === undefined) throw new Error(`no record ${id}`);
      records.update("test.rewrite", id, entry.value, entry.revision);
    },
    async put(record) {
      const entry = records.get("test.put", record.id);
      if (entry?.value === undefined) records.create("test.put", record.id, encodeRecord(record));
      else records.update("test.put", record.id, encodeRecord(record), entry.revision);
    },
    readerConsumers: async () => undefined,
    async stop() {
      for (const rt of runtimes.reverse()) await rt.stop();
      server.close();
    },
  };
};

type Line = Record<string, unknown>;

const natsBackend = async (): Promise<Backend> => {
  const server: NatsServerHandle = await startNatsServer();
  const nc: NatsConnection = await connect({ servers: server.url });
  const jsm: JetStreamManager = await jetstreamManager(nc);
  const runtimes: Runtime[] = [];
  const children: ChildProcessWithoutNullStreams[] = [];
  const runtime = async (roles?: Role[], lane = false) => {
    const rt = await createRuntime({
      servers: server.url,
      logger: silentLogger(),
      jobs: { ...jobsOptions, lane },
      ...(roles ? { roles } : {}),
    });
    runtimes.push(rt);
    return rt;
  };
  // The bucket exists before the reader's runtime (a submitter that may create it anyway).
  await (await runtime()).jobs.list();
  return {
    runtime,
    async reader(queue) {
      // `node --import tsx`, not the tsx CLI, which would run the script in a second process.
      const child = spawn(
        process.execPath,
        ["--import", "tsx", READER, server.url, ...(queue ? [queue] : [])],
        {
          cwd: root,
          stdio: ["pipe", "pipe", "pipe"],
        },
      );
      children.push(child);
      const lines: Line[] = [];
      const events: JobEvent[] = [];
      let stderr = "";
      let exit: string | undefined;
      createInterface({ input: child.stdout }).on("line", (text) => {
        const line = JSON.parse(text) as Line;
        lines.push(line);
        if (line.event === "job") {
          const { event: _line, ...event } = line;
          events.push(event as unknown as JobEvent);
        }
      });
      child.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      const exited = new Promise<void>((resolve) =>
        child.on("exit", (code, signal) => {
          exit = `code ${code} signal ${signal}`;
          resolve();
        }),
      );
      const printed = (event: string) =>
        waitUntil(
          () => {
            if (lines.some((l) => l.event === event)) return true;
            if (exit !== undefined) throw new Error(`reader exited (${exit}): ${stderr}`);
            return false;
          },
          { timeoutMs, message: `reader prints ${event}` },
        );
      await printed("ready");
      return {
        events,
        end: async () => {
          child.stdin.write("stop\n");
          await printed("ended");
        },
        close: async () => {
          child.stdin.write("exit\n");
          await printed("stopped");
          await exited;
        },
      };
    },
    async rewrite(id) {
      const kv = await new Kvm(nc).open("jetstate_jobs");
      const entry = await kv.get(id);
      if (entry?.operation !== "PUT") throw new Error(`no record ${id}`);
      await kv.update(id, entry.value, entry.revision);
    },
    async put(record) {
      const kv = await new Kvm(nc).open("jetstate_jobs");
      await kv.put(record.id, encodeRecord(record));
    },
    async readerConsumers() {
      const names: string[] = [];
      // A consumer deleted while the server lists them comes as null (nats-server 2.9).
      for await (const info of jsm.consumers.list("KV_jetstate_jobs"))
        if (info?.name?.startsWith("events_")) names.push(info.name);
      return names;
    },
    async stop() {
      for (const child of children)
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      for (const rt of runtimes.reverse()) await rt.stop();
      await nc.close();
      await server.dispose();
    },
  };
};

/** What a task does: answer after `ms`, fail for good, or wait until its job is cancelled. */
type Work =
  | { readonly kind: "ok"; readonly ms: number }
  | { readonly kind: "fail" }
  | { readonly kind: "block" };

const backends = [
  { name: "memory", start: memoryBackend },
  { name: "nats", start: natsBackend },
];

describe.each(backends)("job events on $name", ({ name, start }) => {
  let b: Backend;
  beforeAll(async () => {
    b = await start();
  });
  afterAll(async () => {
    await b?.stop();
  });

  /** A worker runtime answering `queue` by each task's `Work`; `started` lists the blocking tasks begun. */
  const startWorker = async (queue: string) => {
    const rt = await b.runtime(["worker"]);
    const started: string[] = [];
    const worker = rt.workers.start<Work, string>({
      queue,
      concurrency: 32,
      handler: async (task, ctx) => {
        if (task.payload.kind === "fail") throw new PermanentError("bad task");
        if (task.payload.kind === "block") {
          started.push(task.id);
          await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
          throw new Error("cancelled");
        }
        await delay(task.payload.ms);
        return "ok";
      },
    });
    return { worker, started };
  };

  /** Events of each job, in the order read. */
  const byJob = (events: readonly JobEvent[]) => {
    const jobs = new Map<string, JobEvent[]>();
    for (const e of events) jobs.set(e.jobId, [...(jobs.get(e.jobId) ?? []), e]);
    return jobs;
  };
  const endsOf = (events: readonly JobEvent[]) =>
    events
      .filter((e) => endTypes.has(e.type))
      .map((e) => `${e.jobId} ${e.type}`)
      .sort();

  it("a reader elsewhere sees every job's end once, created before it, progress at most once a second", async () => {
    const queue = "events";
    const before = (await b.readerConsumers())?.length ?? 0;
    const reader = await b.reader();
    if (name === "nats") expect(await b.readerConsumers()).toHaveLength(before + 1);
    const submitter = await b.runtime();
    const canceller = await b.runtime(["submitter"]);
    const { worker, started } = await startWorker(queue);

    /** The oracle: each job's id and the end it must have, from what the test asked for. */
    const ledger = new Map<string, JobEventType>();
    const long = new Set<string>();
    const submitted: JobHandle<string>[] = [];
    for (let k = 0; k < 50; k++) {
      const kind: JobEventType = k === 7 ? "cancelled" : k % 5 === 1 && k >= 3 ? "failed" : "succeeded";
      // Three long jobs, their answers spread over 4 s: several progress writes each.
      const tasks: Work[] =
        k < 3
          ? Array.from({ length: 8 }, (_, i) => ({ kind: "ok", ms: 500 * (i + 1) }))
          : kind === "cancelled"
            ? [{ kind: "block" }, { kind: "ok", ms: 10 }]
            : kind === "failed"
              ? [{ kind: "ok", ms: 10 }, { kind: "fail" }, { kind: "ok", ms: 10 }]
              : [
                  { kind: "ok", ms: 10 },
                  { kind: "ok", ms: 20 },
                  { kind: "ok", ms: 30 },
                ];
      const job = await submitter.jobs.submit<Work, string>({ queue, tasks, maxFailures: 0 });
      ledger.set(job.id, kind);
      if (k < 3) long.add(job.id);
      submitted.push(job);
    }
    const cancelled = [...ledger].find(([, kind]) => kind === "cancelled")?.[0] ?? "";
    await waitUntil(() => started.some((id) => id.startsWith(`${cancelled}.`)), {
      timeoutMs,
      message: "the job to cancel has a task running",
    });
    // Each step bounded and named, with the jobs not ended then: this test hung twice in a full
    // run (60 s, not reproduced alone), and a bare timeout said nothing of where.
    const step = async <A>(what: string, promise: Promise<A>): Promise<A> => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const left = submitted
            .map((job) => job.snapshot())
            .filter((s) => s.status !== "succeeded" && s.status !== "failed")
            .map((s) => `${s.id} ${s.status} done=${s.done} failed=${s.failed} total=${s.total}`);
          reject(new Error(`${what}: not within 20 s; jobs not ended: ${left.join(", ") || "none"}`));
        }, 20_000);
      });
      return Promise.race([promise, late]).finally(() => clearTimeout(timer));
    };
    const handle = await step("get the job to cancel", canceller.jobs.get(cancelled));
    if (handle) await step("cancel", handle.cancel("by the test"));
    // The jobs ended as the test set them up to (the submitter's own view, not the oracle).
    const ends = await step("every job's done()", Promise.all(submitted.map((job) => job.done())));
    expect(ends.map((s) => (s.reason?.startsWith("cancelled: ") ? "cancelled" : s.status))).toEqual([
      ...ledger.values(),
    ]);

    // Ended records written again, unchanged (one of each end): no news for the reader.
    const again = [...ledger].filter(([, kind], n) => n < 6 || kind === "cancelled").map(([id]) => id);
    for (const id of again) await step(`rewrite ${id}`, b.rewrite(id));
    // The last job: the reader reads in order, so once it has this end it has read the rewrites.
    const last = await submitter.jobs.submit<Work, string>({ queue, tasks: [{ kind: "ok", ms: 10 }] });
    ledger.set(last.id, "succeeded");
    await step("the last job's done()", last.done());
    await waitUntil(() => reader.events.some((e) => e.jobId === last.id && e.type === "succeeded"), {
      timeoutMs,
      message: "the reader has the last job's end",
    });

    const kinds = new Map<string, number>();
    for (const e of reader.events) kinds.set(e.type, (kinds.get(e.type) ?? 0) + 1);
    console.info(`${name}: the reader read`, JSON.stringify(Object.fromEntries(kinds)));
    const expected = [...ledger].map(([id, kind]) => `${id} ${kind}`).sort();
    expect(endsOf(reader.events)).toEqual(expected);
    const jobs = byJob(reader.events);
    expect([...jobs.keys()].sort()).toEqual([...ledger.keys()].sort());
    for (const [id, events] of jobs) {
      const types = events.map((e) => e.type);
      expect(
        types.filter((t) => t === "created"),
        id,
      ).toHaveLength(1);
      expect(types[0], id).toBe("created");
      expect(endTypes.has(types.at(-1) as JobEventType), `${id}: ${types.join(" ")}`).toBe(true);
      expect(
        events.every((e) => e.queue === queue),
        id,
      ).toBe(true);
      // Progress comes from progress writes: at most one a second per job (the writer's clock).
      const progress = events.filter((e) => e.type === "progress").map((e) => e.at);
      for (let i = 1; i < progress.length; i++)
        expect(progress[i]! - progress[i - 1]!, `${id} progress ${i}`).toBeGreaterThanOrEqual(1000);
    }
    // The rate check above saw progress to check: the long jobs wrote progress more than once.
    const longProgress = [...long].map(
      (id) => jobs.get(id)?.filter((e) => e.type === "progress").length ?? 0,
    );
    expect(Math.max(...longProgress), longProgress.join(" ")).toBeGreaterThanOrEqual(2);
    const end = jobs.get(cancelled)?.at(-1);
    expect(end).toMatchObject({ type: "cancelled", status: "failed", reason: "cancelled: by the test" });
    const failedEnd = jobs.get([...ledger].find(([, kind]) => kind === "failed")?.[0] ?? "")?.at(-1);
    expect(failedEnd).toMatchObject({ status: "failed", counts: { done: 2, failed: 1, dead: 0 } });

    await reader.end();
    if (name === "nats") expect(await b.readerConsumers()).toHaveLength(before);
    await reader.close();
    await worker.stop();
  });

  it("lane jobs: created once and their end once, the commit carried by the end or written a second on", async () => {
    const queue = "ev-lane";
    const reader = await b.reader(queue);
    const submitter = await b.runtime(undefined, true);
    const { worker } = await startWorker(queue);
    // Quick ones (the end carries the commit) and one held past a second (its commit written alone).
    const quick = [];
    for (let k = 0; k < 5; k++)
      quick.push(await submitter.jobs.submit<Work, string>({ queue, tasks: [{ kind: "ok", ms: 1 }] }));
    const slow = await submitter.jobs.submit<Work, string>({ queue, tasks: [{ kind: "ok", ms: 1500 }] });
    const ids = [...quick, slow].map((job) => job.id);
    await Promise.all([...quick, slow].map((job) => job.done()));
    await waitUntil(
      () => ids.every((id) => reader.events.some((e) => e.jobId === id && endTypes.has(e.type))),
      {
        timeoutMs,
        message: "the reader has every lane job's end",
      },
    );
    await delay(200); // a repeat would come now
    for (const id of ids) {
      const types = reader.events.filter((e) => e.jobId === id).map((e) => e.type);
      expect(
        types.filter((t) => t === "created"),
        id,
      ).toHaveLength(1);
      expect(
        types.filter((t) => endTypes.has(t)),
        id,
      ).toEqual(["succeeded"]);
      expect(types[0], id).toBe("created");
    }
    await reader.end();
    await reader.close();
    await worker.stop();
  });

  it("a queue filter: only that queue's jobs, all of them", async () => {
    const reader = await b.reader("ev-a");
    const submitter = await b.runtime();
    const workers = [await startWorker("ev-a"), await startWorker("ev-b")];
    const ledger = new Map<string, JobEventType>();
    const jobs = [];
    for (let k = 0; k < 6; k++) {
      const queue = k % 2 === 0 ? "ev-a" : "ev-b";
      const job = await submitter.jobs.submit<Work, string>({ queue, tasks: [{ kind: "ok", ms: 5 }] });
      if (queue === "ev-a") ledger.set(job.id, "succeeded");
      jobs.push(job);
    }
    await Promise.all(jobs.map((job) => job.done()));
    const lastA = jobs.at(-2)?.id;
    await waitUntil(() => reader.events.some((e) => e.jobId === lastA && e.type === "succeeded"), {
      timeoutMs,
      message: "the reader has the last job of ev-a",
    });
    // A job of ev-b ends after the last of ev-a: what it wrote was read, and let through or not.
    const lastB = await submitter.jobs.submit<Work, string>({
      queue: "ev-b",
      tasks: [{ kind: "ok", ms: 1 }],
    });
    await lastB.done();
    const marker = await submitter.jobs.submit<Work, string>({
      queue: "ev-a",
      tasks: [{ kind: "ok", ms: 1 }],
    });
    ledger.set(marker.id, "succeeded");
    await marker.done();
    await waitUntil(() => reader.events.some((e) => e.jobId === marker.id && endTypes.has(e.type)), {
      timeoutMs,
      message: "the reader has the marker job's end",
    });
    expect(reader.events.every((e) => e.queue === "ev-a")).toBe(true);
    expect(endsOf(reader.events)).toEqual([...ledger].map(([id, kind]) => `${id} ${kind}`).sort());
    await reader.end();
    await reader.close();
    for (const w of workers) await w.worker.stop();
  });

  it("a reader that does not read holds a bounded number of events, then gets each job at its latest", async () => {
    const rt = await b.runtime(["submitter"]);
    const before = (await b.readerConsumers())?.length ?? 0;
    const events = rt.jobs.events({ queue: "held" });
    await events.ready;
    const now = Date.now();
    // More progress than a reader holds unread (1000 events): the watch pauses.
    const jobs = 1200;
    for (let n = 0; n < jobs; n++) await b.put(record(`held-${n}`, "held", "running", now + n));
    // Paused on NATS: its consumer is gone until the reader has room again.
    if (name === "nats")
      await waitUntil(async () => (await b.readerConsumers())?.length === before, {
        timeoutMs,
        message: "the paused reader's consumer deleted",
      });
    for (let n = 0; n < jobs; n++) await b.put(record(`held-${n}`, "held", "succeeded", now + n));
    const read: JobEvent[] = [];
    const deadline = Date.now() + timeoutMs;
    while (read.filter((e) => e.type === "succeeded").length < jobs) {
      const late = delay(deadline - Date.now()).then(() => "late" as const);
      const next = await Promise.race([events.next(), late]);
      if (next === "late") throw new Error(`${read.length} events read by the deadline`);
      if (next.done) throw new Error("reader ended");
      read.push(next.value);
    }
    // Every job's end once; its progress only if the watch read it before the end overwrote it.
    expect(
      read
        .filter((e) => e.type === "succeeded")
        .map((e) => e.jobId)
        .sort(),
    ).toEqual(Array.from({ length: jobs }, (_, n) => `held-${n}`).sort());
    expect(read.every((e) => e.type === "succeeded" || e.type === "progress")).toBe(true);
    if (name === "nats") expect(await b.readerConsumers()).toHaveLength(before + 1);
    await events.return();
    if (name === "nats") expect(await b.readerConsumers()).toHaveLength(before);
  });

  it("ends on its signal and on rt.stop(), leaving nothing on the server; needs the submitter role", async () => {
    const rt = await b.runtime(["submitter"]);
    const before = (await b.readerConsumers())?.length;
    const aborted = new AbortController();
    const first = rt.jobs.events({ signal: aborted.signal });
    await first.ready;
    if (name === "nats") expect(await b.readerConsumers()).toHaveLength((before ?? 0) + 1);
    // Reading a job's events starts no job actor in the reader's runtime.
    const submitter = await b.runtime();
    const quiet = await startWorker("quiet");
    const job = await submitter.jobs.submit<Work, string>({ queue: "quiet", tasks: [{ kind: "ok", ms: 1 }] });
    const seen: string[] = [];
    while (!seen.includes("succeeded")) {
      const next = await first.next();
      if (next.done) throw new Error("reader ended");
      if (next.value.jobId === job.id) seen.push(next.value.type);
    }
    expect(seen).toEqual(["created", "succeeded"]);
    expect(partsOf(rt).jobs.watchedSnapshot(job.id)).toBeUndefined();
    await quiet.worker.stop();
    const pending = first.next();
    aborted.abort();
    expect(await pending).toEqual({ done: true, value: undefined });
    if (name === "nats")
      await waitUntil(async () => (await b.readerConsumers())?.length === before, {
        timeoutMs,
        message: "the aborted reader's consumer deleted",
      });

    const second = rt.jobs.events();
    await second.ready;
    if (name === "nats") expect(await b.readerConsumers()).toHaveLength((before ?? 0) + 1);
    await rt.stop();
    // stop() waited for the reader, which deleted its consumer before the connection closed.
    if (name === "nats") expect(await b.readerConsumers()).toHaveLength(before ?? 0);
    expect(await second.next()).toEqual({ done: true, value: undefined });
    // A reader asked for once the runtime stopped ends at once.
    const late = rt.jobs.events();
    await late.ready;
    expect(await late.next()).toEqual({ done: true, value: undefined });

    const worker = await b.runtime(["worker"]);
    expect(() => worker.jobs.events()).toThrow(RoleNotHeld);
    expect(() => rt.jobs.events({ queue: "a.b" })).toThrow(/queue/);
    expect(() => rt.jobs.events({ quue: "a" } as never)).toThrow(/quue: unknown option/);
  });
});

describe("job events on nats: a restart and a store reset", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 50 });
  });
  afterAll(async () => {
    await nc?.close();
    await server?.dispose();
  });

  /** Writes raw, again until the server answers (the test's client reconnects too). */
  const put = (r: JobRecord) =>
    waitUntil(
      async () => {
        const kv = await new Kvm(nc).create("jetstate_jobs", { history: 1, storage: StorageType.File });
        await kv.put(r.id, encodeRecord(r));
        return true;
      },
      { timeoutMs, message: `record ${r.id} written` },
    );

  it("goes on after the last record it read across a server restart", async () => {
    const rt = await createRuntime({
      servers: server.url,
      logger: silentLogger(),
      roles: ["submitter"],
      jobs: jobsOptions,
    });
    const events = rt.jobs.events();
    const read: JobEvent[] = [];
    const reading = (async () => {
      for await (const e of events) read.push(e);
    })();
    await events.ready;
    const ids = Array.from({ length: 10 }, (_, n) => `r-${n}`);
    const now = Date.now();
    for (const id of ids) await put(record(id, "reset", "running", now));
    await waitUntil(() => read.length === ids.length, { timeoutMs, message: "progress of every job read" });

    // The same store after a restart: half the jobs end while the reader reconnects, and are read.
    await server.restart();
    for (const id of ids.slice(0, 5)) await put(record(id, "reset", "succeeded", now + 1));
    await waitUntil(() => read.filter((e) => e.type === "succeeded").length === 5, {
      timeoutMs,
      message: "the ends written across the restart read",
    });

    expect(read.map((e) => `${e.jobId} ${e.type}`).sort()).toEqual(
      [...ids.map((id) => `${id} progress`), ...ids.slice(0, 5).map((id) => `${id} succeeded`)].sort(),
    );
    await events.return();
    await reading;
    await rt.stop();
  });

  it("a watch held across a store reset reads the new bucket from its start", async () => {
    const rt = await createRuntime({ servers: server.url, logger: silentLogger(), roles: ["submitter"] });
    const seen: string[] = [];
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started = () => {};
    const watching = new Promise<void>((resolve) => {
      started = resolve;
    });
    const stop = new AbortController();
    const watched = partsOf(rt).broker.watchRecordChanges(
      (r) => {
        seen.push(r.id);
        return seen.length === 1 ? held : undefined;
      },
      stop.signal,
      () => started(),
    );
    await watching;
    const now = Date.now();
    await put(record("before-reset", "reset", "running", now));
    await waitUntil(() => seen.length === 1, { timeoutMs, message: "the first record read" });
    // While the reader holds the watch (no consumer), the store is lost and a new bucket written.
    await server.restartEmpty();
    for (const id of ["new-1", "new-2", "new-3"]) await put(record(id, "reset", "running", now));
    release();
    await waitUntil(() => seen.length === 4, {
      timeoutMs,
      message: `the new bucket read (${seen.join(" ")})`,
    });
    expect(seen).toEqual(["before-reset", "new-1", "new-2", "new-3"]);
    stop.abort();
    await watched;
    await rt.stop();
  });
});
