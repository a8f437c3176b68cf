import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import type { HeldAnswer, HeldTask } from "../../src/adapters/delayed-tasks.ts";
import { heldMsgId } from "../../src/kernel/held-task.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { type BrokerHarness, eventually, Loops, newRecord, taskBodies } from "./contract-helpers.ts";

/**
 * The delayed-tasks part of the broker port (src/adapters/delayed-tasks.ts),
 * run against every implementation beside the broker contract: held tasks
 * stored and counted, delivered to the movers, redelivered no sooner than a
 * `later` asks, removed by `done` and by `removeTasks` (only the job's own),
 * and a due task published to its job's subject once per message id.
 */
export const delayedContract = (name: string, makeBroker: () => Promise<BrokerHarness>) =>
  describe(`delayed-tasks contract: ${name}`, () => {
    let h: BrokerHarness;
    let broker: Broker;
    const loops = new Loops();
    const never = new AbortController().signal;
    const now = () => h.clock?.now() ?? Date.now();

    beforeEach(async () => {
      h = await makeBroker();
      broker = h.broker;
    });
    afterEach(async () => {
      loops.abortAll();
      await h.dispose();
    });

    /** A delayed job's record and its held tasks, due `inMs` from now (on a queue of its own unless given). */
    const holdJob = async (total: number, inMs: number, queue?: string) => {
      const dueAt = now() + inMs;
      const fresh = newRecord(total, 300);
      const record: JobRecord = { ...fresh, queue: queue ?? fresh.queue, runAt: dueAt, dueUntil: dueAt };
      const held = taskBodies(total).map((body, n) => ({
        dueAt,
        msgId: heldMsgId(record.id, record.submitId, n),
        body,
      }));
      await broker.createRecord(record);
      await broker.holdTasks(record, held, never);
      return { record, held };
    };

    /** A mover of the test's own, of one queue: what it was handed, when, and what it answered. */
    const mover = (queue: string, answer: (task: HeldTask, delivery: number) => HeldAnswer) => {
      const seen: { task: HeldTask; at: number }[] = [];
      void broker.consumeHeld(
        queue,
        async (task) => {
          seen.push({ task, at: now() });
          return answer(task, seen.filter((s) => s.task.msgId === task.msgId).length);
        },
        loops.signal(),
      );
      return seen;
    };

    it("holds tasks until a mover says done; a later comes back no sooner than asked", async () => {
      const { record, held } = await holdJob(2, 60_000);
      expect(await broker.heldCount(record.queue, record.id)).toBe(2);
      const seen = mover(record.queue, (_, delivery) =>
        delivery === 1 ? { kind: "later", ms: 400 } : { kind: "done" },
      );
      await eventually(() => seen.length === 2, "both held tasks delivered");
      const first = Math.max(...seen.map((s) => s.at));
      expect(seen.map((s) => [s.task.queue, s.task.jobId, s.task.body, s.task.msgId, s.task.dueAt])).toEqual(
        held.map((t) => [record.queue, record.id, t.body, t.msgId, t.dueAt]),
      );
      await h.advance(200);
      expect(seen).toHaveLength(2);
      await h.advance(400);
      await eventually(() => seen.length === 4, "both delivered again after the later's delay");
      for (const again of seen.slice(2)) expect(again.at - first).toBeGreaterThanOrEqual(390);
      await eventually(
        async () => (await broker.heldCount(record.queue, record.id)) === 0,
        "done removes them",
      );
    });

    it("releaseHeld puts a task on its job's subject once per message id", async () => {
      const { record, held } = await holdJob(1, 0);
      await broker.createConsumer(record.queue, record.id, record.settings);
      const task = { ...(held[0] as (typeof held)[number]), queue: record.queue, jobId: record.id };
      await broker.releaseHeld(task);
      await broker.releaseHeld(task);
      expect(await broker.consumerCounts(record)).toMatchObject({ waiting: 1 });
    });

    it("removeTasks of a delayed job removes its held tasks and no other job's", async () => {
      const a = await holdJob(3, 60_000);
      const b = await holdJob(2, 60_000, a.record.queue);
      // A mover holds them (delivered, not acked): removed all the same, and b's still come back.
      const seen = mover(a.record.queue, () => ({ kind: "later", ms: 300 }));
      await eventually(() => seen.length === 5, "all held tasks delivered");
      await broker.removeTasks(a.record);
      expect(await broker.heldCount(a.record.queue, a.record.id)).toBe(0);
      expect(await broker.heldCount(b.record.queue, b.record.id)).toBe(2);
      await h.advance(400);
      await eventually(() => seen.filter((s) => s.task.jobId === b.record.id).length >= 4, "b's come back");
      await h.advance(400);
      expect(seen.filter((s, n) => n >= 5 && s.task.jobId === a.record.id)).toEqual([]);
    });

    it("cleanup removes the held tasks of a job over or without a record, never a live job's, nor any other held task", async () => {
      const over = await holdJob(2, 60_000);
      const { queue } = over.record;
      const running = await holdJob(1, 60_000, queue);
      const submitting = await holdJob(1, 60_000, queue); // the reaper's, never cleanup's
      const orphan = await holdJob(1, 60_000, queue);
      const write = async (id: string, update: Partial<JobRecord>) => {
        const found = await broker.getRecord(id);
        if (!found) throw new Error(`no record ${id}`);
        await broker.updateRecord({ ...found.record, ...update }, found.revision);
      };
      // Its end written, its own removal of its held tasks never made (it failed).
      await write(over.record.id, { status: "failed", phase: "committed", finishedAt: now() });
      await write(running.record.id, { status: "running", phase: "committed" });
      const gone = await broker.getRecord(orphan.record.id);
      await broker.deleteRecord(orphan.record.id, gone?.revision ?? 0);
      const subject = (r: JobRecord) => `${h.prefix ?? "jetstate"}.delayed.${queue}.${r.id}`;
      const expected = [subject(over.record), subject(orphan.record)].sort();
      const held = () =>
        Promise.all([over, running, submitting, orphan].map((j) => broker.heldCount(queue, j.record.id)));

      const dry = await broker.cleanup({ dryRun: true, retentionMs: 3_600_000 });
      expect([...dry.tasksPurged].sort()).toEqual(expected);
      expect(await held()).toEqual([2, 1, 1, 1]);
      const report = await broker.cleanup({ retentionMs: 3_600_000 });
      expect([...report.tasksPurged].sort()).toEqual(expected);
      expect(await held()).toEqual([0, 1, 1, 0]);
      // One by one, not purged: the queue's `due` still hands over every task left (a filtered
      // purge moves it past them on nats-server 2.9).
      const seen = mover(queue, () => ({ kind: "later", ms: 60_000 }));
      await eventually(() => seen.length === 2, "the held tasks left delivered");
      expect(seen.map((s) => s.task.jobId).sort()).toEqual([running.record.id, submitting.record.id].sort());
    });

    it("restoreConsumer makes a delayed job's consumer again while its tasks are held, none stored yet", async () => {
      const { record } = await holdJob(2, 60_000);
      // A server restarted while every task was held: no consumer, nothing on the job's subject.
      expect(await broker.consumerCounts(record)).toBeUndefined();
      expect(await broker.restoreConsumer(record, record.settings)).toBe("restored");
      expect(await broker.consumerCounts(record)).toEqual({ waiting: 0, held: 0, redelivered: 0 });
      await broker.removeTasks(record);
      expect(await broker.heldCount(record.queue, record.id)).toBe(0);
      expect(await broker.restoreConsumer(record, record.settings)).toBe("empty");
    });

    it("movers stopped while their deliveries come and go: the next mover has every held task within seconds", async () => {
      // A delivery the server sends as a pull loop closes is dropped by the client: it comes back
      // only after the due consumer's ack wait. On NATS, 3 rounds of 300 tasks nak'ed every 5 ms
      // lose one at nearly every stop (it was back after 30 s: a runtime that stopped gracefully
      // left a held task that long past its time).
      const { record } = await holdJob(300, 60_000);
      for (let round = 0; round < 3; round++) {
        const stop = new AbortController();
        let seen = 0;
        const stopped = broker.consumeHeld(
          record.queue,
          async () => {
            seen++;
            return { kind: "later", ms: 5 };
          },
          stop.signal,
        );
        // Past the last round's naks (the memory broker's clock), then round and round.
        await h.advance(300);
        await eventually(() => seen >= 300, "every held task delivered to the stopping mover");
        stop.abort();
        await stopped;
      }
      const next = mover(record.queue, () => ({ kind: "done" }));
      await h.advance(300); // the memory broker's clock: past the last round's nak
      await eventually(
        () => new Set(next.map((s) => s.task.msgId)).size === 300,
        "every held task handed to the next mover",
        12_000,
      );
    });

    it("a mover of one queue is handed that queue's held tasks only, even when it starts first", async () => {
      const mine = newRecord(1, 300).queue;
      // Before any hold of the queue: the mover makes its stream and consumer.
      const seen = mover(mine, () => ({ kind: "later", ms: 60_000 }));
      const other = await holdJob(2, 60_000);
      const own = await holdJob(1, 60_000, mine);
      await eventually(() => seen.length === 1, "its own queue's task delivered");
      expect(seen.map((s) => s.task.jobId)).toEqual([own.record.id]);
      const others = mover(other.record.queue, () => ({ kind: "later", ms: 60_000 }));
      await eventually(() => others.length === 2, "the other queue's tasks go to its own mover");
      expect(seen).toHaveLength(1);
      expect(others.every((s) => s.task.jobId === other.record.id)).toBe(true);
    });
  });
