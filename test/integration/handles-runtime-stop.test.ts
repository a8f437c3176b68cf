/**
 * What a process's handles of a job it did not submit do when that process's
 * runtime stops: a `results()` reader ends (it waited for good when its
 * catch-up had not read the stream yet), and a `subscribe()` listener hears
 * what the handle shows then (it heard nothing once the job's actor stopped).
 * The oracles: the iterator's settling, and the listener's own ledger of calls.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { PermanentError } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, gate, waitUntil, within } from "../harness/wait.ts";

const options = (server: NatsServerHandle) => ({
  servers: server.url,
  logger: silentLogger(),
  connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
  jobs: { cleanupIntervalMs: 0 },
});

describe("handles of a job in a runtime that stops", () => {
  let server: NatsServerHandle;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server?.dispose();
  });

  it("results() of a job over, its stream not read yet, ends once the runtime stops", async () => {
    const a = await createRuntime(options(server));
    const b = await createRuntime(options(server));
    try {
      const worker = a.workers.start<number, number>({
        queue: "stop_results",
        handler: (task) => {
          // A failure: results() then reads the stream, not what the job's actor kept.
          if (task.index === 1) throw new PermanentError("no");
          return task.payload;
        },
      });
      const job = await a.jobs.submit({ queue: "stop_results", tasks: [1, 2, 3] });
      expect((await job.done()).status).toBe("failed");
      await worker.stop();
      const handle = await b.jobs.get(job.id);
      expect((await handle!.done()).status).toBe("failed");
      // Its reader cannot read the stream: no server. It waits for its catch-up.
      await server.stop();
      const next = handle!.results()[Symbol.asyncIterator]().next();
      const settled = next.then(
        () => "settled",
        () => "settled",
      );
      expect(await Promise.race([settled, delay(500).then(() => "waiting")])).toBe("waiting");
      await b.stop();
      expect(await within(settled, 5000), "the reader ends with its runtime").toBe("settled");
    } finally {
      await server.restart();
      await b.stop();
      await a.stop();
    }
  }, 60_000);

  it("subscribe() to a running job hears what the handle shows once the runtime stops", async () => {
    const a = await createRuntime(options(server));
    const b = await createRuntime(options(server));
    const held = gate();
    try {
      const worker = a.workers.start<number, number>({
        queue: "stop_subscribe",
        handler: async (task) => {
          if (task.index > 0) await held.opened;
          return task.payload;
        },
      });
      const job = await a.jobs.submit({ queue: "stop_subscribe", tasks: [1, 2] });
      const handle = await b.jobs.get(job.id);
      const heard: string[] = [];
      handle!.subscribe((s) => heard.push(`${s.status}:${s.done}`));
      await waitUntil(() => heard.includes("running:1"), {
        timeoutMs: 10_000,
        message: "the first answer heard",
      });
      // Quiet: nothing more to hear while the job waits for its second answer.
      await delay(1500);
      const before = heard.length;
      await b.stop();
      await waitUntil(() => heard.length > before, { timeoutMs: 2000, message: "a last update at stop" });
      expect(heard.slice(before)).toEqual(["running:1"]);
      held.open();
      await worker.stop();
    } finally {
      held.open();
      await b.stop();
      await a.stop();
    }
  }, 60_000);
});
