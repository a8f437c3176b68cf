/**
 * The server came back with its store behind what a record watch had read
 * (the same streams, their last writes lost: a node killed before it
 * flushed them, a backup restored): the writes stored since at the
 * sequences the watch had read past still reach it. Its next consumer
 * started after the last sequence it had read, and every write stored at
 * or below it was never delivered (an events reader missed those ends, a
 * watcher's `done()` waited for good). The oracle: the records written,
 * each by this test, against those the watch hands over.
 */
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsBroker } from "../../src/adapters/nats/nats-broker.ts";
import { jobEvents } from "../../src/api/job-events.ts";
import { LoopGroup } from "../../src/effects/loop-group.ts";
import { realClock } from "../../src/kernel/clock.ts";
import { LinkedControllers } from "../../src/kernel/signals.ts";
import { newRecord } from "../contract/contract-helpers.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import {
  type RestartableBroker,
  startRestartableBroker,
  watchedRecords,
} from "../harness/restartable-broker.ts";
import { type StoreBackup, storeBackup } from "../harness/store-backup.ts";
import { waitUntil } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

describe("a record watch over a store that came back behind it", () => {
  let server: NatsServerHandle;
  let broker: NatsBroker;
  let started: RestartableBroker | undefined;
  let backup: StoreBackup;
  beforeAll(async () => {
    started = await startRestartableBroker("behind", logger);
    ({ server, broker } = started);
    backup = await storeBackup(server);
  });
  afterAll(async () => {
    await started?.dispose();
    await backup?.dispose();
  });

  it("hands over the records written since at the sequences it had read past", async () => {
    const first = newRecord(1, 30_000);
    await broker.createRecord(first); // the bucket set up, and one record in it
    await backup.save();
    const watch = watchedRecords(broker);
    const { seen } = watch;
    try {
      // From now on: what is written once it is in place.
      await watch.inPlace();
      const lost = { ...newRecord(1, 30_000), queue: first.queue };
      await broker.createRecord(lost);
      await waitUntil(() => seen.includes(lost.id), { timeoutMs: 10_000, message: "the watch heard it" });
      // Back without `lost` (its write was after the backup): the next write takes its sequence.
      await backup.restore();
      const after = { ...newRecord(1, 30_000), queue: first.queue };
      await waitUntil(
        () =>
          broker.createRecord(after).then(
            () => true,
            () => false,
          ),
        { timeoutMs: 20_000, message: "a record written after the restore" },
      );
      await waitUntil(() => seen.includes(after.id), {
        timeoutMs: 10_000,
        message: () => `the watch heard the record written after the restore (heard ${seen.join(", ")})`,
      });
    } finally {
      await watch.stop();
    }
  }, 60_000);

  it("an events reader reading it again from its start tells nothing of jobs last written before it started", async () => {
    /** A job committed and succeeded, its end stamped `agoMs` before now. */
    const finished = async (queue: string, agoMs = 0) => {
      const now = Date.now() - agoMs;
      const record = { ...newRecord(1, 30_000), queue, createdAt: now, updatedAt: now };
      const created = await broker.createRecord(record);
      await broker.updateRecord(
        {
          ...record,
          status: "succeeded",
          phase: "committed",
          counts: { done: 1, failed: 0, dead: 0 },
          updatedAt: now,
          finishedAt: now,
        },
        created,
      );
      return record.id;
    };
    const queue = "events-behind";
    // Over two minutes before the reader starts (beyond any writer's clock being behind).
    const old = await finished(queue, 120_000);
    await backup.save();
    const loops = new LoopGroup(logger);
    const events = jobEvents(
      { loops, stopLinks: new LinkedControllers(loops.signal), clock: realClock },
      broker,
      { queue },
    );
    const heard: string[] = [];
    const reading = (async () => {
      for await (const event of events)
        heard.push(`${event.jobId === old ? "old" : event.jobId} ${event.type}`);
    })();
    try {
      await events.ready;
      const lost = await finished(queue);
      await waitUntil(() => heard.includes(`${lost} succeeded`), {
        timeoutMs: 10_000,
        message: "the reader heard it",
      });
      // Back without `lost`: what is written next takes its sequences, and the reader reads the
      // store again from its start.
      await backup.restore();
      let after = "";
      await waitUntil(
        () =>
          finished(queue).then(
            (id) => {
              after = id;
              return true;
            },
            () => false,
          ),
        { timeoutMs: 20_000, message: "a job written after the restore" },
      );
      await waitUntil(() => heard.includes(`${after} succeeded`), {
        timeoutMs: 10_000,
        message: () => `the reader heard the job written after the restore (heard ${heard.join(", ")})`,
      });
      // A new job whose writer's clock is 10 s behind the reader's: news all the same.
      const skewed = await finished(queue, 10_000);
      await waitUntil(() => heard.includes(`${skewed} succeeded`), {
        timeoutMs: 10_000,
        message: () =>
          `the reader heard the job of a writer whose clock is behind (heard ${heard.join(", ")})`,
      });
      // The job over before the reader started was never news to it.
      expect(heard.filter((h) => h.startsWith("old"))).toEqual([]);
    } finally {
      await events.return();
      await reading;
      await loops.close();
    }
  }, 60_000);
});
