/**
 * A keyed job lost with the server's store (it came back empty) and
 * submitted again under its key from another runtime: the lost job's actor
 * ends, and neither it nor a handle of it writes onto the new job's record
 * or cleans the new job up. The oracles: the new job's record read raw, and
 * its handler's ledger of the answers it gave.
 */
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { whenAborted } from "../../src/kernel/signals.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { rawJobRecord } from "../harness/raw-job-records.ts";
import { delay, gate, waitUntil, within } from "../harness/wait.ts";

const options = (server: NatsServerHandle, lane: boolean) => ({
  servers: server.url,
  logger: process.env.LOG_LEVEL ? pino({ level: process.env.LOG_LEVEL }) : silentLogger(),
  connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
  jobs: { leaseMs: 2000, cleanupIntervalMs: 0, lane },
});

describe("a keyed job submitted again after the server came back empty", () => {
  let server: NatsServerHandle;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server?.dispose();
  });

  const stored = (id: string) => rawJobRecord(server.url, id);

  for (const lane of [true, false])
    it(`${lane ? "lane" : "own consumer"}: the lost job's actor ends nothing of the new job`, async () => {
      const s = await createRuntime(options(server, lane));
      const b = await createRuntime(options(server, lane));
      const queue = `again_${lane}`;
      let phase = 1;
      const oldHeld = gate();
      const held = gate();
      const late = gate();
      const after: string[] = [];
      const worker = s.workers.start<number, number>({
        queue,
        concurrency: 6,
        handler: async (task, ctx) => {
          if (phase === 1) {
            if (task.index >= 2) await Promise.race([oldHeld.opened, whenAborted(ctx.signal)]);
            return task.payload;
          }
          after.push(`start:${task.index}`);
          await Promise.race([(task.index < 2 ? late : held).opened, whenAborted(ctx.signal)]);
          // Handed back (a worker that followed the lost job gives its tasks back once it hears
          // the new record): run again, answered then.
          if (ctx.signal.aborted) throw new Error("handed back");
          after.push(`done:${task.index}`);
          return task.payload;
        },
      });
      try {
        const request = { queue, tasks: [0, 1, 2, 3], idempotencyKey: "again", stallAfterMs: 60_000 };
        const old = await s.jobs.submit(request);
        await waitUntil(() => old.snapshot().done === 2, { timeoutMs: 20_000, message: "two answered" });
        await server.restartEmpty();
        phase = 2;
        const again = await b.jobs.submit(request);
        expect(again.id).toBe(old.id);
        const submitId = (await stored(again.id))?.submitId;
        // The lost job's actor hears the new record and ends, though the new job has answered
        // nothing and its supervisor (b) holds the lease.
        expect(await within(old.done(), 15_000)).toMatchObject({
          status: "failed",
          reason: expect.stringContaining("submitted again"),
        });
        held.open();
        const answered = () => after.filter((e) => e.startsWith("done:"));
        await waitUntil(() => answered().length >= 2, {
          timeoutMs: 30_000,
          message: () => `the new job's 2 and 3 answered (${after.join(" ")})`,
        });
        // Its lease given back: s, where the lost job's actor ran, takes the new job over.
        await b.stop();
        await delay(1000);
        // The oracle: the new job's answers as its handler gave them, against the record raw
        // (its progress is written up to a second late: never more than answered).
        const mid = await stored(again.id);
        expect(mid).toMatchObject({ submitId, status: "running" });
        expect(mid!.counts.done).toBeLessThanOrEqual(answered().length);
        // A handle of the lost job cancels nothing of the new one.
        await old.cancel("a handle of the lost job");
        expect(await stored(again.id)).toMatchObject({ submitId, status: "running" });
        late.open();
        const followed = await s.jobs.get(again.id);
        expect(await within(followed!.done(), 30_000)).toMatchObject({ status: "succeeded", done: 4 });
        expect(await stored(again.id)).toMatchObject({ submitId, status: "succeeded", counts: { done: 4 } });
        expect(answered().sort()).toEqual(["done:0", "done:1", "done:2", "done:3"]);
      } finally {
        oldHeld.open();
        held.open();
        late.open();
        await worker.stop();
        await b.stop();
        await s.stop();
      }
    }, 120_000);
});
