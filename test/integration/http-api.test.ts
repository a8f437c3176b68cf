/**
 * The HTTP pull API on a real HTTP server (127.0.0.1, random port), on both
 * brokers (a real nats-server, and the memory broker of `jetstate/testing`):
 * mixed native and HTTP workers, duplicate and expired receipts, heartbeats,
 * retries, a table of bad requests, and junk that must never get a 5xx.
 */

import { request as httpRequest } from "node:http";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runRemoteWorker } from "../../examples/remote-worker.ts";
import { ReceiptSigner } from "../../src/adapters/http/receipts.ts";
import { createHttpApi, createRuntime, type JobHandle, type Runtime } from "../../src/index.ts";
import {
  createMemoryBroker,
  createMemoryServer,
  createTestRuntime,
  type MemoryServer,
} from "../../src/testing.ts";
import { type ServedApp, serveOnLoopback } from "../harness/http-server.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { memoryRawResults, natsRawResults, type RawResult, tally } from "../harness/raw-results.ts";
import { waitUntil } from "../harness/wait.ts";

const ALICE = "token-alice-0123456789";
const BOB = "token-bob-0123456789ab";
/** Lists and shows jobs: the worker tokens may not. */
const READER = "token-reader-0123456789";

interface Reserved {
  id: string;
  job_id: string;
  index: number;
  attempt: number;
  payload: { n: number };
  receipt: string;
  lease_ms: number;
}

interface Answer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field
  json: any;
  type: string | null;
}

let server: NatsServerHandle | undefined;
/** Reads the results stream past the runtime (NATS). */
let reader: NatsConnection | undefined;
/** The memory broker's server, read directly (memory). */
let memory: MemoryServer | undefined;
let rt: Runtime;
let http: ServedApp | undefined;
let baseUrl: string;
const logs: Record<string, unknown>[] = [];
/** Every status any request of this file got: none may be 5xx. */
const statuses: { status: number; what: string }[] = [];

const call = async (
  method: string,
  path: string,
  body?: unknown,
  options: { token?: string | null; raw?: RequestInit["body"]; headers?: Record<string, string> } = {},
): Promise<Answer> => {
  const token = options.token === undefined ? (method === "GET" ? READER : ALICE) : options.token;
  const headers: Record<string, string> = {
    ...(token === null ? {} : { authorization: `Bearer ${token}` }),
    ...(body === undefined && options.raw === undefined ? {} : { "content-type": "application/json" }),
    ...options.headers,
  };
  const payload = options.raw ?? (body === undefined ? undefined : JSON.stringify(body));
  const oversized =
    payload instanceof ReadableStream || (typeof payload === "string" && payload.length > 64 * 1024);
  const response = oversized
    ? await sendWhileAnswered(`${baseUrl}${path}`, method, headers, payload)
    : await fetch(`${baseUrl}${path}`, {
        method,
        headers,
        ...(payload === undefined ? {} : { body: payload }),
      } as RequestInit);
  const text = await response.text();
  statuses.push({ status: response.status, what: `${method} ${path.slice(0, 80)}` });
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch {
    // left as text: the assertions say it should have been JSON
  }
  return { status: response.status, json, type: response.headers.get("content-type") };
};

/**
 * A body the server refuses before reading it all (413): it answers, then
 * closes the connection while the client still writes. fetch (undici) then
 * fails with EPIPE even when the answer had arrived (seen on a loaded CI
 * run); node:http hands over the answer and the write error is ignored.
 */
const sendWhileAnswered = (
  url: string,
  method: string,
  headers: Record<string, string>,
  payload: string | ReadableStream<Uint8Array>,
): Promise<Response> =>
  new Promise((resolve, reject) => {
    let answered = false;
    const request = httpRequest(url, { method, headers }, (incoming) => {
      answered = true;
      const chunks: Buffer[] = [];
      incoming.on("data", (chunk: Buffer) => chunks.push(chunk));
      incoming.on("end", () =>
        resolve(
          new Response(Buffer.concat(chunks), {
            status: incoming.statusCode ?? 0,
            headers: { "content-type": String(incoming.headers["content-type"] ?? "") },
          }),
        ),
      );
    });
    request.on("error", (error) => {
      if (!answered) reject(error);
    });
    if (typeof payload === "string") {
      request.end(payload);
      return;
    }
    void (async () => {
      const reader = payload.getReader();
      while (!answered && !request.destroyed) {
        const { done, value } = await reader.read();
        if (done) break;
        if (!request.write(value)) await new Promise((r) => request.once("drain", r).once("close", r));
      }
      await reader.cancel();
      request.end();
    })().catch(() => undefined);
  });

const reserve = async (jobId: string, batchSize: number): Promise<Reserved[]> => {
  const answer = await call("POST", `/jobs/${jobId}/tasks`, { batch_size: batchSize });
  expect(answer.status, JSON.stringify(answer.json)).toBe(200);
  return answer.json.tasks;
};

const reserveAll = async (jobId: string, count: number, batchSize = 25): Promise<Reserved[]> => {
  const tasks: Reserved[] = [];
  while (tasks.length < count)
    tasks.push(...(await reserve(jobId, Math.min(batchSize, count - tasks.length))));
  return tasks;
};

/** The answer to each task, by index: `results()` de-duplicates by index, so it shows values, not counts. */
const resultsOf = async <R>(job: JobHandle<R>) => {
  const seen = new Map<number, { ok: boolean; value: unknown; dead?: boolean }>();
  for await (const r of job.results()) {
    seen.set(r.index, r.ok ? { ok: true, value: r.result } : { ok: false, value: r.error, dead: r.dead });
  }
  return seen;
};

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Every results entry stored for the job, duplicates included, read past the runtime. */
const rawResults = async (queue: string, jobId: string): Promise<RawResult[]> =>
  reader ? natsRawResults(reader, queue, jobId) : memoryRawResults(memory!, queue, jobId);

/**
 * Each task counted once, against witnesses that do not de-duplicate: the
 * results stream as stored, and `ran`, the ledger of whoever ran the tasks
 * (a native handler, or this test or the remote worker as the HTTP worker).
 * `redelivered`: the test hands a task out again, so it may run more than
 * once; it is still counted once.
 */
const expectCountedOnce = async (
  final: { id: string; queue: string; total: number; done: number; failed: number; dead: number },
  ran: readonly number[],
  options: { redelivered?: boolean } = {},
) => {
  const stored = (await rawResults(final.queue, final.id)).filter((e) => !e.redrive).map((e) => e.i);
  const distinct = new Set(stored);
  expect(
    [...distinct].sort((a, b) => a - b),
    "indexes in the stored results",
  ).toEqual(range(final.total));
  expect(final.done + final.failed + final.dead, "the job's counts").toBe(distinct.size);
  const runs = tally(ran);
  expect(
    [...runs.keys()].sort((a, b) => a - b),
    "indexes the workers ran",
  ).toEqual(range(final.total));
  if (!options.redelivered)
    expect(
      [...runs].filter(([, n]) => n !== 1),
      "tasks run more than once",
    ).toEqual([]);
  return tally(stored);
};

describe.each(["nats", "memory"])("the HTTP API on the %s broker", (broker) => {
  beforeAll(async () => {
    logs.length = 0;
    const logger = pino({ level: "info" }, { write: (line: string) => void logs.push(JSON.parse(line)) });
    if (broker === "nats") {
      server = await startNatsServer();
      // Per-job reserves of 1-task jobs: a consumer per job (a lane job's own reserve is a 409).
      rt = await createRuntime({ servers: server.url, logger, jobs: { lane: false } });
      reader = await connect({ servers: server.url, name: "raw-results" });
    } else {
      memory = createMemoryServer({ prefix: "jetstate" });
      rt = await createTestRuntime({
        logger,
        jobs: { lane: false },
        broker: createMemoryBroker({ server: memory }),
      });
    }
    const api = createHttpApi(rt, {
      tokens: {
        [ALICE]: "alice",
        [BOB]: { identity: "bob", role: "worker", queues: ["remote"] },
        [READER]: { identity: "dashboard", role: "read", queues: "*" },
      },
    });
    http = await serveOnLoopback(api.fetch);
    baseUrl = http.baseUrl;
  });

  afterAll(async () => {
    await http?.close();
    await rt?.stop();
    await reader?.close();
    reader = undefined;
    memory?.close();
    memory = undefined;
    await server?.dispose();
    server = undefined;
    expect(statuses.filter((s) => s.status >= 500)).toEqual([]);
  });

  describe("HTTP workers keep the lease contract", () => {
    it("one job, half processed by native workers and half by HTTP workers: every task counted exactly once", async () => {
      const job = await rt.jobs.submit<{ n: number }, unknown>({
        queue: "mixed",
        tasks: range(200).map((n) => ({ n })),
        maxFailures: 0.05,
      });
      // HTTP workers lease half of the tasks first; native workers then take what is left.
      const leased = await reserveAll(job.id, 100);
      expect(new Set(leased.map((t) => t.index)).size).toBe(100);
      expect(leased.every((t) => t.job_id === job.id && t.attempt === 1 && t.payload.n === t.index)).toBe(
        true,
      );
      const ran: number[] = [];
      const native = rt.workers.start<{ n: number }, unknown>({
        queue: "mixed",
        concurrency: 8,
        handler: (task) => {
          ran.push(task.index);
          return { by: "native", n: task.payload.n * 2 };
        },
      });
      const broken = new Set(leased.slice(0, 3).map((t) => t.index));
      for (const part of [leased.slice(0, 50), leased.slice(50)]) {
        ran.push(...part.map((t) => t.index));
        const answer = await call("POST", `/jobs/${job.id}/results`, {
          results: part.map((t) =>
            broken.has(t.index)
              ? { receipt: t.receipt, error: { message: `no such image ${t.index}`, permanent: true } }
              : { receipt: t.receipt, result: { by: "http", n: t.payload.n * 2 } },
          ),
        });
        expect(answer.status).toBe(200);
        expect(answer.json.results.map((r: { status: string }) => r.status)).toEqual(
          part.map((t) => (broken.has(t.index) ? "failed" : "done")),
        );
      }
      const final = await job.done();
      expect(final).toMatchObject({ status: "succeeded", total: 200, done: 197, failed: 3, dead: 0 });
      await expectCountedOnce(final, ran);
      const seen = await resultsOf(job);
      expect(seen.size).toBe(200);
      const byHttp = new Set(leased.map((t) => t.index));
      for (const [index, r] of seen) {
        if (broken.has(index)) expect(r).toEqual({ ok: false, value: `no such image ${index}`, dead: false });
        else
          expect(r).toEqual({ ok: true, value: { by: byHttp.has(index) ? "http" : "native", n: index * 2 } });
      }
      expect(native.stats().processed).toBe(100);
      await native.stop();
      // The worker identity is logged with every reservation and every result.
      const reserved = logs.filter((l) => l.msg === "tasks reserved" && l.jobId === job.id);
      const received = logs.filter((l) => l.msg === "results received" && l.jobId === job.id);
      expect(reserved).toHaveLength(4);
      expect(received).toHaveLength(2);
      expect([...reserved, ...received].every((l) => l.workerId === "alice")).toBe(true);
    });

    it("a receipt posted twice (in a row or at once) is counted once", async () => {
      // Four tasks, three answered twice: the job is still running when the duplicates arrive.
      const job = await rt.jobs.submit<{ n: number }, number>({
        queue: "twice",
        tasks: range(4).map((n) => ({ n })),
      });
      const tasks = await reserveAll(job.id, 3);
      const ran = tasks.map((t) => t.index);
      const body = { results: tasks.map((t) => ({ receipt: t.receipt, result: t.index })) };
      const [a, b] = await Promise.all([
        call("POST", `/jobs/${job.id}/results`, body),
        call("POST", `/jobs/${job.id}/results`, body),
      ]);
      expect([a.status, b.status]).toEqual([200, 200]);
      for (const n of range(3)) {
        const pair = [a.json.results[n], b.json.results[n]];
        expect(pair.map((r) => r.status)).toEqual(["done", "done"]);
        expect(pair.filter((r) => r.duplicate === true)).toHaveLength(1);
      }
      const again = await call("POST", `/jobs/${job.id}/results`, body);
      expect(again.json.results).toEqual(tasks.map((t) => ({ id: t.id, status: "done", duplicate: true })));
      const [last] = await reserve(job.id, 1);
      expect(last?.index).toBe(3);
      ran.push(last!.index);
      await call("POST", `/jobs/${job.id}/results`, { results: [{ receipt: last!.receipt, result: 3 }] });
      const final = await job.done();
      expect(final).toMatchObject({ status: "succeeded", done: 4, failed: 0, total: 4 });
      await expectCountedOnce(final, ran);
      expect([...(await resultsOf(job)).values()].map((r) => r.value).sort()).toEqual([0, 1, 2, 3]);
      // Once the job is over, a retried POST (its response lost) still hears what became of its answers.
      const late = await call("POST", `/jobs/${job.id}/results`, body);
      expect(late.status).toBe(200);
      expect(late.json.results).toEqual(tasks.map((t) => ({ id: t.id, status: "done", duplicate: true })));
    });

    it("a receipt whose lease expired is refused; the task is processed once, by its new holder", async () => {
      const job = await rt.jobs.submit<{ n: number }, string>({
        queue: "expiry",
        tasks: [{ n: 0 }],
        ackWaitMs: 1000,
      });
      const [first] = await reserve(job.id, 1);
      expect(first?.attempt).toBe(1);
      let second: Reserved | undefined;
      await waitUntil(
        async () => {
          [second] = await reserve(job.id, 1);
          return second !== undefined;
        },
        { timeoutMs: 15_000, intervalMs: 50, message: "the unanswered task is offered to a new holder" },
      );
      expect(second).toMatchObject({ index: 0, attempt: 2 });
      const late = await call("POST", `/jobs/${job.id}/results`, {
        results: [{ receipt: first!.receipt, result: "A" }],
      });
      expect(late.status).toBe(410);
      expect(late.json.error).toMatchObject({
        code: "lease_expired",
        results: [{ id: `${job.id}.0`, status: "expired" }],
      });
      const lateBeat = await call("POST", `/jobs/${job.id}/heartbeat`, { receipts: [first!.receipt] });
      expect(lateBeat.status).toBe(410);
      const fresh = await call("POST", `/jobs/${job.id}/results`, {
        results: [{ receipt: second!.receipt, result: "B" }],
      });
      expect(fresh.json.results).toEqual([{ id: `${job.id}.0`, status: "done" }]);
      const final = await job.done();
      expect(final).toMatchObject({ status: "succeeded", done: 1, total: 1 });
      // Handed out twice (the lease ran out), stored and counted once: the refused answer left nothing.
      const stored = await expectCountedOnce(final, [first!.index, second!.index], { redelivered: true });
      expect(stored.get(0)).toBe(1);
      expect([...(await resultsOf(job)).values()]).toEqual([{ ok: true, value: "B" }]);
    });

    it("heartbeats keep a lease past ackWait, with refreshed receipts; nobody else gets the task meanwhile", async () => {
      const job = await rt.jobs.submit<{ n: number }, string>({
        queue: "beat",
        tasks: [{ n: 0 }],
        ackWaitMs: 1000,
      });
      const [task] = await reserve(job.id, 1);
      let receipt = task!.receipt;
      const started = Date.now();
      const stolen: Reserved[] = [];
      await waitUntil(
        async () => {
          const beat = await call("POST", `/jobs/${job.id}/heartbeat`, { receipts: [receipt] });
          expect(beat.status).toBe(200);
          expect(beat.json.receipts[0]).toMatchObject({ status: "extended" });
          receipt = beat.json.receipts[0].receipt;
          stolen.push(...(await reserve(job.id, 1)));
          return Date.now() - started > 3000;
        },
        { timeoutMs: 20_000, intervalMs: 200, message: "three ackWaits of heartbeats" },
      );
      expect(stolen).toEqual([]);
      const done = await call("POST", `/jobs/${job.id}/results`, { results: [{ receipt, result: "kept" }] });
      expect(done.json.results).toEqual([{ id: `${job.id}.0`, status: "done" }]);
      expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
    });

    it("a transient error is retried with the job's backoff; the last delivery's error is dead", async () => {
      const job = await rt.jobs.submit<{ n: number }, string>({
        queue: "retry",
        tasks: [{ n: 0 }],
        maxDeliver: 2,
        backoff: [50],
        maxFailures: 1,
      });
      const [first] = await reserve(job.id, 1);
      const retry = await call("POST", `/jobs/${job.id}/results`, {
        results: [{ receipt: first!.receipt, error: { message: "GPU busy" } }],
      });
      expect(retry.json.results).toEqual([{ id: `${job.id}.0`, status: "retry", retry_in_ms: 50 }]);
      let second: Reserved | undefined;
      await waitUntil(
        async () => {
          [second] = await reserve(job.id, 1);
          return second !== undefined;
        },
        { timeoutMs: 10_000, intervalMs: 20, message: "the task comes back after its backoff" },
      );
      expect(second?.attempt).toBe(2);
      const dead = await call("POST", `/jobs/${job.id}/results`, {
        results: [{ receipt: second!.receipt, error: { message: "GPU busy" } }],
      });
      expect(dead.json.results).toEqual([{ id: `${job.id}.0`, status: "dead" }]);
      const final = await job.done();
      expect(final).toMatchObject({ status: "succeeded", done: 0, dead: 1 });
      await expectCountedOnce(final, [first!.index, second!.index], { redelivered: true });
      expect([...(await resultsOf(job)).values()]).toEqual([
        { ok: false, value: "GPU busy (after 2 deliveries)", dead: true },
      ]);
      // Kept as a dead letter with its payload, like one that died at a native worker.
      expect(await rt.jobs.deadLetters(job.id)).toMatchObject([
        {
          index: 0,
          payload: { n: 0 },
          deliveries: 2,
          source: "worker",
          error: "GPU busy (after 2 deliveries)",
        },
      ]);
    });

    it("lists jobs, shows one with its counters, reserves from a queue; health and the OpenAPI document", async () => {
      const job = await rt.jobs.submit<{ n: number }, number>({
        queue: "listing",
        tasks: [{ n: 0 }, { n: 1 }],
      });
      const active = await call("GET", "/jobs?queue=listing&status=active");
      expect(active.status).toBe(200);
      expect(active.json.jobs).toEqual([
        expect.objectContaining({ id: job.id, queue: "listing", status: "running", total: 2 }),
      ]);
      expect((await call("GET", "/jobs?queue=listing&status=succeeded")).json.jobs).toEqual([]);
      const shown = await call("GET", `/jobs/${job.id}`);
      expect(shown.json).toMatchObject({
        id: job.id,
        status: "running",
        total: 2,
        done: 0,
        failed: 0,
        dead: 0,
      });
      expect(shown.json).toHaveProperty("eta_ms");
      let tasks: Reserved[] = [];
      await waitUntil(
        async () => {
          tasks = (await call("POST", "/queues/listing/tasks", { batch_size: 10 })).json.tasks;
          return tasks.length === 2;
        },
        { timeoutMs: 5000, message: "the queue endpoint sees the new job" },
      );
      expect(tasks.map((t) => [t.job_id, t.index]).sort()).toEqual([
        [job.id, 0],
        [job.id, 1],
      ]);
      await call("POST", `/jobs/${job.id}/results`, {
        results: tasks.map((t) => ({ receipt: t.receipt, result: t.index })),
      });
      await job.done();
      await waitUntil(async () => (await call("GET", `/jobs/${job.id}`)).json.status === "succeeded", {
        timeoutMs: 5000,
        message: "GET /jobs/:id shows the end",
      });
      expect((await call("GET", `/jobs/${job.id}`)).json).toMatchObject({
        status: "succeeded",
        done: 2,
        total: 2,
      });
      const health = await call("GET", "/healthz", undefined, { token: null });
      expect(health).toMatchObject({
        status: 200,
        json: { status: "ok", connection: broker === "nats" ? "connected" : "memory" },
      });
      const doc = await call("GET", "/openapi.json", undefined, { token: null });
      expect(doc.json.openapi).toBe("3.1.0");
      expect(Object.keys(doc.json.paths)).toContain("/jobs/{id}/results");
    });

    it("GET /jobs pages with limit and cursor; a page's next leads to the rest, a bad cursor is 400", async () => {
      // The oracle: the ids submit() returned.
      const submitted = await Promise.all(
        [0, 1, 2].map(() => rt.jobs.submit({ queue: "paging", tasks: [{ n: 0 }] })),
      );
      const ids: string[] = [];
      let path = "/jobs?queue=paging&limit=1";
      for (let pages = 1; ; pages++) {
        const answer = await call("GET", path);
        expect(answer.status).toBe(200);
        expect(answer.json.jobs.length).toBeLessThanOrEqual(1);
        ids.push(...answer.json.jobs.map((j: { id: string }) => j.id));
        if (answer.json.next === undefined) break;
        expect(pages).toBeLessThan(10);
        path = `/jobs?queue=paging&limit=1&cursor=${answer.json.next}`;
      }
      expect(ids.sort()).toEqual(submitted.map((j) => j.id).sort());
      const bad = await call("GET", "/jobs?cursor=djE6LTE");
      expect(bad).toMatchObject({
        status: 400,
        json: { error: { code: "invalid_request", field: "cursor" } },
      });
      for (const job of submitted) await job.cancel("test over");
    });

    it("the example remote worker drains two jobs of its queue, round robin, with nothing but fetch", async () => {
      const jobs = await Promise.all(
        ["a", "b"].map(() =>
          rt.jobs.submit<{ n: number }, number>({ queue: "remote", tasks: range(30).map((n) => ({ n })) }),
        ),
      );
      const stop = new AbortController();
      const ran = new Map<string, number[]>(jobs.map((j) => [j.id, []]));
      const worker = runRemoteWorker<{ n: number }, number>({
        baseUrl,
        token: BOB,
        queue: "remote",
        batchSize: 5,
        handler: (payload, task) => {
          ran.get(task.job_id)?.push(task.index);
          return payload.n * 3;
        },
        signal: stop.signal,
      });
      const finals = await Promise.all(jobs.map((j) => j.done()));
      stop.abort();
      expect(await worker).toEqual({ processed: 60, failed: 0, dropped: 0 });
      for (const f of finals) {
        expect(f).toMatchObject({ status: "succeeded", done: 30, total: 30 });
        await expectCountedOnce(f, ran.get(f.id) ?? []);
      }
      for (const job of jobs) {
        expect([...(await resultsOf(job)).entries()].every(([index, r]) => r.value === index * 3)).toBe(true);
      }
      // Round robin: the first two reservations came from different jobs.
      const first = logs.filter((l) => l.msg === "tasks reserved" && l.queue === "remote").slice(0, 2);
      expect(new Set(first.map((l) => l.jobId)).size).toBe(2);
      expect(first.every((l) => l.workerId === "bob")).toBe(true);
    });
  });

  describe("bad requests get the right 4xx, a JSON error, and nothing is acked or lost", () => {
    it("answers each bad request with its 4xx and code", async () => {
      const job = await rt.jobs.submit<{ n: number }, number>({
        queue: "bad",
        tasks: range(6).map((n) => ({ n })),
      });
      const other = await rt.jobs.submit<{ n: number }, number>({ queue: "bad-other", tasks: [{ n: 0 }] });
      const finished = await rt.jobs.submit<{ n: number }, number>({ queue: "bad-done", tasks: [{ n: 0 }] });
      const held = await reserveAll(job.id, 4);
      const [otherTask] = await reserve(other.id, 1);
      const [finishedTask] = await reserve(finished.id, 1);
      await call("POST", `/jobs/${finished.id}/results`, {
        results: [{ receipt: finishedTask!.receipt, result: 0 }],
      });
      await finished.done();
      // A job cancelled while a task of it was leased: that receipt was never answered.
      const cancelled = await rt.jobs.submit<{ n: number }, number>({
        queue: "bad-cancelled",
        tasks: [{ n: 0 }],
      });
      const [cancelledTask] = await reserve(cancelled.id, 1);
      await cancelled.cancel("bad requests");

      const r0 = held[0]!.receipt;
      const [body, mac] = r0.split(".") as [string, string];
      const claims = JSON.parse(Buffer.from(body, "base64url").toString());
      const tampered = `${Buffer.from(JSON.stringify({ ...claims, i: 5 })).toString("base64url")}.${mac}`;
      const otherKey = new ReceiptSigner("not-the-secret-of-this-api-at-all!!").sign(claims);
      const j = `/jobs/${job.id}`;
      const results = (...items: unknown[]) => ({ results: items });
      const huge = JSON.stringify({ batch_size: 1, pad: "x".repeat(1024 * 1024) });
      const endless = () =>
        new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(new TextEncoder().encode('{"batch_size":1,"pad":"'));
          },
          pull(controller) {
            controller.enqueue(new TextEncoder().encode("x".repeat(64 * 1024)));
          },
        });

      type Row = [
        name: string,
        method: string,
        path: string,
        body: unknown,
        status: number,
        code: string,
        options?: Parameters<typeof call>[3],
      ];
      const rows: Row[] = [
        ["no token", "POST", `${j}/tasks`, { batch_size: 1 }, 401, "missing_token", { token: null }],
        [
          "a wrong token",
          "POST",
          `${j}/tasks`,
          { batch_size: 1 },
          401,
          "invalid_token",
          { token: "token-mallory-012345" },
        ],
        [
          "another scheme",
          "POST",
          `${j}/tasks`,
          { batch_size: 1 },
          401,
          "invalid_token",
          { token: null, headers: { authorization: `Basic ${ALICE}` } },
        ],
        ["no token on a GET", "GET", "/jobs", undefined, 401, "missing_token", { token: null }],
        ["malformed JSON", "POST", `${j}/tasks`, undefined, 400, "invalid_json", { raw: '{"batch_size":' }],
        ["an empty body", "POST", `${j}/tasks`, undefined, 400, "invalid_json", { raw: "" }],
        ["a body that is an array", "POST", `${j}/tasks`, [1], 400, "invalid_request"],
        ["batch_size a string", "POST", `${j}/tasks`, { batch_size: "5" }, 400, "invalid_request"],
        ["batch_size null", "POST", `${j}/tasks`, { batch_size: null }, 400, "invalid_request"],
        ["batch_size missing", "POST", `${j}/tasks`, {}, 400, "invalid_request"],
        ["batch_size 0", "POST", `${j}/tasks`, { batch_size: 0 }, 400, "invalid_request"],
        ["batch_size negative", "POST", `${j}/tasks`, { batch_size: -3 }, 400, "invalid_request"],
        ["batch_size fractional", "POST", `${j}/tasks`, { batch_size: 1.5 }, 400, "invalid_request"],
        ["batch_size over the bound", "POST", `${j}/tasks`, { batch_size: 101 }, 400, "invalid_request"],
        ["batch_size huge", "POST", `${j}/tasks`, { batch_size: 1e12 }, 400, "invalid_request"],
        [
          "batch_size huge on a queue",
          "POST",
          "/queues/bad/tasks",
          { batch_size: 10_000 },
          400,
          "invalid_request",
        ],
        ["an unknown field", "POST", `${j}/tasks`, { batch_size: 1, priority: 9 }, 400, "invalid_request"],
        [
          "results not an array",
          "POST",
          `${j}/results`,
          { results: { receipt: r0, result: 1 } },
          400,
          "invalid_request",
        ],
        ["a result without receipt", "POST", `${j}/results`, results({ result: 1 }), 400, "invalid_request"],
        [
          "a receipt that is a number",
          "POST",
          `${j}/results`,
          results({ receipt: 7, result: 1 }),
          400,
          "invalid_request",
        ],
        [
          "both result and error",
          "POST",
          `${j}/results`,
          results({ receipt: r0, result: 1, error: { message: "x" } }),
          400,
          "invalid_request",
        ],
        [
          "permanent not a boolean",
          "POST",
          `${j}/results`,
          results({ receipt: r0, error: { message: "x", permanent: "yes" } }),
          400,
          "invalid_request",
        ],
        [
          "receipts not strings",
          "POST",
          `${j}/heartbeat`,
          { receipts: [{ receipt: r0 }] },
          400,
          "invalid_request",
        ],
        ["an oversized body", "POST", `${j}/tasks`, undefined, 413, "body_too_large", { raw: huge }],
        [
          "an oversized body without Content-Length",
          "POST",
          `${j}/tasks`,
          undefined,
          413,
          "body_too_large",
          { raw: endless() },
        ],
        [
          "a tampered receipt",
          "POST",
          `${j}/results`,
          results({ receipt: tampered, result: 1 }),
          400,
          "invalid_receipt",
        ],
        [
          "a receipt signed with another key",
          "POST",
          `${j}/results`,
          results({ receipt: otherKey, result: 1 }),
          400,
          "invalid_receipt",
        ],
        [
          "a made-up receipt",
          "POST",
          `${j}/results`,
          results({ receipt: "eyJ2IjoxfQ.AAAA", result: 1 }),
          400,
          "invalid_receipt",
        ],
        [
          "a good receipt next to a forged one",
          "POST",
          `${j}/results`,
          results({ receipt: r0, result: 1 }, { receipt: `${r0}x`, result: 1 }),
          400,
          "invalid_receipt",
        ],
        [
          "a forged receipt in a heartbeat",
          "POST",
          `${j}/heartbeat`,
          { receipts: [tampered] },
          400,
          "invalid_receipt",
        ],
        [
          "a receipt of another job",
          "POST",
          `${j}/results`,
          results({ receipt: otherTask!.receipt, result: 1 }),
          400,
          "receipt_wrong_job",
        ],
        [
          "a heartbeat with another job's receipt",
          "POST",
          `${j}/heartbeat`,
          { receipts: [otherTask!.receipt] },
          400,
          "receipt_wrong_job",
        ],
        ["an unknown job", "POST", "/jobs/j0000000000000000/tasks", { batch_size: 1 }, 404, "job_not_found"],
        ["an unknown job, GET", "GET", "/jobs/j0000000000000000", undefined, 404, "job_not_found"],
        ["a malformed job id", "POST", "/jobs/a.b*c/tasks", { batch_size: 1 }, 404, "job_not_found"],
        [
          "a finished job: reserve",
          "POST",
          `/jobs/${finished.id}/tasks`,
          { batch_size: 1 },
          410,
          "job_finished",
        ],
        [
          "a finished job: results of a receipt never answered",
          "POST",
          `/jobs/${cancelled.id}/results`,
          results({ receipt: cancelledTask!.receipt, result: 1 }),
          410,
          "job_finished",
        ],
        [
          "a finished job: another answer than the one stored",
          "POST",
          `/jobs/${finished.id}/results`,
          results({ receipt: finishedTask!.receipt, result: 1 }),
          409,
          "already_answered",
        ],
        [
          "a finished job: heartbeat",
          "POST",
          `/jobs/${finished.id}/heartbeat`,
          { receipts: [finishedTask!.receipt] },
          410,
          "job_finished",
        ],
        ["an unknown status filter", "GET", "/jobs?status=lost", undefined, 400, "invalid_request"],
        ["a limit of 0", "GET", "/jobs?limit=0", undefined, 400, "invalid_request"],
        ["a cursor the service did not give", "GET", "/jobs?cursor=nope", undefined, 400, "invalid_request"],
        ["a malformed queue", "POST", "/queues/a.b/tasks", { batch_size: 1 }, 400, "invalid_request"],
        ["an unknown route", "GET", "/nothing/here", undefined, 404, "not_found"],
        ["a wrong method", "DELETE", j, undefined, 405, "method_not_allowed"],
        ["GET on a POST route", "GET", `${j}/tasks`, undefined, 405, "method_not_allowed"],
      ];
      for (const [name, method, path, requestBody, status, code, options] of rows) {
        const answer = await call(method, path, requestBody, options);
        expect({ name, status: answer.status, code: answer.json?.error?.code }).toEqual({
          name,
          status,
          code,
        });
        expect(answer.type, name).toMatch(/^application\/json/);
        expect(typeof answer.json.error.message, name).toBe("string");
      }

      // Nothing was acked: each held receipt is answered now for the first time …
      const answered = await call(
        "POST",
        `${j}/results`,
        results(...held.map((t) => ({ receipt: t.receipt, result: t.index }))),
      );
      expect(answered.json.results).toEqual(held.map((t) => ({ id: t.id, status: "done" })));
      // … and nothing was lost: exactly the other two tasks are still there.
      const rest = await reserveAll(job.id, 2);
      expect([...held, ...rest].map((t) => t.index).sort()).toEqual(range(6));
      expect(await reserve(job.id, 10)).toEqual([]);
      await call(
        "POST",
        `${j}/results`,
        results(...rest.map((t) => ({ receipt: t.receipt, result: t.index }))),
      );
      expect(await job.done()).toMatchObject({ status: "succeeded", done: 6, failed: 0, total: 6 });
      await call("POST", `/jobs/${other.id}/results`, results({ receipt: otherTask!.receipt, result: 0 }));
      expect(await other.done()).toMatchObject({ status: "succeeded", done: 1 });
    });

    it("no request makes the server answer 5xx or crash", async () => {
      const job = await rt.jobs.submit<{ n: number }, number>({ queue: "junk", tasks: [{ n: 0 }] });
      const [task] = await reserve(job.id, 1);
      const deep = (n: number) => `${"[".repeat(n)}${"]".repeat(n)}`;
      const bodies: string[] = [
        "null",
        "true",
        "0",
        "-0",
        "1e309",
        '"text"',
        "[]",
        "{}",
        deep(100_000),
        `{"batch_size":${deep(50_000)}}`,
        `{"results":[{"receipt":${JSON.stringify(task!.receipt)},"result":${deep(200_000)}}]}`,
        '{"__proto__":{"batch_size":1}}',
        '{"constructor":{"prototype":{"x":1}},"batch_size":1}',
        '{"batch_size":1,"batch_size":2}',
        '{"batch_size":"\\u0000"}',
        '{"receipts":["\\ud800"]}',
        `{"receipts":[${JSON.stringify(`${task!.receipt}\u0000`)}]}`,
        `{"results":${JSON.stringify(Array.from({ length: 1001 }, () => ({ receipt: "r", result: 1 })))}}`,
        `{"results":[{"receipt":${JSON.stringify("x".repeat(2000))},"result":1}]}`,
        `{"results":[{"receipt":"${"a".repeat(40)}.${"b".repeat(43)}","error":{"message":"${"m".repeat(9000)}"}}]}`,
        "\u00ff\u00fe",
      ];
      const paths = [
        `/jobs/${job.id}/tasks`,
        `/jobs/${job.id}/results`,
        `/jobs/${job.id}/heartbeat`,
        "/queues/junk/tasks",
        "/jobs/%ZZ/tasks",
        "/jobs/%2e%2e/results",
        `/jobs/${"j".repeat(3000)}/tasks`,
        "/jobs//tasks",
        "/queues/%00/tasks",
      ];
      for (const path of paths) {
        for (const raw of bodies) {
          const answer = await call("POST", path, undefined, { raw });
          expect(answer.status, `${path} ${raw.slice(0, 60)}`).toBeLessThan(500);
          expect(answer.json?.error?.code ?? "ok", `${path} ${raw.slice(0, 60)}`).toEqual(expect.any(String));
        }
      }
      const bytes = new Uint8Array([0x7b, 0xc3, 0x28, 0xff, 0x00, 0x7d]);
      expect((await call("POST", `/jobs/${job.id}/tasks`, undefined, { raw: bytes })).status).toBe(400);
      for (const query of [
        "?status=",
        "?limit=-1",
        "?limit=99999999999999999999",
        "?queue=%ZZ",
        "?limit=1e3",
        "?status=active&status=failed",
      ]) {
        expect((await call("GET", `/jobs${query}`)).status, query).toBeLessThan(500);
      }
      for (const authorization of [
        "Bearer",
        "Bearer  ",
        `Bearer ${"t".repeat(8000)}`,
        "Bearer \t x",
        "bearer token-alice-0123456789 extra",
      ]) {
        const answer = await call("GET", "/jobs", undefined, { token: null, headers: { authorization } });
        expect(answer.status, authorization.slice(0, 20)).toBe(401);
      }
      // Still alive and still doing its job.
      expect((await call("GET", "/healthz", undefined, { token: null })).status).toBe(200);
      const answered = await call("POST", `/jobs/${job.id}/results`, {
        results: [{ receipt: task!.receipt, result: 0 }],
      });
      expect(answered.json.results).toEqual([{ id: `${job.id}.0`, status: "done" }]);
      expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
      expect(statuses.filter((s) => s.status >= 500)).toEqual([]);
    });
  });
});
