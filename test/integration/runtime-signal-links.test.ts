/**
 * On Node 20 every `AbortSignal.any` leaves a weak reference in each of its
 * sources' signals, never pruned (~85 bytes). A runtime on NATS joined its
 * stop signal with a signal of the caller's for every operation given one
 * (a submit's task publish: one a job), and with a reader's for every
 * `results()` that read the stream and every `onProgress`; a worker of a
 * limited queue joined its own signal with the gate's for every task that
 * waited for a permit; each `rt.jobs.events()` reader joined it with the
 * reader's own end and its caller's signal. Oracle: the composites made while jobs run, read from
 * the platform call itself, and how many of them each source signal feeds.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { PermanentError } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { composites } from "../harness/signal-composites.ts";

const platformAny = AbortSignal.any;

describe("the signals a runtime on NATS joins per job", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  beforeAll(async () => {
    server = await startNatsServer();
    rt = await createRuntime({
      servers: server.url,
      logger: silentLogger(),
      roles: ["admin", "submitter", "supervisor", "worker"],
    });
  });
  afterEach(() => {
    AbortSignal.any = platformAny;
  });
  afterAll(async () => {
    await rt?.stop();
    await server?.dispose();
  });

  it("submits, done(), results() of failed jobs and onProgress feed no signal once per job", async () => {
    const worker = rt.workers.start<number, number>({
      queue: "links",
      handler: (task) => {
        if (task.index === 1) throw new PermanentError("no");
        return task.payload * 2;
      },
    });
    const jobs = 40;
    // One job first: the queue's streams, feed and loops are set up once, not counted.
    await (await rt.jobs.submit({ queue: "links", tasks: [0] })).done();
    const answers: unknown[] = [];
    const fed = await composites(async () => {
      for (let n = 0; n < jobs; n++) {
        const job = await rt.jobs.submit<number, number>({ queue: "links", tasks: [n, n] });
        const stop = job.onProgress(() => undefined);
        expect((await job.done()).status).toBe("failed");
        stop();
        // A failed job's results() reads the stream.
        for await (const r of job.results()) answers.push(r.ok ? r.result : r.error);
      }
    });
    await worker.stop();
    expect(answers).toHaveLength(2 * jobs);
    expect(Math.max(0, ...fed)).toBeLessThan(jobs);
  });

  it("a worker's tasks waiting for a limited queue's permits feed no signal once per task", async () => {
    await rt.queues.configure("limited", { maxConcurrency: 2 });
    const worker = rt.workers.start<number, number>({
      queue: "limited",
      concurrency: 8,
      handler: (t) => t.payload,
    });
    await (await rt.jobs.submit({ queue: "limited", tasks: [0] })).done();
    const tasks = 60;
    const fed = await composites(async () => {
      expect(
        (
          await (
            await rt.jobs.submit({ queue: "limited", tasks: Array.from({ length: tasks }, (_, i) => i) })
          ).done()
        ).done,
      ).toBe(tasks);
    });
    await worker.stop();
    expect(Math.max(0, ...fed)).toBeLessThan(tasks / 2);
  });

  it("delayed jobs submitted one after another feed no signal once per job", async () => {
    // Each job's queue is followed by the runtime's movers while the job lives, then let go.
    const worker = rt.workers.start<number, number>({ queue: "links_later", handler: (t) => t.payload });
    await (await rt.jobs.submit({ queue: "links_later", tasks: [0], delayMs: 1 })).done();
    const jobs = 12;
    const fed = await composites(async () => {
      for (let n = 0; n < jobs; n++)
        expect(
          (await (await rt.jobs.submit({ queue: "links_later", tasks: [n], delayMs: 1 })).done()).done,
        ).toBe(1);
    });
    await worker.stop();
    expect(Math.max(0, ...fed)).toBeLessThan(jobs);
  });

  it("rt.jobs.events() readers opened and closed feed no signal once per reader", async () => {
    const readers = 30;
    const fed = await composites(async () => {
      for (let n = 0; n < readers; n++) {
        const events = rt.jobs.events({ queue: "links", signal: new AbortController().signal });
        await events.ready;
        await events.return?.();
      }
    });
    expect(Math.max(0, ...fed)).toBeLessThan(readers);
  });
});
