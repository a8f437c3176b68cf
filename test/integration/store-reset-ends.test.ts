/**
 * A job that ends after its server came back with an empty store: the end
 * every runtime tells is the one the new store records. Runtime S supervises
 * the job and runs its worker; runtime O (no takeover) watches it with a
 * `get()` and reads `events()`. The oracles: the handlers' own ledger and the
 * record read raw from the new store, never a runtime's view of itself.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { whenAborted } from "../../src/kernel/signals.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { rawJobRecord } from "../harness/raw-job-records.ts";
import { delay, gate, waitUntil, within } from "../harness/wait.ts";

const options = (server: NatsServerHandle, takeOver: boolean) => ({
  servers: server.url,
  logger: silentLogger(),
  connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
  jobs: { leaseMs: 2000, cleanupIntervalMs: 0, takeOver },
});

/** How a job ended, as one line: `status: reason`. */
const endOf = (end: { status: string; reason?: string | null } | "never" | undefined) =>
  end === undefined || end === "never" ? String(end) : `${end.status}: ${end.reason ?? ""}`;

describe("a job's end after the server came back with an empty store", () => {
  let server: NatsServerHandle;
  let s: Runtime;
  let o: Runtime;
  beforeAll(async () => {
    server = await startNatsServer();
    s = await createRuntime(options(server, true));
    o = await createRuntime(options(server, false));
  });
  afterAll(async () => {
    await o?.stop();
    await s?.stop();
    await server?.dispose();
  });

  const storedEnd = (id: string) => rawJobRecord(server.url, id);

  for (const tasks of [[1], [1, 2]])
    it(`${tasks.length}-task job answered after the reset: its end is stored, a watcher and an events reader hear it`, async () => {
      const queue = `answered${tasks.length}`;
      const ledger = new Map<number, number>();
      const held = gate();
      const worker = s.workers.start<number, number>({
        queue,
        concurrency: 4,
        handler: async (task, ctx) => {
          ledger.set(task.index, (ledger.get(task.index) ?? 0) + 1);
          await Promise.race([held.opened, whenAborted(ctx.signal)]);
          return task.payload;
        },
      });
      const events: string[] = [];
      const reading = new AbortController();
      const read = (async () => {
        for await (const e of o.jobs.events({ queue, signal: reading.signal }))
          events.push(`${e.jobId}:${e.type}`);
      })();
      try {
        const job = await s.jobs.submit({ queue, tasks, stallAfterMs: 1000 });
        await waitUntil(() => ledger.size === tasks.length, {
          timeoutMs: 20_000,
          message: "every task held",
        });
        const watched = await o.jobs.get(job.id);
        expect(watched?.snapshot().status).toBe("running");
        await server.restartEmpty();
        // The handlers answer into the new store.
        held.open();
        expect(await within(job.done(), 30_000)).toMatchObject({ status: "succeeded" });
        expect([...ledger.values()]).toEqual(tasks.map(() => 1));
        expect(await storedEnd(job.id)).toMatchObject({ status: "succeeded" });
        expect(endOf(await within(watched!.done(), 30_000))).toBe("succeeded: ");
        await waitUntil(() => events.includes(`${job.id}:succeeded`), {
          timeoutMs: 10_000,
          message: "the end in another runtime's events",
        });
        await delay(500);
        expect(events.filter((e) => e === `${job.id}:succeeded`)).toHaveLength(1);
      } finally {
        reading.abort();
        await read.catch(() => undefined);
        await worker.stop();
      }
    }, 120_000);

  for (const tasks of [[1], [1, 2, 3, 4]])
    it(`${tasks.length}-task job cancelled from another runtime while the server comes back empty: every answer is the end stored`, async () => {
      const queue = `cancelled${tasks.length}`;
      let started = 0;
      const worker = s.workers.start<number, number>({
        queue,
        concurrency: 2,
        handler: async (task, ctx) => {
          started++;
          await whenAborted(ctx.signal);
          return task.payload;
        },
      });
      try {
        const job = await s.jobs.submit({ queue, tasks, stallAfterMs: 4000 });
        await waitUntil(() => started >= 1, { timeoutMs: 20_000, message: "a task held" });
        const watched = (await o.jobs.get(job.id))!;
        await server.stop();
        const cancelled = within(watched.cancel("stop it"), 60_000);
        await delay(1000);
        await server.restartEmpty();
        const answer = endOf(await cancelled);
        const supervisor = endOf(await within(job.done(), 30_000));
        const watcher = endOf(await within(watched.done(), 30_000));
        const stored = await storedEnd(job.id);
        expect(stored).toBeDefined();
        expect({ answer, supervisor, watcher }).toEqual({
          answer: endOf(stored),
          supervisor: endOf(stored),
          watcher: endOf(stored),
        });
      } finally {
        await worker.stop();
      }
    }, 150_000);
});
