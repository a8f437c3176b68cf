/**
 * A task delivered before the server came back empty, answered after it.
 * The server knows a delivery only by the sequences in its ack subject, and
 * a consumer made again under the same name (on a stream made again)
 * counts them from 1 again: an ack or a release of the old delivery landed
 * on the new consumer's task stored at the same sequence, which was then
 * removed unrun or delivered twice at once (seen: a keyed job resubmitted
 * after a reset ran two of its tasks twice, `store-reset-resubmit.test.ts`).
 * The oracle: the new task as the server holds it, read raw, and the
 * server's own redelivery of it after its own lease's release.
 */
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { laneConsumer } from "../../src/adapters/names.ts";
import type { NatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import type { TaskLease } from "../../src/adapters/task-queue.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import {
  eventually,
  Loops,
  newLaneRecord,
  newRecord,
  taskBodies,
  uid,
} from "../contract/contract-helpers.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { unansweredDeliveries } from "../harness/raw-consumers.ts";
import { type RestartableBroker, startRestartableBroker } from "../harness/restartable-broker.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const never = new AbortController().signal;

describe("a task lease from before the server came back empty", () => {
  let server: NatsServerHandle;
  let broker: NatsBroker;
  let started: RestartableBroker | undefined;
  const loops = new Loops();
  beforeAll(async () => {
    started = await startRestartableBroker("reset", logger);
    ({ server, broker } = started);
  });
  afterAll(async () => {
    loops.abortAll();
    await started?.dispose();
  });

  /** Its task stored and, for a job of its own, its consumer made: the commit point. */
  const open = async (record: JobRecord) => {
    await broker.createRecord(record);
    await broker.publishTasks(record, taskBodies(1), never);
    if (!record.lane) await broker.createConsumer(record.queue, record.id, record.settings);
  };

  const unanswered = (queue: string, consumer: string) => unansweredDeliveries(server.url, queue, consumer);

  for (const lane of [true, false])
    it(`${lane ? "lane" : "own consumer"}: acked after the reset, it answers nothing of the new task at its sequence`, async () => {
      const queue = uid("q");
      // The same job id both times (a keyed job made again): a job's own consumer is named by it.
      const old = lane ? newLaneRecord(queue) : { ...newRecord(1, 30_000), queue };
      await open(old);
      const first = lane ? loops.consumeLane(broker, queue) : loops.consume(broker, old);
      await eventually(() => first.leases.length === 1, "the old task delivered");
      const stale = first.leases[0] as TaskLease;

      await server.restartEmpty();
      // The lane's loop goes on through the reset; a job's own loop ends with its consumer.
      if (!lane) expect(await first.ended).toBe("gone");
      await open({ ...old, submitId: uid("s") });
      const worker = lane ? first : loops.consume(broker, old);
      const from = lane ? 1 : 0;
      await eventually(() => worker.leases.length === from + 1, "the new task delivered", 20_000);
      const fresh = worker.leases[from] as TaskLease;
      expect(fresh.seq).toBe(stale.seq); // the same sequence: what makes the old answers land on it
      const consumer = lane ? laneConsumer : old.id;
      expect(await unanswered(queue, consumer)).toBe(1);

      // The old delivery answered late (its handler finished). Then the new one released, on the
      // same connection (the server reads them in order): the server delivers it again only if
      // it still holds it, not acked by the old one's answer.
      stale.ack();
      fresh.nak();
      await eventually(() => worker.leases.length === from + 2, "the new task delivered again", 10_000);
      expect(worker.leases[from + 1]).toMatchObject({ seq: fresh.seq, deliveryCount: 2 });
      expect(await unanswered(queue, consumer)).toBe(1);
      first.stop();
      worker.stop();
    }, 60_000);
});
