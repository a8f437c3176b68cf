/**
 * Attacks on the HTTP pull API, on both brokers: a receipt replayed after an
 * API restart or against a second API instance, tokens reaching past their
 * scope, another token's receipts, lease hoarding, a huge error message. The
 * oracle is what the job recorded (its results, read through the runtime),
 * never the API's own answer alone.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMemoryBroker, createMemoryServer } from "../../src/adapters/memory/memory-broker.ts";
import { createHttpApi, createRuntime, type HttpApi, type JobHandle, type Runtime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createTestRuntime } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const SECRET = "a-receipt-secret-shared-by-both-apis-0123";
const WORKER = "token-worker-all-queues-01";
const WORKER_A = "token-worker-queue-a-0001";
const READER_A = "token-reader-queue-a-0001";
const WORKER_A_NEW = "token-worker-queue-a-0002";
const WORKER_A_B = "token-worker-a-queue-b-01";
const WORKER_HB = "token-worker-heartbeats-1";
const tokens = {
  [WORKER]: "everywhere",
  [WORKER_A]: { identity: "worker-a", role: "worker", queues: ["q-a"] },
  [READER_A]: { identity: "reader-a", role: "read", queues: ["q-a"] },
  // worker-a's token after a rotation (both configured meanwhile), and one of its tokens for q-b only.
  [WORKER_A_NEW]: { identity: "worker-a", role: "worker", queues: ["q-a"] },
  [WORKER_A_B]: { identity: "worker-a", role: "worker", queues: ["q-b"] },
  [WORKER_HB]: "beats-elsewhere",
} as const;

interface Reserved {
  id: string;
  index: number;
  attempt: number;
  receipt: string;
}

// biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field
type Answer = { status: number; json: any };

const call = async (api: HttpApi, token: string, method: string, path: string, body?: unknown) => {
  const response = await api.fetch(
    new Request(`http://api.test${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    }),
  );
  return { status: response.status, json: await response.json() } as Answer;
};

const resultsOf = async (job: JobHandle<unknown>) => {
  const seen = new Map<number, unknown>();
  for await (const r of job.results()) seen.set(r.index, r.ok ? r.result : { error: r.error });
  return seen;
};

interface Setup {
  rt1: Runtime;
  rt2: Runtime;
  close(): Promise<void>;
}

const brokers: Record<string, () => Promise<Setup>> = {
  nats: async () => {
    const server: NatsServerHandle = await startNatsServer();
    // Per-job reserves of 1-task jobs: a consumer per job (a lane job's own reserve is a 409).
    const rt1 = await createRuntime({ servers: server.url, logger: silentLogger(), jobs: { lane: false } });
    const rt2 = await createRuntime({ servers: server.url, logger: silentLogger(), jobs: { lane: false } });
    return {
      rt1,
      rt2,
      close: async () => {
        await rt1.stop();
        await rt2.stop();
        await server.dispose();
      },
    };
  },
  memory: async () => {
    const server = createMemoryServer();
    const rt1 = await createTestRuntime({ jobs: { lane: false }, broker: createMemoryBroker({ server }) });
    const rt2 = await createTestRuntime({ jobs: { lane: false }, broker: createMemoryBroker({ server }) });
    return {
      rt1,
      rt2,
      close: async () => {
        await rt1.stop();
        await rt2.stop();
        server.close();
      },
    };
  },
};

describe.each(Object.keys(brokers))("HTTP API attacks on the %s broker", (broker) => {
  let setup: Setup;
  let api1: HttpApi;
  let api2: HttpApi;
  const options = { tokens, receiptSecret: SECRET, maxLeasesPerToken: 5, maxBodyBytes: 16 * 1024 * 1024 };

  beforeAll(async () => {
    setup = await brokers[broker]!();
    api1 = createHttpApi(setup.rt1, options);
    api2 = createHttpApi(setup.rt2, options);
  });
  afterAll(async () => {
    await setup?.close();
  });

  const reserve = async (api: HttpApi, token: string, jobId: string, batch = 1): Promise<Reserved[]> => {
    const answer = await call(api, token, "POST", `/jobs/${jobId}/tasks`, { batch_size: batch });
    expect(answer.status, JSON.stringify(answer.json)).toBe(200);
    return answer.json.tasks;
  };
  const nextDelivery = async (api: HttpApi, jobId: string): Promise<Reserved> => {
    let task: Reserved | undefined;
    await waitUntil(
      async () => {
        [task] = await reserve(api, WORKER, jobId);
        return task !== undefined;
      },
      { timeoutMs: 10_000, message: "the task is delivered again" },
    );
    return task!;
  };

  it("a receipt answered on one API instance and replayed on another is refused; the real holder's answer counts", async () => {
    const job = await setup.rt1.jobs.submit<{ n: number }, string>({
      queue: "replay",
      tasks: [{ n: 0 }],
      backoff: [0],
      maxDeliver: 5,
    });
    const [first] = await reserve(api1, WORKER, job.id);
    const retry = await call(api1, WORKER, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: first!.receipt, error: { message: "busy" } }],
    });
    expect(retry.json.results).toEqual([{ id: `${job.id}.0`, status: "retry", retry_in_ms: 0 }]);
    const second = await nextDelivery(api2, job.id);
    expect(second.attempt).toBe(2);
    // The first holder's receipt, replayed on the other instance while its lease has not run out.
    const replay = await call(api2, WORKER, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: first!.receipt, result: "stale" }],
    });
    expect(replay.status, JSON.stringify(replay.json)).toBe(409);
    expect(replay.json.error).toMatchObject({
      code: "already_answered",
      results: [{ id: `${job.id}.0`, status: "conflict", answered: "retry" }],
    });
    const real = await call(api2, WORKER, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: second.receipt, result: "real" }],
    });
    expect(real.json.results).toEqual([{ id: `${job.id}.0`, status: "done" }]);
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
    expect([...(await resultsOf(job)).values()]).toEqual(["real"]);
  });

  it("a receipt replayed after the API restarted is refused; a retry of the same answer is a duplicate", async () => {
    const job = await setup.rt1.jobs.submit<{ n: number }, string>({
      queue: "restart",
      tasks: [{ n: 0 }, { n: 1 }],
      backoff: [0],
      maxDeliver: 5,
    });
    const [a, b] = await reserve(api1, WORKER, job.id, 2);
    await call(api1, WORKER, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: a!.receipt, error: { message: "busy" } }],
    });
    // The API process restarts: a new instance with the same secret, nothing carried over in memory.
    const restarted = createHttpApi(setup.rt1, options);
    const replay = await call(restarted, WORKER, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: a!.receipt, result: "stale" }],
    });
    expect(replay.status).toBe(409);
    const again = await call(restarted, WORKER, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: a!.receipt, error: { message: "busy" } }],
    });
    expect(again.json.results).toEqual([{ id: `${job.id}.0`, status: "retry", duplicate: true }]);
    await call(restarted, WORKER, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: b!.receipt, result: "b" }],
    });
    const second = await nextDelivery(restarted, job.id);
    await call(restarted, WORKER, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: second.receipt, result: "real" }],
    });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 2 });
    expect(Object.fromEntries(await resultsOf(job))).toEqual({ 0: "real", 1: "b" });
  });

  it("scopes: a token reaches only its queues, and only with its role", async () => {
    const inA = await setup.rt1.jobs.submit({ queue: "q-a", tasks: [{ n: 0 }] });
    const inB = await setup.rt1.jobs.submit({ queue: "q-b", tasks: [{ n: 0 }] });
    // A worker of q-a cannot see q-b's jobs nor lease from them.
    expect((await call(api1, WORKER_A, "POST", `/jobs/${inB.id}/tasks`, { batch_size: 1 })).status).toBe(404);
    expect((await call(api1, WORKER_A, "POST", "/queues/q-b/tasks", { batch_size: 1 })).json.error.code).toBe(
      "forbidden",
    );
    // A worker token may not read jobs; a reader may not lease.
    expect((await call(api1, WORKER_A, "GET", "/jobs")).status).toBe(403);
    expect((await call(api1, READER_A, "POST", `/jobs/${inA.id}/tasks`, { batch_size: 1 })).status).toBe(403);
    // The role is checked before the body is read, as on every worker route: a reader's bad body is 403 too.
    for (const path of [`/jobs/${inA.id}/tasks`, "/queues/q-a/tasks"])
      expect((await call(api1, READER_A, "POST", path, { batch_size: "x" })).status).toBe(403);
    // The reader sees q-a only.
    const listed = await call(api1, READER_A, "GET", "/jobs");
    expect(listed.status).toBe(200);
    const queues = new Set(listed.json.jobs.map((j: { queue: string }) => j.queue));
    expect([...queues]).toEqual(["q-a"]);
    expect((await call(api1, READER_A, "GET", "/jobs?queue=q-b")).status).toBe(403);
    expect((await call(api1, READER_A, "GET", `/jobs/${inB.id}`)).status).toBe(404);
    expect((await call(api1, READER_A, "GET", `/jobs/${inA.id}`)).json).toMatchObject({ id: inA.id });
    // Nothing of q-b was leased by any of that.
    const [task] = await reserve(api1, WORKER, inB.id);
    expect(task?.attempt).toBe(1);
    await call(api1, WORKER, "POST", `/jobs/${inB.id}/results`, {
      results: [{ receipt: task!.receipt, result: 1 }],
    });
    await inA.cancel("test over");
  });

  it("a receipt works only for the token that leased it", async () => {
    const job = await setup.rt1.jobs.submit<{ n: number }, string>({ queue: "q-a", tasks: [{ n: 0 }] });
    const [task] = await reserve(api1, WORKER, job.id);
    const stolen = await call(api2, WORKER_A, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: task!.receipt, result: "thief" }],
    });
    expect(stolen.status).toBe(403);
    expect(stolen.json.error.code).toBe("receipt_not_yours");
    const beat = await call(api2, WORKER_A, "POST", `/jobs/${job.id}/heartbeat`, {
      receipts: [task!.receipt],
    });
    expect(beat.json.error.code).toBe("receipt_not_yours");
    const own = await call(api2, WORKER, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: task!.receipt, result: "owner" }],
    });
    expect(own.json.results).toEqual([{ id: `${job.id}.0`, status: "done" }]);
    expect([...(await resultsOf(job)).values()]).toEqual(["owner"]);
  });

  it("a receipt is its identity's: another token of it answers within its own queues (a rotation)", async () => {
    const job = await setup.rt1.jobs.submit<{ n: number }, string>({ queue: "q-a", tasks: [{ n: 0 }] });
    const [task] = await reserve(api1, WORKER_A, job.id);
    // The same worker with a token that does not reach q-a: nothing of the job is its to touch.
    const outOfScope = await call(api2, WORKER_A_B, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: task!.receipt, result: "out of scope" }],
    });
    expect(outOfScope.status).toBe(404);
    const rotated = await call(api2, WORKER_A_NEW, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: task!.receipt, result: "new token" }],
    });
    expect(rotated.json.results).toEqual([{ id: `${job.id}.0`, status: "done" }]);
    expect([...(await resultsOf(job)).values()]).toEqual(["new token"]);
  });

  it("a token cannot hoard: leases per token are capped (429), other tokens still get tasks", async () => {
    const job = await setup.rt1.jobs.submit<{ n: number }, number>({
      queue: "q-a",
      tasks: Array.from({ length: 40 }, (_, n) => ({ n })),
    });
    const held = await reserve(api1, WORKER, job.id, 40);
    expect(held).toHaveLength(5);
    const over = await call(api1, WORKER, "POST", `/jobs/${job.id}/tasks`, { batch_size: 1 });
    expect(over.status).toBe(429);
    expect(over.json.error).toMatchObject({ code: "too_many_leases", max_leases: 5 });
    expect(await reserve(api1, WORKER_A, job.id, 3)).toHaveLength(3);
    // Answering frees the cap.
    await call(api1, WORKER, "POST", `/jobs/${job.id}/results`, {
      results: held.map((t) => ({ receipt: t.receipt, result: t.index })),
    });
    expect(await reserve(api1, WORKER, job.id, 2)).toHaveLength(2);
    await job.cancel("test over");
  });

  it("a lease kept open through another instance keeps its token's slot on the instance that made it", async () => {
    const job = await setup.rt1.jobs.submit<{ n: number }, number>({
      queue: "q-beats",
      tasks: Array.from({ length: 20 }, (_, n) => ({ n })),
      ackWaitMs: 1500,
    });
    const held = await reserve(api1, WORKER_HB, job.id, 20);
    expect(held).toHaveLength(5);
    // Behind a balancer: every heartbeat reaches api2, past the leases' first end (1.5 s).
    let receipts = held.map((t) => t.receipt);
    for (let beat = 0; beat < 5; beat++) {
      await delay(600);
      const beaten = await call(api2, WORKER_HB, "POST", `/jobs/${job.id}/heartbeat`, { receipts });
      expect(beaten.status, JSON.stringify(beaten.json)).toBe(200);
      receipts = beaten.json.receipts.map((r: { receipt: string }) => r.receipt);
    }
    // The five are open, all made through api1: it hands out no more.
    const over = await call(api1, WORKER_HB, "POST", `/jobs/${job.id}/tasks`, { batch_size: 5 });
    expect(over.status, JSON.stringify(over.json)).toBe(429);
    // Answered through api2: api1 gives the slots back.
    await call(api2, WORKER_HB, "POST", `/jobs/${job.id}/results`, {
      results: receipts.map((receipt, n) => ({ receipt, result: held[n]!.index })),
    });
    await waitUntil(
      async () =>
        (await call(api1, WORKER_HB, "POST", `/jobs/${job.id}/tasks`, { batch_size: 1 })).status === 200,
      { timeoutMs: 5000, message: "api1 leases again once the five are answered" },
    );
    await job.cancel("test over");
  });

  it("a 10 MB error message is stored truncated, never a 5xx", async () => {
    const job = await setup.rt1.jobs.submit<{ n: number }, number>({ queue: "q-a", tasks: [{ n: 0 }] });
    const [task] = await reserve(api1, WORKER_A, job.id);
    const message = "x".repeat(10 * 1024 * 1024);
    const answer = await call(api1, WORKER_A, "POST", `/jobs/${job.id}/results`, {
      results: [{ receipt: task!.receipt, error: { message, permanent: true } }],
    });
    expect(answer.status, JSON.stringify(answer.json).slice(0, 300)).toBe(200);
    expect(answer.json.results).toEqual([{ id: `${job.id}.0`, status: "failed" }]);
    const [stored] = [...(await resultsOf(job)).values()] as { error: string }[];
    expect(stored!.error.length).toBeLessThanOrEqual(9000);
    expect(stored!.error.startsWith("xxxx")).toBe(true);
    expect(stored!.error).toMatch(/truncated/);
  });
});
