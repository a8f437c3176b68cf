/**
 * A worker holds a receipt of a job from before the server came back empty;
 * the job's key is submitted again (the same job id, another submit), this
 * time not on the lane (another runtime's `jobs.lane`, or the other way
 * round: the same request either way), and the worker reserves the new
 * job's tasks too. It posts both answers in one request, and heartbeats
 * both in one. The merge's rule (architecture.md, "Receipts did not name
 * the job's submit"): a receipt of another submit is a lease that is over,
 * `expired`, "not an error of its own: one request may hold receipts of
 * both submits". Here the old receipt names the lane's consumer, the record
 * the job's own: `#assertDeliveries` refuses the whole request (400
 * `invalid_receipt`) before `ofJobSubmit` is read, and the new job's answer
 * is lost with it (its task waits out its lease), its lease not extended.
 */
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpApi, createRuntime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { postJson } from "../harness/http-server.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

const TOKEN = "token-alice-0123456789";
const SECRET = "a-receipt-secret-of-at-least-32-bytes";

interface Task {
  readonly index: number;
  readonly receipt: string;
}

const options = (server: NatsServerHandle, lane: boolean) => ({
  servers: server.url,
  logger: process.env.LOG_LEVEL ? pino({ level: process.env.LOG_LEVEL }) : silentLogger(),
  connection: { reconnectTimeWaitMs: 100, maxReconnectAttempts: 600 },
  jobs: { lane, cleanupIntervalMs: 0 },
});

describe("one request with receipts of both submits of a key, one on the lane, one not", () => {
  let server: NatsServerHandle;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server?.dispose();
  });

  const where = (lane: boolean) => (lane ? "on the lane" : "with its own consumer");
  // The last pair (no switch) is the control: it passes as merged.
  for (const [oldOnLane, newOnLane] of [
    [true, false],
    [false, true],
    [false, false],
  ] as const)
    it(`lost job ${where(oldOnLane)}, new one ${where(newOnLane)}: the new receipt is answered and kept, the old one expired`, async () => {
      const s = await createRuntime(options(server, oldOnLane));
      const b = await createRuntime(options(server, newOnLane));
      const queue = `switched_${oldOnLane}_${newOnLane}`;
      const api = createHttpApi(s, { tokens: { [TOKEN]: "alice" }, receiptSecret: SECRET });
      const call = (path: string, body: unknown) => postJson(api, TOKEN, path, body);
      const reserve = async (jobId: string, lane: boolean) => {
        const path = lane ? `/queues/${queue}/tasks` : `/jobs/${jobId}/tasks`;
        const tasks: Task[] = [];
        await waitUntil(
          async () => {
            const res = await call(path, { batch_size: 2 });
            if (res.status === 200) tasks.push(...(res.json.tasks as Task[]));
            return tasks.length === 2;
          },
          { timeoutMs: 20_000, intervalMs: 200, message: () => `two tasks reserved (${tasks.length})` },
        );
        return tasks.sort((x, y) => x.index - y.index);
      };
      const request = { queue, tasks: [0, 1], idempotencyKey: "again", stallAfterMs: 60_000 };
      try {
        const old = await s.jobs.submit(request);
        const [oldFirst] = (await reserve(old.id, oldOnLane)) as [Task, Task];

        await server.restartEmpty();
        const again = await b.jobs.submit(request);
        expect(again.id).toBe(old.id);
        const [, newSecond] = (await reserve(again.id, newOnLane)) as [Task, Task];

        const kept = await call(`/jobs/${again.id}/heartbeat`, {
          receipts: [oldFirst.receipt, newSecond.receipt],
        });
        const answered = await call(`/jobs/${again.id}/results`, {
          results: [
            { receipt: oldFirst.receipt, result: "from the lost job" },
            { receipt: newSecond.receipt, result: "new 1" },
          ],
        });
        expect({ kept, answered }).toMatchObject({
          kept: { status: 200, json: { receipts: [{ status: "expired" }, { status: "extended" }] } },
          answered: { status: 200, json: { results: [{ status: "expired" }, { status: "done" }] } },
        });
      } finally {
        await b.stop();
        await s.stop();
      }
    }, 120_000);
});
