/**
 * A worker's runtime stopped while the worker puts back what it holds on
 * its last delivery (its queue paused, a rolling deploy of a `maxDeliver: 1`
 * job). On NATS a put-back first waits out the closed loops' pull requests
 * (3.5 s), longer than this worker's `stopTimeoutMs`: the worker's stop
 * waits for it all the same, so the copies are stored before the runtime
 * closes its connection. Had the stop ended at `stopTimeoutMs`, the runtime
 * would close the connection under the put-backs, their copies never stored,
 * and every task held would die unrun.
 *
 * The oracle is the handlers' own ledger (each task's runs) and the job's
 * end as its supervisor, another runtime, counts it.
 */
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/index.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const TASKS = 40;
const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

describe("a worker's runtime stopped while the worker puts back its last deliveries (nats)", () => {
  let server: NatsServerHandle;
  let supervisor: Runtime;
  beforeAll(async () => {
    server = await startNatsServer();
    supervisor = await createRuntime({ servers: server.url, logger });
    await supervisor.admin.provision(["deploy"]);
  });
  afterAll(async () => {
    await supervisor?.stop();
    await server?.dispose();
  });

  it("stores the copies before the connection closes, past stopTimeoutMs: only the tasks cut off die", async () => {
    const runs = new Map<number, string[]>();
    const ran = (index: number, by: string) => runs.set(index, [...(runs.get(index) ?? []), by]);
    const job = await supervisor.jobs.submit<number, number>({
      queue: "deploy",
      tasks: Array.from({ length: TASKS }, (_, n) => n),
      maxDeliver: 1,
    });
    // The put-backs the worker logs once their copies are stored.
    const putBack: number[] = [];
    const leavingLog = pino(
      { level: "debug" },
      {
        write: (line: string) => {
          const entry = JSON.parse(line) as { msg?: string; seq?: number };
          if (entry.msg?.startsWith("task on its last delivery put back")) putBack.push(entry.seq ?? -1);
        },
      },
    );
    const leaving = await createRuntime({
      servers: server.url,
      logger: leavingLog,
      jobs: { takeOver: false },
    });
    let started = 0;
    const worker = leaving.workers.start<number, number>({
      queue: "deploy",
      concurrency: 2,
      // Shorter than the put-back's wait for the closed loops (3.5 s): the two handlers, which
      // run until the stop gives up on them, are cut off (they die, as any task cut off).
      stopTimeoutMs: 500,
      handler: async (task, { signal }) => {
        ran(task.index, "leaving");
        started++;
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        return task.index;
      },
    });
    await waitUntil(() => started >= 2, { timeoutMs: 15_000, message: "two handlers run" });
    await supervisor.queues.pause("deploy");
    // Heard: what it pulled meets the paused gate, and is put back as the worker stops.
    await waitUntil(() => worker.stats().paused, { timeoutMs: 10_000, message: "the pause heard" });
    const cutOff = [...runs.keys()];
    // The runtime's stop stops the worker, then closes the connection.
    await leaving.stop();
    // It held tasks on their last delivery, and put them back (their copies stored) before the stop returned.
    expect(putBack.length).toBeGreaterThan(0);

    await supervisor.queues.resume("deploy");
    const next = supervisor.workers.start<number, number>({
      queue: "deploy",
      concurrency: 4,
      handler: (task) => {
        ran(task.index, "next");
        return task.index;
      },
    });
    try {
      const end = await Promise.race([job.done(), delay(30_000).then(() => undefined)]);
      const unrun = Array.from({ length: TASKS }, (_, n) => n).filter((n) => !runs.has(n));
      expect(cutOff).toHaveLength(2);
      expect(unrun, "never run").toEqual([]);
      expect(end).toMatchObject({ status: "failed", done: TASKS - 2, dead: 2 });
      expect([...runs].filter(([n, r]) => !cutOff.includes(n) && r.join() !== "next")).toEqual([]);
    } finally {
      await next.stop();
    }
  }, 90_000);
});
