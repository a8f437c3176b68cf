/**
 * A receipt from before the server came back empty, posted once the job's
 * key was submitted again: the same job id, another submit (`madeAgain`).
 * The receipt's delivery went with the store; its ack subject names the
 * queue's tasks stream and the job's consumer (or the lane), both made
 * again, counting their sequences from 1 again. Taken, its answer was
 * stored as the new job's task of that index, and its ack by the old
 * sequence ended the new job's delivery at that sequence, held by another
 * worker. The oracles, read past the API: the results stored on the server
 * (raw), every publish to the tasks stream's ack subjects (a subscription
 * of the test's own), and the deliveries the server still counts
 * unanswered. A receipt as version 2 signed it (no submit named: one from
 * before the upgrade) is taken for the record's submit, and signed anew as
 * it was.
 */
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ReceiptClaims, ReceiptSigner } from "../../src/adapters/http/receipts.ts";
import { laneConsumer } from "../../src/adapters/names.ts";
import { createHttpApi, createRuntime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { postJson } from "../harness/http-server.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { ackSubjects, unansweredDeliveries } from "../harness/raw-consumers.ts";
import { rawJobRecord } from "../harness/raw-job-records.ts";
import { natsRawResults, tally } from "../harness/raw-results.ts";
import { waitUntil } from "../harness/wait.ts";

const OLD = "token-alice-0123456789";
const NEW = "token-bob-0123456789ab";

const SECRET = "a-receipt-secret-of-at-least-32-bytes";
const signer = new ReceiptSigner(SECRET);

/** The receipt as version 2 signed it, naming no submit: one issued before the upgrade to version 3. */
const asVersion2 = (receipt: string): string => {
  const { s: _submit, ...claims } = signer.verify(receipt) ?? {};
  return signer.sign({ ...(claims as ReceiptClaims), v: 2 });
};

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

/** `ackSubjects` on a client of its own, each publish with its subject. */
const acksOn = async (servers: string, queue: string) => {
  const nc = await connect({ servers, name: "raw-acks" });
  const { seen } = await ackSubjects(nc, queue, (m) => `${m.string()} ${m.subject}`);
  return { seen, flush: () => nc.flush(), close: () => nc.close() };
};

describe("a receipt of a job's submit from before the server came back empty", () => {
  let server: NatsServerHandle;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server?.dispose();
  });

  for (const lane of [false, true])
    it(`${lane ? "lane" : "own consumer"}: posted once the key was submitted again, it answers nothing of the new job`, async () => {
      const s = await createRuntime(options(server, lane));
      const b = await createRuntime(options(server, lane));
      const queue = `resubmitted_${lane}`;
      const api = createHttpApi(s, { tokens: { [OLD]: "alice", [NEW]: "bob" }, receiptSecret: SECRET });
      const call = (token: string, path: string, body: unknown) => postJson(api, token, path, body);
      const reserve = async (token: string, jobId: string) => {
        const path = lane ? `/queues/${queue}/tasks` : `/jobs/${jobId}/tasks`;
        const tasks: Task[] = [];
        await waitUntil(
          async () => {
            const res = await call(token, path, { batch_size: 3 });
            if (res.status === 200) tasks.push(...(res.json.tasks as Task[]));
            return tasks.length === 3;
          },
          { timeoutMs: 20_000, intervalMs: 200, message: () => `three tasks reserved (${tasks.length})` },
        );
        return tasks.sort((x, y) => x.index - y.index);
      };
      const consumer = (id: string) => (lane ? laneConsumer : id);
      const request = {
        queue,
        tasks: [0, 1, 2],
        idempotencyKey: "again",
        stallAfterMs: 60_000,
      };
      let acks: Awaited<ReturnType<typeof acksOn>> | undefined;
      let raw: Awaited<ReturnType<typeof connect>> | undefined;
      try {
        const old = await s.jobs.submit(request);
        const oldTasks = await reserve(OLD, old.id);
        const oldSubmit = (await rawJobRecord(server.url, old.id))?.submitId;

        await server.restartEmpty();
        const again = await b.jobs.submit(request);
        expect(again.id).toBe(old.id);
        const newSubmit = (await rawJobRecord(server.url, again.id))?.submitId;
        expect(newSubmit).not.toBe(oldSubmit);
        // The new job's tasks held by another worker, at the sequences the old ones had.
        const newTasks = await reserve(NEW, again.id);
        expect(await unansweredDeliveries(server.url, queue, consumer(again.id))).toBe(3);

        acks = await acksOn(server.url, queue);
        raw = await connect({ servers: server.url, name: "raw-results" });
        const stale = (oldTasks[0] as Task).receipt;
        const told: unknown[] = [];
        for (const receipt of [stale]) {
          const answered = await call(OLD, `/jobs/${old.id}/results`, {
            results: [{ receipt, result: "from the lost job" }],
          });
          const kept = await call(OLD, `/jobs/${old.id}/heartbeat`, { receipts: [receipt] });
          told.push(answered, kept);
        }
        // A round trip on the acks' connection: whatever the server took before has reached it.
        await acks.flush();
        // Nothing sent to the new job's deliveries, nothing stored as its results.
        expect(acks.seen).toEqual([]);
        expect(await natsRawResults(raw, queue, again.id)).toEqual([]);
        expect(await unansweredDeliveries(server.url, queue, consumer(again.id))).toBe(3);
        // Told its lease is over, as any stale receipt is.
        const expired = (key: string) => ({
          status: 410,
          json: { error: { code: "lease_expired", [key]: [{ status: "expired" }] } },
        });
        expect(told).toMatchObject([expired("results"), expired("receipts")]);

        // A version 2 receipt (from before the upgrade) is taken for the job's own: kept, and
        // signed anew as version 2.
        const [first, second, third] = newTasks as [Task, Task, Task];
        const renewed = await call(NEW, `/jobs/${again.id}/heartbeat`, {
          receipts: [asVersion2(second.receipt)],
        });
        expect(renewed).toMatchObject({ status: 200, json: { receipts: [{ status: "extended" }] } });
        const fresh = (renewed.json.receipts as [{ receipt: string }])[0].receipt;
        expect(signer.verify(fresh)).toMatchObject({ v: 2, i: second.index });
        expect(signer.verify(fresh)?.s).toBeUndefined();

        // The new job's worker answers all three: each stored once, its own.
        const mine = await call(NEW, `/jobs/${again.id}/results`, {
          results: [first.receipt, fresh, third.receipt].map((receipt, n) => ({
            receipt,
            result: `new ${n}`,
          })),
        });
        expect(mine.status).toBe(200);
        expect(mine.json.results).toMatchObject([{ status: "done" }, { status: "done" }, { status: "done" }]);
        const stored = await natsRawResults(raw, queue, again.id);
        expect([...tally(stored.map((e) => e.i)).entries()].sort()).toEqual([
          [0, 1],
          [1, 1],
          [2, 1],
        ]);
        expect(stored.every((e) => e.ok)).toBe(true);
      } finally {
        await acks?.close();
        await raw?.close();
        await b.stop();
        await s.stop();
      }
    }, 120_000);
});
