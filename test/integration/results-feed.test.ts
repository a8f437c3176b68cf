/**
 * How a runtime reads its jobs' results on NATS: one feed per queue (a
 * consumer of `<prefix>.results.<queue>.>`) dispatching to the jobs it
 * watches, and a throw-away consumer only for a job that has results stored
 * before it is watched. The oracles are the server's own consumer list (read
 * with a manager of the test's own) and the handlers' ledger of what they
 * answered, never jetstate's view of itself.
 */
import { type ConsumerInfo, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { brokerNames } from "../../src/adapters/names.ts";
import { createNatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { createRuntime, partsOf, type Runtime } from "../../src/api/runtime.ts";
import { createRuntimeCore, type RuntimeCore } from "../../src/api/runtime-core.ts";
import { jobActorOf } from "../../src/api/runtime-job-handle.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { natsRawResults, storedCount, tally } from "../harness/raw-results.ts";
import { tcpProxy } from "../harness/tcp-proxy.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** A gate handlers wait behind until `open()`. */
const gate = () => {
  let open: () => void = () => undefined;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open: () => open() };
};

/** Every consumer the server has on `stream`, as the server lists them (none for a missing stream). */
const consumersOf = async (nc: NatsConnection, stream: string): Promise<ConsumerInfo[]> => {
  const jsm = await jetstreamManager(nc);
  const all: ConsumerInfo[] = [];
  try {
    for await (const c of jsm.consumers.list(stream)) all.push(c);
  } catch (error) {
    if ((error as { code?: number }).code === 10059) return [];
    throw error;
  }
  return all;
};

/** The filter subjects of the server's consumers on the results stream. */
const resultsFilters = async (nc: NatsConnection): Promise<string[]> =>
  (await consumersOf(nc, names.resultsStream)).map((c) => c.config.filter_subject ?? "").sort();

describe("results feed: server consumers per job", () => {
  let server: NatsServerHandle;
  let raw: NatsConnection;
  const runtimes: Runtime[] = [];
  const gates: Array<() => void> = [];
  beforeAll(async () => {
    server = await startNatsServer();
    raw = await connect({ servers: server.url, name: "raw" });
  });
  afterAll(async () => {
    for (const open of gates) open();
    for (const rt of runtimes.reverse()) await rt.stop();
    await raw?.close();
    await server?.dispose();
  });
  const runtime = async (jobs: Record<string, unknown> = {}) => {
    const rt = await createRuntime({ servers: server.url, logger, jobs: { cleanupIntervalMs: 0, ...jobs } });
    runtimes.push(rt);
    return rt;
  };

  it("N live jobs hold N tasks consumers and no results consumer of their own; none is left once they end", async () => {
    const rt = await runtime();
    const queue = "held";
    const n = 6;
    const wait = gate();
    gates.push(wait.open);
    // The handlers' ledger: job id → indexes answered.
    const answered = new Map<string, number[]>();
    let held = 0;
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 2 * n,
      handler: async (task) => {
        held++;
        await wait.opened;
        answered.set(task.jobId, [...(answered.get(task.jobId) ?? []), task.index]);
        return task.payload;
      },
    });
    const jobs = await Promise.all(range(n).map(() => rt.jobs.submit({ queue, tasks: [1, 2], lane: false })));
    await waitUntil(() => held === 2 * n, { timeoutMs: 20_000, message: "every task held by the worker" });

    // The server's view while every job runs: one consumer per job on its tasks stream, and on
    // the results stream only the queue's feed (no consumer filtered on one job's subject).
    const tasksConsumers = (await consumersOf(raw, names.tasksStream(queue))).map((c) => c.name).sort();
    expect(tasksConsumers).toEqual(jobs.map((j) => j.id).sort());
    const filters = await resultsFilters(raw);
    expect(filters.filter((f) => jobs.some((j) => f === names.resultsSubject(queue, j.id)))).toEqual([]);
    expect(filters).toEqual([`jetstate.results.${queue}.>`]);

    wait.open();
    const finals = await Promise.all(jobs.map((j) => j.done()));
    await worker.stop();
    for (const [k, job] of jobs.entries()) {
      expect(finals[k]).toMatchObject({ status: "succeeded", done: 2, failed: 0, dead: 0 });
      expect([...(answered.get(job.id) ?? [])].sort()).toEqual([0, 1]);
    }
    // Once they ended: no consumer of any job, on either stream.
    await waitUntil(
      async () =>
        (await consumersOf(raw, names.tasksStream(queue))).length === 0 &&
        (await resultsFilters(raw)).every((f) => f === `jetstate.results.${queue}.>`),
      { timeoutMs: 10_000, message: "no job consumer left" },
    );
  }, 60_000);

  it("results() of a finished job reads a few stored messages by gets, and makes a consumer only for more", async () => {
    const rt = await runtime();
    const queue = "afterwards";
    // One at a time, each once the answers before it are stored (as the server counts the queue's
    // results messages): every result goes in a results message of its own.
    const jsm = await jetstreamManager(raw);
    const storedOfQueue = async () => {
      const { state } = await jsm.streams.info(names.resultsStream, {
        subjects_filter: names.resultsSubject(queue, ">"),
      });
      return Object.values(state.subjects ?? {}).reduce((sum, n) => sum + n, 0);
    };
    let answered = 0;
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 1,
      handler: async (task) => {
        await waitUntil(async () => (await storedOfQueue()) >= answered, {
          timeoutMs: 10_000,
          message: `the ${answered} answers before task ${task.index} of ${task.jobId} stored`,
        });
        answered++;
        return task.payload * 2;
      },
    });
    const small = await Promise.all(range(5).map((n) => rt.jobs.submit({ queue, tasks: [n] })));
    for (const job of small) await job.done();
    // More results messages than a catch-up reads one by one.
    const big = await rt.jobs.submit({ queue, tasks: range(12) });
    await big.done();
    await worker.stop();
    // As the server holds them: one message per answer.
    expect(await storedCount(jsm, names.resultsStream, names.resultsSubject(queue, big.id))).toBe(12);
    // The server's own word on every consumer made on the results stream from here on.
    const created: string[] = [];
    const advisories = raw.subscribe(`$JS.EVENT.ADVISORY.CONSUMER.CREATED.${names.resultsStream}.>`, {
      callback: (_e, m) => {
        created.push(m.subject);
      },
    });
    await raw.flush();
    const reader = await runtime();
    const read = async (id: string) => {
      const handle = await reader.jobs.get(id);
      const results: unknown[] = [];
      for await (const r of handle!.results()) results.push(r.ok ? r.result : r.error);
      return results;
    };
    for (const [n, job] of small.entries()) expect(await read(job.id)).toEqual([n * 2]);
    await raw.flush();
    const afterSmall = created.length;
    expect((await read(big.id)).sort((a, b) => Number(a) - Number(b))).toEqual(range(12).map((n) => n * 2));
    await raw.flush();
    advisories.unsubscribe();
    // The reading runtime's feed of the queue, and nothing per small job: their results came by gets.
    expect(afterSmall).toBe(1);
    // The big job's first messages by gets, the rest through one throw-away consumer.
    expect(created.length - afterSmall).toBe(1);
    // Their feeds would stay on the results stream, where the next tests count consumers.
    for (const done of [reader, rt]) {
      await done.stop();
      runtimes.splice(runtimes.indexOf(done), 1);
    }
  }, 30_000);

  it("the queue's feed is one of the runtime's loops: rt.stop() waits for it, and its consumer goes", async () => {
    const rt = await createRuntime({ servers: server.url, logger, jobs: { cleanupIntervalMs: 0 } });
    const queue = "stopping";
    const worker = rt.workers.start<number, number>({
      queue,
      concurrency: 2,
      handler: (task) => task.payload,
    });
    await (await rt.jobs.submit({ queue, tasks: [1, 2, 3] })).done();
    await worker.stop();
    expect(partsOf(rt).core.loops.running()).toContain(`results-feed:${queue}`);
    expect(await resultsFilters(raw)).toContain(`jetstate.results.${queue}.>`);
    await rt.stop();
    expect(partsOf(rt).core.loops.running()).toEqual([]);
    await waitUntil(async () => !(await resultsFilters(raw)).includes(`jetstate.results.${queue}.>`), {
      timeoutMs: 5_000,
      message: "the stopped runtime's feed consumer deleted",
    });
  }, 30_000);

  it("a job watched mid-way from another runtime counts every answer once, and its catch-up consumer goes", async () => {
    const a = await runtime();
    const b = await runtime({ takeOver: false });
    const queue = "watched";
    const total = 400;
    const handled: number[] = [];
    // Slow enough that answers keep landing while the other runtime catches up.
    const worker = a.workers.start<number, number>({
      queue,
      concurrency: 4,
      handler: async (task) => {
        await delay(2);
        handled.push(task.index);
        return task.payload * 3;
      },
    });
    const job = await a.jobs.submit<number, number>({ queue, tasks: range(total) });
    await waitUntil(() => job.snapshot().done >= 60, { timeoutMs: 20_000, message: "some answers stored" });
    const watched = await b.jobs.get<number>(job.id);
    if (!watched) throw new Error("job not found from the other runtime");
    const results: Array<{ index: number; ok: boolean }> = [];
    const reading = (async () => {
      for await (const r of watched.results()) results.push(r);
    })();
    await watched.done();
    await reading;
    await worker.stop();
    // The watcher's own counting (its actor's counted answers, not the record it also reads).
    const counted = jobActorOf(watched).getSnapshot().context;
    expect({ done: counted.done, failed: counted.failed, dead: counted.dead }).toEqual({
      done: total,
      failed: 0,
      dead: 0,
    });
    // Against the handlers' ledger and what the server stores.
    expect(new Set(handled).size).toBe(total);
    expect(results.map((r) => r.index).sort((x, y) => x - y)).toEqual(range(total));
    expect(results.every((r) => r.ok)).toBe(true);
    const stored = await natsRawResults(raw, queue, job.id);
    expect([...tally(stored.map((e) => e.i)).keys()].sort((x, y) => x - y)).toEqual(range(total));
    // Only the two runtimes' feeds of the queue stay on the results stream.
    await waitUntil(
      async () =>
        (await resultsFilters(raw)).filter((f) => f !== `jetstate.results.held.>`).join() ===
        [`jetstate.results.${queue}.>`, `jetstate.results.${queue}.>`].join(),
      { timeoutMs: 10_000, message: "catch-up consumers deleted" },
    );
  }, 60_000);

  it("a redrive read by a watcher that caught up first: the dead answer is forgotten, the new one counted", async () => {
    const a = await runtime();
    const b = await runtime({ takeOver: false });
    const queue = "redriven";
    let down = true;
    const wait = gate();
    gates.push(wait.open);
    const ledger: Array<[number, "ok" | "failed"]> = [];
    const worker = a.workers.start<number, number>({
      queue,
      concurrency: 4,
      handler: async (task) => {
        if (task.index === 4) await wait.opened;
        if (task.index === 2 && down) {
          ledger.push([2, "failed"]);
          throw new Error("down");
        }
        ledger.push([task.index, "ok"]);
        return task.payload;
      },
    });
    const job = await a.jobs.submit<number, number>({ queue, tasks: range(5), maxDeliver: 2, backoff: [10] });
    await waitUntil(() => job.snapshot().done === 3 && job.snapshot().dead === 1, {
      timeoutMs: 20_000,
      message: "three done, task 2 dead, task 4 held",
    });
    // B watches the running job: its reader catches up on the stored answers, dead one included.
    const watched = await b.jobs.get<number>(job.id);
    if (!watched) throw new Error("job not found from the other runtime");
    const actor = jobActorOf(watched);
    await waitUntil(() => actor.getSnapshot().context.done === 3 && actor.getSnapshot().context.dead === 1, {
      timeoutMs: 10_000,
      message: "the watcher counted the stored answers",
    });
    // The redrive's marker and the new answer reach B through its queue's feed.
    down = false;
    await a.jobs.redrive(job.id, [2]);
    await waitUntil(() => actor.getSnapshot().context.done === 4 && actor.getSnapshot().context.dead === 0, {
      timeoutMs: 10_000,
      message: "the watcher counted the redriven answer",
    });
    wait.open();
    const final = await watched.done();
    await worker.stop();
    expect(final).toMatchObject({ status: "succeeded", done: 5, failed: 0, dead: 0 });
    const c = actor.getSnapshot().context;
    expect({ done: c.done, failed: c.failed, dead: c.dead }).toEqual({ done: 5, failed: 0, dead: 0 });
    const results = [];
    for await (const r of watched.results()) results.push(r);
    expect(results.map((r) => [r.index, r.ok]).sort()).toEqual(range(5).map((i) => [i, true]));
    expect(ledger.filter(([i, outcome]) => i === 2 && outcome === "ok")).toHaveLength(1);
  }, 60_000);
});

describe("results feed: no gap, no duplicate", () => {
  let server: NatsServerHandle;
  let raw: NatsConnection;
  let core: RuntimeCore & { stop(): Promise<void> };
  let broker: Broker;
  const prefix = "gap";
  const gapNames = brokerNames(prefix);
  beforeAll(async () => {
    server = await startNatsServer();
    raw = await connect({ servers: server.url, name: "raw" });
    core = await createRuntimeCore({ servers: server.url, logger, prefix });
    broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "gap", resultsFeedIdleMs: 500 });
    await broker.provision([]);
  });
  afterAll(async () => {
    await broker?.close();
    await core?.stop();
    await raw?.close();
    await server?.dispose();
  });

  /** A reader of the job through the broker: the entry indexes it is handed, in order. */
  const read = (queue: string, jobId: string, signal: AbortSignal) => {
    const seen: number[] = [];
    const ended = broker.readResults(
      queue,
      jobId,
      (body) => {
        for (const e of JSON.parse(body) as Array<{ i: number }>) seen.push(e.i);
      },
      signal,
    );
    return { seen, ended };
  };

  it("results stored before, during and after a reader's start on a new queue are each handed once, in order", async () => {
    const stop = new AbortController();
    const readers: Array<{ seen: number[]; ended: Promise<void> }> = [];
    const per = 300;
    // Each job on a queue of its own: each reader is its queue's first, so it registers before
    // the queue's feed has started, while its results are being published.
    const publishing = range(8).map(async (k) => {
      const queue = `g${k}`;
      const jobId = `j${k}`;
      const subject = gapNames.resultsSubject(queue, jobId);
      for (let i = 0; i < per; i++) {
        if (i === 40) readers[k] = read(queue, jobId, stop.signal);
        raw.publish(subject, JSON.stringify([{ i, ok: true }]));
        if (i % 5 === 0) await delay(0);
      }
    });
    await Promise.all(publishing);
    await raw.flush();
    await waitUntil(() => readers.every((r) => r.seen.length >= per), {
      timeoutMs: 15_000,
      message: "every reader handed every result",
    });
    // The barrier: one more result each, stored after every other; a duplicate handed late comes
    // before a reader is handed it (the feed hands in stream order).
    for (const k of range(8))
      raw.publish(gapNames.resultsSubject(`g${k}`, `j${k}`), JSON.stringify([{ i: per, ok: true }]));
    await raw.flush();
    await waitUntil(() => readers.every((r) => r.seen.includes(per)), {
      timeoutMs: 15_000,
      message: "every reader handed the last result",
    });
    for (const r of readers) expect(r.seen).toEqual(range(per + 1));
    stop.abort();
    await Promise.all(readers.map((r) => r.ended));
  }, 60_000);

  it("a reader of a job whose results are stored catches up with a consumer it then deletes; the queue's feed goes when idle and comes back", async () => {
    const queue = "idle";
    const jobId = "stored";
    for (let i = 0; i < 5; i++)
      await broker.publishResults(queue, jobId, JSON.stringify([{ i, ok: true }]), `m${i}`);
    const stop = new AbortController();
    const reader = read(queue, jobId, stop.signal);
    await waitUntil(() => reader.seen.length === 5, { timeoutMs: 10_000, message: "the stored five" });
    await broker.publishResults(queue, jobId, JSON.stringify([{ i: 5, ok: true }]), "m5");
    await waitUntil(() => reader.seen.length === 6, { timeoutMs: 10_000, message: "the live one" });
    expect(reader.seen).toEqual(range(6));
    const feedOnly = [gapNames.resultsSubject(queue, ">")];
    await waitUntil(
      async () =>
        (await consumersOf(raw, gapNames.resultsStream))
          .map((c) => c.config.filter_subject)
          .filter((f) => f?.startsWith(`${prefix}.results.${queue}.`))
          .join() === feedOnly.join(),
      { timeoutMs: 10_000, message: "only the queue's feed left on the results stream" },
    );
    stop.abort();
    await reader.ended;

    // No job of the queue read any more: after the idle time its feed goes.
    const queueFilters = async () =>
      (await consumersOf(raw, gapNames.resultsStream))
        .map((c) => c.config.filter_subject)
        .filter((f) => f?.startsWith(`${prefix}.results.${queue}.`));
    await waitUntil(async () => (await queueFilters()).length === 0, {
      timeoutMs: 10_000,
      message: "the idle queue's feed gone from the server",
    });
    // A new reader of the queue starts it again: the stored six, then a live one.
    const again = new AbortController();
    const second = read(queue, jobId, again.signal);
    await waitUntil(() => second.seen.length === 6, { timeoutMs: 10_000, message: "the stored six again" });
    await waitUntil(async () => (await queueFilters()).join() === feedOnly.join(), {
      timeoutMs: 10_000,
      message: "the feed made again",
    });
    await broker.publishResults(queue, jobId, JSON.stringify([{ i: 6, ok: true }]), "m6");
    await waitUntil(() => second.seen.length === 7, { timeoutMs: 10_000, message: "a live one again" });
    expect(second.seen).toEqual(range(7));
    again.abort();
    await second.ended;
  }, 60_000);

  it("a fresh read whose caller aborts as it catches up (inside onCaughtUp) ends", async () => {
    const queue = "caught-up-abort";
    // Another job's reader first: the queue's feed has then fixed where it reads, so the read
    // below takes the fresh path and is caught up before `readResults` returns.
    const primer = new AbortController();
    let primed = false;
    const priming = broker.readResults(
      queue,
      "other",
      () => undefined,
      primer.signal,
      () => {
        primed = true;
      },
    );
    await waitUntil(() => primed, { timeoutMs: 10_000, message: "the primer caught up" });
    const reader = new AbortController();
    const reading = broker.readResults(
      queue,
      "fresh",
      () => undefined,
      reader.signal,
      () => reader.abort(),
      true,
    );
    let outcome = "still reading";
    reading.then(
      () => {
        outcome = "ended";
      },
      (error: unknown) => {
        outcome = `failed: ${String(error)}`;
      },
    );
    // Nothing else aborts it: it ends on its own, or never.
    await waitUntil(() => outcome !== "still reading", {
      timeoutMs: 10_000,
      message: "the read aborted in onCaughtUp ended",
    });
    primer.abort();
    await priming;
    expect(outcome).toBe("ended");
  });
});

describe("results feed: a server back with an empty store", () => {
  let server: NatsServerHandle;
  /** In front of the server for `core`'s client only: cut, it keeps the feed off the server. */
  let proxy: Awaited<ReturnType<typeof tcpProxy>>;
  let raw: NatsConnection | undefined;
  let core: RuntimeCore & { stop(): Promise<void> };
  let broker: Broker;
  beforeAll(async () => {
    server = await startNatsServer();
    proxy = await tcpProxy(server.url);
    core = await createRuntimeCore({
      servers: proxy.url,
      logger,
      connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 1000 },
    });
    broker = createNatsBroker(core, { retentionMs: 3600_000, holder: "reset" });
  });
  afterAll(async () => {
    proxy?.restore();
    await broker?.close();
    await core?.stop();
    await raw?.close();
    await proxy?.close();
    await server?.dispose();
  });

  it("a live reader gets what the new stream stored before the feed read it again, though the feed was far into the old one", async () => {
    const queue = "reset";
    const stop = new AbortController();
    const seen: number[] = [];
    let caughtUp = false;
    const reading = broker.readResults(
      queue,
      "watched",
      (body) => {
        for (const e of JSON.parse(body) as Array<{ i: number }>) seen.push(e.i);
      },
      stop.signal,
      () => {
        caughtUp = true;
      },
    );
    await waitUntil(() => caughtUp, { timeoutMs: 10_000, message: "the reader live (nothing stored)" });
    // The feed reads far into the stream: 300 messages of a job nobody watches, each stored (its
    // ack read) before the last one's sequence is taken.
    raw = await connect({ servers: server.url, name: "raw" });
    const js = jetstream(raw);
    const acks = await Promise.all(
      range(300).map((i) => js.publish(names.resultsSubject(queue, "elsewhere"), `[{"i":${i},"ok":true}]`)),
    );
    const last = Math.max(...acks.map((a) => a.seq));
    await waitUntil(
      async () =>
        (await consumersOf(raw as NatsConnection, names.resultsStream)).some(
          (c) => c.config.filter_subject === `jetstate.results.${queue}.>` && c.delivered.stream_seq >= last,
        ),
      { timeoutMs: 10_000, message: "the feed read the 300 (the server's view of its consumer)" },
    );
    await raw.close();
    raw = undefined;

    // The feed's client kept off the server (its proxy cut) until the new stream holds five, from
    // sequence 1: the feed makes its consumer again only after they are stored, whenever it
    // notices its old one gone. Made again where the feed was, the server starts it after the new
    // stream's last message: these five would never be read. Stored by another client (a broker
    // of its own, which makes the stream as jetstate does): the feed's would set up the new
    // stream itself, and the feed could make its consumer before the five came.
    proxy.cut();
    await server.restartEmpty();
    const otherCore = await createRuntimeCore({ servers: server.url, logger });
    const other = createNatsBroker(otherCore, { retentionMs: 3600_000, holder: "other" });
    try {
      for (let i = 0; i < 5; i++)
        await other.publishResults(queue, "watched", `[{"i":${i},"ok":true}]`, `w${i}`);
    } finally {
      await other.close();
      await otherCore.stop();
    }
    raw = await connect({ servers: server.url, name: "raw" });
    expect(await resultsFilters(raw), "the feed had not read the new stream yet").toEqual([]);
    proxy.restore();
    await waitUntil(() => seen.length >= 5, {
      timeoutMs: 20_000,
      message: "the five stored after the reset",
    });
    // The barrier: a sixth, stored after the five; a duplicate handed late comes before it.
    await broker.publishResults(queue, "watched", `[{"i":5,"ok":true}]`, "w5");
    await waitUntil(() => seen.includes(5), { timeoutMs: 20_000, message: "the sixth handed" });
    expect(seen).toEqual(range(6));
    stop.abort();
    await reading;
  }, 90_000);

  it("a catch-up whose client closes midway goes on from the message after the last it handed, on the next client", async () => {
    const queue = "cut";
    const total = 300;
    // Large, so the consumer's first batch comes over several reads of the socket: the client's
    // close is seen between two of them, and the iterator ends without an error. With small ones
    // its next pull came first half the time and threw, an error the reader always retried.
    const pad = "x".repeat(32 * 1024);
    raw ??= await connect({ servers: server.url, name: "raw" });
    const js = jetstream(raw);
    // Stored before the reader: more than its direct reads and its consumer's first pull (the
    // first through the broker, which makes the stream when it is missing).
    await broker.publishResults(queue, "cut", `[{"i":0,"ok":true,"r":"${pad}"}]`, "cut0");
    for (let from = 1; from < total; from += 200)
      await Promise.all(
        range(Math.min(200, total - from)).map((k) =>
          js.publish(names.resultsSubject(queue, "cut"), `[{"i":${from + k},"ok":true,"r":"${pad}"}]`),
        ),
      );
    const seen: number[] = [];
    let caughtUp = false;
    let cut = false;
    const stop = new AbortController();
    const reading = broker.readResults(
      queue,
      "cut",
      (body, pending) => {
        for (const e of JSON.parse(body) as Array<{ i: number }>) seen.push(e.i);
        // Caught up: the last stored message says nothing more is due (or `onCaughtUp` does).
        if (pending === 0) caughtUp = true;
        // Past the direct reads, inside the consumer's messages: the client closes, as nats.js
        // closes it once its reconnects are given up.
        if (seen.length === 20 && !cut) {
          cut = true;
          void core.connection.current()?.close();
        }
      },
      stop.signal,
      () => {
        caughtUp = true;
      },
    );
    await waitUntil(() => caughtUp, { timeoutMs: 20_000, message: "the reader caught up" });
    expect(cut).toBe(true);
    // The oracle: the sequence published, each handed once, in order, none skipped.
    expect(seen).toEqual(range(total));
    stop.abort();
    await reading;
  }, 60_000);
});
