/**
 * The dashboard's JSON and event-stream routes against a real nats-server:
 * bearer tokens (401 without one, 403 for an action with a `read` token, a
 * token's queues are all it sees), and a job's transitions streamed in order
 * up to its end, both from this runtime's actor (the full state value) and,
 * on a runtime that has none, from the record's changes (the status). The
 * oracles are the test's own: the ledger of what its handlers did, the job
 * record read raw from the server with the test's own connection, and the
 * moment it released the handlers.
 */

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { partsOf } from "../../src/api/runtime.ts";
import { createDashboard, createRuntime, type Runtime } from "../../src/index.ts";
import { type ServedApp, serveOnLoopback } from "../harness/http-server.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { composites } from "../harness/signal-composites.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");
const READ = "dashboard-read-token-0123456789";
const OPERATE = "dashboard-operate-token-0123456789";
const WORKER = "dashboard-worker-token-0123456789";
const OTHER_QUEUE = "dashboard-other-queue-token-0123";
const tokens = {
  [READ]: { identity: "viewer", role: "read", queues: "*" },
  [OPERATE]: { identity: "operator", role: "operate", queues: "*" },
  [WORKER]: "a-worker",
  [OTHER_QUEUE]: { identity: "elsewhere", role: "operate", queues: ["not-this-one"] },
} as const;

interface StreamEvent {
  name: string;
  // biome-ignore lint/suspicious/noExplicitAny: event bodies are checked field by field
  data: any;
  /** When the test's reader got it. */
  at: number;
}

/** Reads a server-sent-event stream into `events` until aborted: the test's own parser. */
const readStream = async (url: string, token: string, signal: AbortSignal, events: StreamEvent[]) => {
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}` }, signal });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  void (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        buffer += value;
        for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const name = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (name && data) events.push({ name, data: JSON.parse(data), at: Date.now() });
        }
      }
    } catch {
      // aborted
    }
  })();
};

describe("the dashboard's routes on NATS", () => {
  let server: NatsServerHandle;
  /** Submits, works and supervises: its dashboard has each job's actor. */
  let rtA: Runtime;
  /** Never submits nor supervises (`takeOver: false`): its dashboard sees the records only. */
  let rtB: Runtime;
  let nc: NatsConnection;
  let httpA: ServedApp;
  let httpB: ServedApp;

  /** The job's record as stored, read raw with the test's connection and parsed here. */
  const storedRecord = async (id: string) => {
    const jsm = await jetstreamManager(nc);
    const m = await jsm.streams.getMessage(`KV_${names.jobsBucket}`, {
      last_by_subj: `$KV.${names.jobsBucket}.${id}`,
    });
    return m
      ? (JSON.parse(m.string()) as { status: string; reason?: string; counts: { done: number } })
      : undefined;
  };
  /** The names of the consumers on the job records' stream, as the server lists them. */
  const recordConsumers = async () => {
    const jsm = await jetstreamManager(nc);
    return new Set((await jsm.consumers.list(`KV_${names.jobsBucket}`).next()).map((c) => c.name));
  };
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field
  const json = async (res: Response): Promise<any> => res.json();
  const call = (base: string, path: string, token?: string, body?: unknown) =>
    fetch(`${base}${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });

  /** A worker whose handlers wait for `release()`; `handled` is the ledger of tasks they answered. */
  const gatedWorker = (rt: Runtime, queue: string) => {
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const handled: number[] = [];
    let releasedAt = 0;
    const worker = rt.workers.start<{ n: number }, number>({
      queue,
      concurrency: 8,
      handler: async (task) => {
        await gate;
        handled.push(task.index);
        return task.payload.n;
      },
    });
    return {
      worker,
      handled,
      releasedAt: () => releasedAt,
      release: () => {
        releasedAt = Date.now();
        open();
      },
    };
  };

  beforeAll(async () => {
    server = await startNatsServer();
    // Per-job reserves of 1-task jobs, and their stored record read as running: a consumer per
    // job (a lane job's own reserve is a 409, and its record says submitting until its end).
    rtA = await createRuntime({ servers: server.url, logger, name: "a", jobs: { lane: false } });
    rtB = await createRuntime({
      servers: server.url,
      logger,
      name: "b",
      jobs: { takeOver: false, lane: false },
    });
    nc = await connect({ servers: server.url, name: "oracle" });
    httpA = await serveOnLoopback(createDashboard(rtA, { tokens }).fetch);
    httpB = await serveOnLoopback(createDashboard(rtB, { tokens }).fetch);
  });
  afterAll(async () => {
    await httpA?.close();
    await httpB?.close();
    await nc?.close();
    await rtA?.stop();
    await rtB?.stop();
    await server?.dispose();
  });

  it("asks for a bearer token, lets `read` look and only `operate` act, within the token's queues", async () => {
    const page = await call(httpA.baseUrl, "/");
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('<svg id="job-chart"');
    // Nothing loaded from elsewhere: no script or style source, and the policy forbids it.
    expect(html).not.toMatch(/<(script|link|img)[^>]+(src|href)=/);
    const csp = page.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'self'");
    // The one inline script is allowed by its hash (the browser test runs it under this policy).
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/]{43}='/);
    expect(csp).not.toMatch(/script-src[^;]*unsafe-inline/);
    for (const directive of ["frame-ancestors 'none'", "base-uri 'none'", "object-src 'none'"])
      expect(csp).toContain(directive);
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");

    const work = gatedWorker(rtA, "dash_auth");
    const job = await rtA.jobs.submit({ queue: "dash_auth", tasks: [{ n: 1 }] });
    expect((await call(httpA.baseUrl, "/api/overview")).status).toBe(401);
    expect((await call(httpA.baseUrl, "/api/overview", "not-a-token-0123456789")).status).toBe(401);
    expect((await call(httpA.baseUrl, `/api/jobs/${job.id}/stream`)).status).toBe(401);
    expect((await call(httpA.baseUrl, "/api/overview", WORKER)).status).toBe(403);
    const overview = await json(await call(httpA.baseUrl, "/api/overview", READ));
    expect(overview.jobs.map((j: { id: string }) => j.id)).toContain(job.id);
    // The worker the test started is listed (presence: it announces itself when it starts).
    await waitUntil(
      async () =>
        (await json(await call(httpA.baseUrl, "/api/overview", READ))).workers.some(
          (w: { queue: string; runtime: string }) => w.queue === "dash_auth" && w.runtime === "a",
        ),
      { timeoutMs: 5000, message: "the test's worker in the overview" },
    );

    for (const action of ["cancel", "redrive"]) {
      const refused = await call(httpA.baseUrl, `/api/jobs/${job.id}/${action}`, READ, {});
      expect(refused.status).toBe(403);
      expect((await json(refused)).error.code).toBe("forbidden");
    }
    expect((await storedRecord(job.id))?.status).toBe("running");

    // A token of other queues does not see the job at all.
    const scoped = await json(await call(httpA.baseUrl, "/api/overview", OTHER_QUEUE));
    expect(scoped.jobs.map((j: { id: string }) => j.id)).not.toContain(job.id);
    expect(scoped.workers).toEqual([]);
    expect(scoped.queues).toEqual([]);
    expect((await call(httpA.baseUrl, `/api/jobs/${job.id}`, OTHER_QUEUE)).status).toBe(404);
    expect((await call(httpA.baseUrl, `/api/jobs/${job.id}/cancel`, OTHER_QUEUE, {})).status).toBe(404);
    expect((await call(httpA.baseUrl, `/api/jobs/${job.id}/redrive`, OTHER_QUEUE, {})).status).toBe(404);
    expect((await call(httpA.baseUrl, `/api/jobs/${job.id}/dead-letters`, OTHER_QUEUE)).status).toBe(404);
    expect((await call(httpA.baseUrl, `/api/jobs/${job.id}/stream`, OTHER_QUEUE)).status).toBe(404);
    expect((await storedRecord(job.id))?.status).toBe("running");

    const cancelled = await call(httpB.baseUrl, `/api/jobs/${job.id}/cancel`, OPERATE, {
      reason: "ops said so",
    });
    expect(cancelled.status).toBe(200);
    // The record names who cancelled, whatever reason the caller gave.
    expect(await storedRecord(job.id)).toMatchObject({
      status: "failed",
      reason: "cancelled: ops said so (by operator)",
    });
    work.release();
    await work.worker.stop();
  });

  it("streams the transitions of a job this runtime supervises from its actor, in order, to succeeded", async () => {
    const work = gatedWorker(rtA, "dash_actor");
    const job = await rtA.jobs.submit({ queue: "dash_actor", tasks: [0, 1, 2, 3, 4].map((n) => ({ n })) });
    const events: StreamEvent[] = [];
    const ac = new AbortController();
    await readStream(`${httpA.baseUrl}/api/jobs/${job.id}/stream`, READ, ac.signal, events);
    const transitions = () => events.filter((e) => e.name === "transition");
    await waitUntil(() => transitions().length >= 1, { timeoutMs: 5000, message: "the first transition" });
    work.release();
    await waitUntil(() => JSON.stringify(transitions().at(-1)?.data.value) === '{"succeeded":"recorded"}', {
      timeoutMs: 10_000,
      message: "the job's end on the stream",
    });
    ac.abort();
    await work.worker.stop();

    expect(transitions().map((t) => [t.data.source, t.data.event, t.data.value])).toEqual([
      ["actor", null, "running"],
      ["actor", "results.received", { succeeded: "recording" }],
      ["actor", "finalize.settled", { succeeded: "recorded" }],
    ]);
    // The stream said succeeded only after the test let the handlers go, and all of them had answered.
    const succeededAt = transitions()[1]!.at;
    expect(succeededAt).toBeGreaterThanOrEqual(work.releasedAt());
    expect(work.handled.slice().sort()).toEqual([0, 1, 2, 3, 4]);
    const lastProgress = events.filter((e) => e.name === "progress").at(-1)!.data;
    expect(lastProgress).toMatchObject({ status: "succeeded", done: 5, total: 5, live: true });
    expect(await storedRecord(job.id)).toMatchObject({ status: "succeeded", counts: { done: 5 } });
  });

  it("streams a job supervised elsewhere from its record's changes: the top-level state", async () => {
    const work = gatedWorker(rtA, "dash_record");
    const job = await rtA.jobs.submit({ queue: "dash_record", tasks: [0, 1, 2].map((n) => ({ n })) });
    const baseline = await recordConsumers();
    const events: StreamEvent[] = [];
    const ac = new AbortController();
    await readStream(`${httpB.baseUrl}/api/jobs/${job.id}/stream`, READ, ac.signal, events);
    const transitions = () => events.filter((e) => e.name === "transition");
    await waitUntil(() => transitions().length >= 1, { timeoutMs: 5000, message: "the first transition" });
    // The stream reads the records with a consumer of its own on the server.
    const streams = [...(await recordConsumers())].filter((name) => !baseline.has(name));
    expect(streams).toHaveLength(1);
    work.release();
    await waitUntil(() => transitions().at(-1)?.data.value === "succeeded", {
      timeoutMs: 10_000,
      message: "the job's end on the stream",
    });
    ac.abort();
    await work.worker.stop();
    // The page went away: its consumer goes too.
    await waitUntil(async () => !(await recordConsumers()).has(streams[0]!), {
      timeoutMs: 5000,
      message: "the stream's consumer removed after the client left",
    });

    expect(transitions().map((t) => [t.data.source, t.data.event, t.data.value])).toEqual([
      ["record", null, "running"],
      ["record", "succeeded", "succeeded"],
    ]);
    expect(transitions()[1]!.at).toBeGreaterThanOrEqual(work.releasedAt());
    expect(work.handled.slice().sort()).toEqual([0, 1, 2]);
    expect(events.filter((e) => e.name === "progress").at(-1)!.data).toMatchObject({
      status: "succeeded",
      done: 3,
      live: false,
    });
    expect(await storedRecord(job.id)).toMatchObject({ status: "succeeded", counts: { done: 3 } });
    // Looking never made runtime B watch the job.
    expect(partsOf(rtB).jobs.watchedActor(job.id)).toBeUndefined();
  });

  it("sends a token of other queues nothing of a queue's jobs on the overview's stream", async () => {
    const work = gatedWorker(rtA, "dash_scope");
    const all: StreamEvent[] = [];
    const scoped: StreamEvent[] = [];
    const ac = new AbortController();
    await readStream(`${httpA.baseUrl}/api/stream`, READ, ac.signal, all);
    await readStream(`${httpA.baseUrl}/api/stream`, OTHER_QUEUE, ac.signal, scoped);
    const job = await rtA.jobs.submit({ queue: "dash_scope", tasks: [0, 1].map((n) => ({ n })) });
    work.release();
    // The `*` token's stream is the witness that the job's events went out.
    await waitUntil(
      () => all.some((e) => e.name === "job" && e.data.id === job.id && e.data.status === "succeeded"),
      {
        timeoutMs: 10_000,
        message: "the job's end on the * token's stream",
      },
    );
    expect((await storedRecord(job.id))?.status).toBe("succeeded");
    ac.abort();
    await work.worker.stop();
    expect(scoped.filter((e) => e.name === "job")).toEqual([]);
  });

  it("a stream joins no long-lived signal: on Node 20 each AbortSignal.any stays in its sources", async () => {
    const fed = await composites(async () => {
      for (let n = 0; n < 6; n++) {
        const ac = new AbortController();
        const res = await fetch(`${httpA.baseUrl}/api/stream`, {
          headers: { authorization: `Bearer ${OPERATE}` },
          signal: ac.signal,
        });
        expect(res.status).toBe(200);
        ac.abort();
      }
    });
    // One composite per stream at most, of that stream's own signals: none fed by every stream.
    expect(Math.max(0, ...fed)).toBeLessThan(6);
  });

  it("opens at most 8 streams per identity (429 beyond) while another identity still gets its own", async () => {
    // Each stream open with its response: undici cancels the body of a response collected as
    // garbage, so a stream kept by its controller alone closed at the next GC and freed its slot
    // (CI, a loaded machine: the job's stream below answered 200).
    const opened: Array<{ ac: AbortController; res: Response }> = [];
    const open = async (token: string) => {
      const ac = new AbortController();
      const res = await fetch(`${httpA.baseUrl}/api/stream`, {
        headers: { authorization: `Bearer ${token}` },
        signal: ac.signal,
      });
      if (res.status === 200) opened.push({ ac, res });
      return res;
    };
    try {
      for (let n = 0; n < 8; n++) expect((await open(READ)).status).toBe(200);
      const refused = await open(READ);
      expect(refused.status).toBe(429);
      expect((await json(refused)).error.code).toBe("too_many_streams");
      expect((await open(OPERATE)).status).toBe(200);
      // A collection now and then, as on a loaded machine: the streams stay open.
      setFlagsFromString("--expose-gc");
      const gc = runInNewContext("gc") as () => void;
      for (let n = 0; n < 3; n++) {
        gc();
        await new Promise((resolve) => setImmediate(resolve));
      }
      // A job's stream counts against the same identity.
      const job = await rtA.jobs.submit({ queue: "dash_cap", tasks: [{ n: 1 }] });
      const jobStream = await call(httpA.baseUrl, `/api/jobs/${job.id}/stream`, READ);
      expect(jobStream.status).toBe(429);
      await job.cancel("cap test");

      // Closing one frees its slot once the server has seen the client go.
      opened.shift()!.ac.abort();
      let again: Response | undefined;
      await waitUntil(
        async () => {
          again = await open(READ);
          return again.status === 200;
        },
        { timeoutMs: 5000, message: "a slot freed by the closed stream" },
      );
      expect((await open(READ)).status).toBe(429);
    } finally {
      for (const { ac } of opened) ac.abort();
    }
  });

  it("stop() ends the dashboard's own reader and its open streams: no consumer of it is left", async () => {
    // A job first, so the records' stream exists when this test runs alone.
    await (await rtA.jobs.submit({ queue: "dash_stop", tasks: [{ n: 1 }] })).cancel("stop test");
    const baseline = await recordConsumers();
    const dashboard = createDashboard(rtB, { tokens });
    const http = await serveOnLoopback(dashboard.fetch);
    try {
      const res = await fetch(`${http.baseUrl}/api/stream`, { headers: { authorization: `Bearer ${READ}` } });
      expect(res.status).toBe(200);
      // Its book's reader and the stream's, as the server lists them.
      await waitUntil(
        async () => [...(await recordConsumers())].filter((c) => !baseline.has(c)).length === 2,
        {
          timeoutMs: 5000,
          message: "the dashboard's two consumers on the server",
        },
      );
      const reader = res.body!.getReader();
      const ended = (async () => {
        try {
          for (;;) if ((await reader.read()).done) return "ended";
        } catch {
          return "ended";
        }
      })();
      await dashboard.stop();
      expect(await ended).toBe("ended");
      await waitUntil(async () => [...(await recordConsumers())].every((c) => baseline.has(c)), {
        timeoutMs: 5000,
        message: "no consumer of the stopped dashboard left",
      });
      // A stream asked for after stop() ends at once.
      const late = await fetch(`${http.baseUrl}/api/stream`, {
        headers: { authorization: `Bearer ${READ}` },
      });
      expect(late.status).toBe(200);
      expect(await late.text()).toBe("");
      expect([...(await recordConsumers())].filter((c) => !baseline.has(c))).toEqual([]);
    } finally {
      await http.close();
    }
  });
});
