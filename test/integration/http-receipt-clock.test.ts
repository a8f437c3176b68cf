/**
 * Two instances of the HTTP pull API behind a load balancer, their hosts'
 * clocks a minute apart: a worker reserves a task through one (A), the
 * task's lease runs out on the server, which hands the task to another
 * worker, and the first worker's heartbeat and result then reach the other
 * instance (B). Judged by the clocks alone, B took the receipt as live: it
 * extended the delivery and acked it, by its stream sequence, ending the
 * second worker's delivery and storing the first's result in its place.
 * The oracles are the server's, read through a connection of the test's
 * own: the consumer's deliveries, every publish to the tasks stream's ack
 * subjects, the results stored.
 */
import {
  type ConsumerInfo,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstreamManager,
} from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerNames } from "../../src/adapters/names.ts";
import { createHttpApi, createRuntime, type Runtime } from "../../src/index.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { offsetBy } from "../harness/clock-backends.ts";
import { postOverWire as post, type ServedApp, serveOnLoopback } from "../harness/http-server.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { ackSubjects } from "../harness/raw-consumers.ts";
import { natsRawResults } from "../harness/raw-results.ts";
import { waitUntil } from "../harness/wait.ts";

const ALICE = "token-alice-0123456789";
const BOB = "token-bob-0123456789ab";
const SECRET = "a-receipt-secret-of-at-least-32-bytes";
const minute = 60_000;

interface Task {
  readonly receipt: string;
  readonly attempt: number;
}

describe("a receipt posted to an instance whose clock disagrees with the one that leased it", () => {
  let server: NatsServerHandle;
  let raw: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    raw = await connect({ servers: server.url, name: "raw-oracle" });
  });
  afterAll(async () => {
    await raw?.close();
    await server?.dispose();
  });

  const cases = [
    { name: "the leasing instance's clock a minute ahead", a: minute, b: 0 },
    { name: "the answering instance's clock a minute behind", a: 0, b: -minute },
  ];
  for (const [n, skew] of cases.entries())
    it(`${skew.name}: a receipt past its lease on the server settles nothing`, async () => {
      const queue = `skewed${n}`;
      const runtimes: Runtime[] = [];
      const apps: ServedApp[] = [];
      const instance = async (name: string, offsetMs: number) => {
        const rt = await createRuntime({
          servers: server.url,
          name,
          logger: silentLogger(),
          clock: offsetBy(offsetMs),
          jobs: { lane: false, cleanupIntervalMs: 0 },
        });
        runtimes.push(rt);
        const tokens = { [ALICE]: "alice", [BOB]: "bob" };
        const app = await serveOnLoopback(createHttpApi(rt, { tokens, receiptSecret: SECRET }).fetch);
        apps.push(app);
        return { rt, app };
      };
      let acks: Awaited<ReturnType<typeof ackSubjects>> | undefined;
      try {
        const a = await instance("a", skew.a);
        const b = await instance("b", skew.b);
        const job = await a.rt.jobs.submit({
          queue,
          tasks: ["work"],
          // Room for Bob's lease to outlast Alice's posts and the reads between on a loaded machine.
          ackWaitMs: 4000,
          maxDeliver: 5,
          stallAfterMs: minute,
        });
        const consumer = async (): Promise<ConsumerInfo> =>
          (await jetstreamManager(raw)).consumers.info(brokerNames("jetstate").tasksStream(queue), job.id);
        const reserve = async (token: string): Promise<Task> => {
          let got: Task | undefined;
          await waitUntil(
            async () => {
              const res = await post(a.app, token, `/jobs/${job.id}/tasks`, { batch_size: 1 });
              got = (res.json.tasks as Task[] | undefined)?.[0];
              return got !== undefined;
            },
            { timeoutMs: 30_000, intervalMs: 200, message: `a task reserved by ${token}` },
          );
          return got as Task;
        };
        const alice = await reserve(ALICE);
        // Alice's lease runs out on the server: the task is delivered again, to Bob.
        const bob = await reserve(BOB);
        const handedOver = await consumer();
        expect([alice.attempt, bob.attempt]).toEqual([1, 2]);
        expect([handedOver.delivered.consumer_seq, handedOver.num_ack_pending]).toEqual([2, 1]);

        acks = await ackSubjects(raw, queue);
        // Alice, late, through the other instance: her heartbeat, then her result.
        const beat = await post(b.app, ALICE, `/jobs/${job.id}/heartbeat`, { receipts: [alice.receipt] });
        const answer = await post(b.app, ALICE, `/jobs/${job.id}/results`, {
          results: [{ receipt: alice.receipt, result: "alice's" }],
        });
        await raw.flush();
        // Acked, the job's only task was done: the job ended and its consumer went with it.
        const stillHeld = await consumer().catch((error: unknown) => {
          if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.ConsumerNotFound)
            return { num_ack_pending: "consumer gone" };
          throw error;
        });
        expect({
          heartbeat: beat.status,
          answer: answer.status,
          sent: [...acks.seen],
          bobsDeliveryUnanswered: stillHeld.num_ack_pending ?? 0,
        }).toEqual({ heartbeat: 410, answer: 410, sent: [], bobsDeliveryUnanswered: 1 });
        expect(beat.json).toMatchObject({
          error: { code: "lease_expired", receipts: [{ status: "expired" }] },
        });
        expect(answer.json).toMatchObject({
          error: { code: "lease_expired", results: [{ status: "expired" }] },
        });

        // Bob's answer is the task's, stored once and acked once (Alice's, stored, would be here too).
        const bobs = await post(a.app, BOB, `/jobs/${job.id}/results`, {
          results: [{ receipt: bob.receipt, result: "bob's" }],
        });
        expect(bobs).toMatchObject({ status: 200, json: { results: [{ status: "done" }] } });
        await raw.flush();
        expect(acks.seen).toEqual(["+ACK"]);
        expect(await natsRawResults(raw, queue, job.id)).toEqual([{ i: 0, ok: true, r: "bob's" }]);
        expect((await job.done()).status).toBe("succeeded");
      } finally {
        acks?.stop();
        for (const app of apps) await app.close();
        for (const rt of runtimes) await rt.stop();
      }
    }, 120_000);
});
