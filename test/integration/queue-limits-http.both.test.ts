/**
 * Queue limits shared by native workers and HTTP workers (the pull API,
 * `POST /queues/{queue}/tasks`), on both brokers: one limit for both kinds.
 * The oracle is the workers' own ledger: when each handler (native) or each
 * remote holder of a lease (HTTP: from its pull until it answers) ran.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpApi } from "../../src/api/http.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { maxOverlap, mostSurelyStartedPerSecond } from "../harness/intervals.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const token = "token-limits-worker-0123456789";
const otherToken = "token-limits-other-0123456789";

interface Interval {
  readonly start: number;
  /** Known only to lie in [sent, start] (an HTTP lease: from its pull's send to its answer); else `start`. */
  readonly sent?: number;
  readonly end: number;
  readonly by: "native" | "http";
}

let nats: NatsServerHandle;
beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.dispose();
});

const now = () => performance.timeOrigin + performance.now();

describe.each(["memory", "nats"])("queue limits across native and HTTP workers on %s", (broker) => {
  const runtimes: Runtime[] = [];
  let memoryServer: ReturnType<typeof createMemoryServer> | undefined;
  const runtime = async (name: string) => {
    memoryServer ??= broker === "memory" ? createMemoryServer() : undefined;
    const rt = memoryServer
      ? await createTestRuntime({ name, broker: createMemoryBroker({ server: memoryServer }) })
      : await createRuntime({ servers: nats.url, name, logger: silentLogger() });
    runtimes.push(rt);
    return rt;
  };
  afterAll(async () => {
    for (const rt of runtimes.splice(0)) await rt.stop();
  });

  /**
   * HTTP workers polling the queue until `stop`: each leases a batch, holds
   * each task `holdMs`, then answers it; the ledger gets each lease's interval.
   */
  const httpWorkers = (rt: Runtime, queue: string, count: number, holdMs: number, ledger: Interval[]) => {
    const api = createHttpApi(rt, { tokens: { [token]: "remote" } });
    const post = async (path: string, body: unknown) => {
      const sent = now();
      const response = await api.fetch(
        new Request(`http://api${path}`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        }),
      );
      // When the answer arrived, before its body is read (which takes ms on a busy machine): the
      // closest this worker sees to the lease's handout, where the API spends its rate permit.
      const arrived = now();
      expect(response.status, path).toBe(200);
      const answer = (await response.json()) as {
        tasks: Array<{ job_id: string; receipt: string; index: number }>;
      };
      return { sent, arrived, tasks: answer.tasks };
    };
    const stop = new AbortController();
    const loops = Array.from({ length: count }, async () => {
      while (!stop.signal.aborted) {
        // The lease was handed out, its permits taken, between `sent` and `start`.
        const { tasks, sent, arrived: start } = await post(`/queues/${queue}/tasks`, { batch_size: 3 });
        if (tasks.length === 0) {
          await delay(10);
          continue;
        }
        await Promise.all(
          tasks.map(async (t) => {
            await delay(holdMs);
            ledger.push({ start, sent, end: now(), by: "http" });
            await post(`/jobs/${t.job_id}/results`, { results: [{ receipt: t.receipt, result: t.index }] });
          }),
        );
      }
    });
    return async () => {
      stop.abort();
      await Promise.all(loops);
    };
  };

  it("maxConcurrency: 3 bounds native handlers and HTTP leases together", async () => {
    const [admin, native, remote] = [
      await runtime("admin"),
      await runtime("native"),
      await runtime("remote"),
    ];
    await admin.queues.configure("mixed-cap", { maxConcurrency: 3 });
    const ledger: Interval[] = [];
    const worker = native.workers.start({
      queue: "mixed-cap",
      concurrency: 4,
      handler: async (task: { index: number }) => {
        const start = now();
        await delay(40);
        ledger.push({ start, end: now(), by: "native" });
        return task.index;
      },
    });
    const stopHttp = httpWorkers(remote, "mixed-cap", 2, 40, ledger);
    const job = await admin.jobs.submit({
      queue: "mixed-cap",
      tasks: Array.from({ length: 40 }, (_, i) => i),
    });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 40, failed: 0 });
    await stopHttp();
    await worker.stop();
    expect(ledger).toHaveLength(40);
    // Both kinds ran tasks: the bound is on the two together.
    expect(ledger.filter((i) => i.by === "http").length).toBeGreaterThan(0);
    expect(ledger.filter((i) => i.by === "native").length).toBeGreaterThan(0);
    const most = maxOverlap(ledger);
    expect(most).toBeLessThanOrEqual(3);
    expect(most).toBe(3);
  });

  it("ratePerSecond: 10 bounds native and HTTP starts together in every 1-second window", async () => {
    const [admin, native, remote] = [
      await runtime("admin-r"),
      await runtime("native-r"),
      await runtime("remote-r"),
    ];
    await admin.queues.configure("mixed-rate", { ratePerSecond: 10 });
    const ledger: Interval[] = [];
    const worker = native.workers.start({
      queue: "mixed-rate",
      concurrency: 8,
      handler: (task: { index: number }) => {
        ledger.push({ start: now(), end: now(), by: "native" });
        return task.index;
      },
    });
    const stopHttp = httpWorkers(remote, "mixed-rate", 2, 0, ledger);
    const job = await admin.jobs.submit({
      queue: "mixed-rate",
      tasks: Array.from({ length: 25 }, (_, i) => i),
    });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 25, failed: 0 });
    await stopHttp();
    await worker.stop();
    expect(ledger).toHaveLength(25);
    expect(ledger.filter((i) => i.by === "http").length).toBeGreaterThan(0);
    expect(ledger.filter((i) => i.by === "native").length).toBeGreaterThan(0);
    // The API spends an HTTP lease's rate permit somewhere between its pull's send and its answer:
    // only the windows that surely hold a start count (an answer read late is not an 11th start).
    const spans = ledger.map((i) => ({ earliest: i.sent ?? i.start, latest: i.start }));
    expect(mostSurelyStartedPerSecond(spans)).toBeLessThanOrEqual(10);
    const starts = ledger.map((i) => i.start);
    expect(Math.max(...starts) - Math.min(...starts)).toBeGreaterThanOrEqual(2000);
  });

  describe("a lease whose job is over gives its permit and its token's slot back", () => {
    interface Answer {
      readonly status: number;
      readonly json: {
        tasks?: Array<{ job_id: string; receipt: string; index: number }>;
        error?: { code: string };
      };
    }
    /** An API of `rt` whose tokens hold at most one lease each, and a POST through it. */
    const oneLeaseApi = (rt: Runtime) => {
      const api = createHttpApi(rt, {
        tokens: { [token]: "remote", [otherToken]: "other" },
        maxLeasesPerToken: 1,
      });
      return async (as: string, path: string, body: unknown): Promise<Answer> => {
        const response = await api.fetch(
          new Request(`http://api${path}`, {
            method: "POST",
            headers: { authorization: `Bearer ${as}`, "content-type": "application/json" },
            body: JSON.stringify(body),
          }),
        );
        return { status: response.status, json: (await response.json()) as Answer["json"] };
      };
    };

    /**
     * A queue of `maxConcurrency: 1` whose one permit is held by a lease of
     * `token` (its one slot) on a job of a 10-minute ack wait, then that job
     * cancelled; and a job B of the queue, waiting for a worker.
     */
    const cancelledWhileLeased = async (queue: string) => {
      const [admin, remote] = [await runtime(`admin-${queue}`), await runtime(`remote-${queue}`)];
      await admin.queues.configure(queue, { maxConcurrency: 1 });
      const post = oneLeaseApi(remote);
      const a = await admin.jobs.submit({ queue, tasks: [0, 1], ackWaitMs: 600_000 });
      const reserved = await post(token, `/queues/${queue}/tasks`, { batch_size: 2 });
      expect(reserved.status).toBe(200);
      expect(reserved.json.tasks).toHaveLength(1);
      const [leased] = reserved.json.tasks!;
      expect(leased!.job_id).toBe(a.id);
      expect(await a.cancel("operator")).toMatchObject({ status: "failed" });
      const b = await admin.jobs.submit({ queue, tasks: [0] });
      return { post, a, b, leased: leased! };
    };

    /** Reserves from `queue` as `as` until it gets a task of `jobId` (in at most 5 s). */
    const reservesTaskOf = async (
      post: Awaited<ReturnType<typeof oneLeaseApi>>,
      as: string,
      queue: string,
      jobId: string,
    ) => {
      let last: Answer | undefined;
      await waitUntil(
        async () => {
          last = await post(as, `/queues/${queue}/tasks`, { batch_size: 1 });
          return last.json.tasks?.[0]?.job_id === jobId;
        },
        { timeoutMs: 5000, intervalMs: 50, message: `a task of ${jobId} reserved` },
      ).catch((error: unknown) => {
        throw new Error(
          `${(error as Error).message}; last answer ${last?.status} ${JSON.stringify(last?.json)}`,
        );
      });
    };

    it("when its results are answered 410: another token's reserve gets the queue's permit", async () => {
      const queue = "over-results";
      const { post, a, b, leased } = await cancelledWhileLeased(queue);
      const answered = await post(token, `/jobs/${a.id}/results`, {
        results: [{ receipt: leased.receipt, result: 1 }],
      });
      expect([answered.status, answered.json.error?.code]).toEqual([410, "job_finished"]);
      // The queue's one permit: held by the cancelled job's lease until its end (10 min) before the fix.
      await reservesTaskOf(post, otherToken, queue, b.id);
    });

    it("when its heartbeat is answered 410: the token at its cap reserves again, and gets the permit", async () => {
      const queue = "over-heartbeat";
      const { post, a, b, leased } = await cancelledWhileLeased(queue);
      const beat = await post(token, `/jobs/${a.id}/heartbeat`, { receipts: [leased.receipt] });
      expect([beat.status, beat.json.error?.code]).toEqual([410, "job_finished"]);
      // Its one slot: taken by the cancelled job's lease until its end before the fix (429).
      await reservesTaskOf(post, token, queue, b.id);
    });

    it("when the API sees the job gone from its list of jobs, without an answer of the lease", async () => {
      const queue = "over-unanswered";
      const { post, b } = await cancelledWhileLeased(queue);
      await reservesTaskOf(post, otherToken, queue, b.id);
    });
  });

  /**
   * Two instances of the API (two runtimes, one receipt secret): a lease taken
   * through one holds the queue's permit in that one's process; its heartbeat
   * or its answer may come through the other.
   */
  describe("a lease taken through one instance, heartbeated or answered through another", () => {
    const secret = "a-receipt-secret-shared-by-both-instances";
    const instance = (rt: Runtime) => {
      const api = createHttpApi(rt, {
        tokens: { [token]: "remote", [otherToken]: "other" },
        receiptSecret: secret,
      });
      return async (as: string, path: string, body: unknown) => {
        const response = await api.fetch(
          new Request(`http://api${path}`, {
            method: "POST",
            headers: { authorization: `Bearer ${as}`, "content-type": "application/json" },
            body: JSON.stringify(body),
          }),
        );
        return {
          status: response.status,
          json: (await response.json()) as {
            tasks?: Array<{ job_id: string; receipt: string; index: number }>;
            receipts?: Array<{ status: string; receipt?: string }>;
          },
        };
      };
    };
    /** A queue of `maxConcurrency: 1`, a job of two tasks, and its first task leased through `one`. */
    const leasedThroughOne = async (queue: string, ackWaitMs: number) => {
      const [admin, rtOne, rtTwo] = [
        await runtime(`admin-${queue}`),
        await runtime(`one-${queue}`),
        await runtime(`two-${queue}`),
      ];
      await admin.queues.configure(queue, { maxConcurrency: 1 });
      const [one, two] = [instance(rtOne), instance(rtTwo)];
      const job = await admin.jobs.submit({ queue, tasks: [0, 1], ackWaitMs });
      const reserved = await one(token, `/queues/${queue}/tasks`, { batch_size: 2 });
      expect(reserved.json.tasks).toHaveLength(1);
      return { admin, one, two, job, leased: reserved.json.tasks![0]! };
    };

    it("heartbeats through the other instance keep the queue's one permit held past the first lease end", async () => {
      const queue = "beat-elsewhere";
      const ackWaitMs = 1500;
      const { one, two, job, leased } = await leasedThroughOne(queue, ackWaitMs);
      // The ledger: this test holds one task, its lease kept by heartbeats; no other may be leased
      // meanwhile, through either instance (before the fix: the holder's instance gave the permit
      // back at the first lease end, and the job's other task was leased, two running at a cap of 1).
      let receipt = leased.receipt;
      const until = Date.now() + 3 * ackWaitMs;
      let pulling = true;
      const beats = (async () => {
        while (pulling) {
          const beat = await two(token, `/jobs/${job.id}/heartbeat`, { receipts: [receipt] });
          expect(beat.json.receipts?.[0]?.status).toBe("extended");
          receipt = beat.json.receipts![0]!.receipt!;
          await delay(ackWaitMs / 5);
        }
      })();
      // Each pull waits up to 1 s for the permit: a few pulls through each instance.
      const others = [];
      while (Date.now() < until)
        for (const via of [one, two])
          others.push(
            ...((await via(otherToken, `/queues/${queue}/tasks`, { batch_size: 1 })).json.tasks ?? []),
          );
      pulling = false;
      await beats;
      expect(others, "a second task leased at a cap of 1").toEqual([]);
      const answered = await two(token, `/jobs/${job.id}/results`, { results: [{ receipt, result: 0 }] });
      expect(answered.status).toBe(200);
    });

    it("an answer through the other instance of a job cancelled meanwhile (410) gives the permit back", async () => {
      const queue = "cancelled-elsewhere";
      const { two, job, leased, admin } = await leasedThroughOne(queue, 600_000);
      expect(await job.cancel("operator")).toMatchObject({ status: "failed" });
      const next = await admin.jobs.submit({ queue, tasks: [0] });
      const answered = await two(token, `/jobs/${job.id}/results`, {
        results: [{ receipt: leased.receipt, result: 0 }],
      });
      expect(answered.status).toBe(410);
      // Through the instance that does not hold it (before the fix: held by the other to the lease's end).
      await waitUntil(
        async () =>
          (await two(otherToken, `/queues/${queue}/tasks`, { batch_size: 1 })).json.tasks?.[0]?.job_id ===
          next.id,
        { timeoutMs: 5000, intervalMs: 50, message: "the next job's task leased" },
      );
    });

    it("an answer through the other instance gives the permit back at once, not at the lease end", async () => {
      const queue = "answer-elsewhere";
      const { two, job, leased } = await leasedThroughOne(queue, 600_000);
      const answered = await two(token, `/jobs/${job.id}/results`, {
        results: [{ receipt: leased.receipt, result: 0 }],
      });
      expect(answered.status).toBe(200);
      // The job's other task, leased within 5 s (before the fix: the permit came back in 10 min).
      await waitUntil(
        async () => {
          const next = await two(otherToken, `/queues/${queue}/tasks`, { batch_size: 1 });
          return next.json.tasks?.[0]?.index === 1;
        },
        { timeoutMs: 5000, intervalMs: 50, message: "the job's second task leased" },
      );
    });
  });
});
