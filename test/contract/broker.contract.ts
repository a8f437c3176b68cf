import { Effect } from "effect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { firstLetters } from "../../src/adapters/dead-letters.ts";
import type { RecordsPage, RecordsPageQuery } from "../../src/adapters/job-records.ts";
import { reapSubmits } from "../../src/effects/reap-submits.ts";
import { SimulatedCrash, SubmitStep, submitJob } from "../../src/effects/submit-job.ts";
import { rollBackLaneEffect } from "../../src/effects/submit-undo.ts";
import { aheadOfServer, realClock } from "../../src/kernel/clock.ts";
import { RevisionConflict } from "../../src/kernel/errors.ts";
import type { FlowRecord } from "../../src/kernel/flow-record.ts";
import { type JobRecord, type JobSettings, laneMaxDeliver } from "../../src/kernel/job-record.ts";
import { encodeTask, withSubmit } from "../../src/kernel/wire.ts";
import {
  type BrokerHarness,
  eventually,
  indexOf,
  type JobRef,
  Loops,
  newJobRef,
  newLaneRecord,
  newRecord,
  taskBodies,
  uid,
} from "./contract-helpers.ts";

export type { BrokerHarness } from "./contract-helpers.ts";

/**
 * The broker port's contract (src/adapters/broker.ts): one suite, run against
 * every implementation. JetStream's semantics are the reference; a case that
 * passes on one broker and fails on the other is a bug in one of them.
 * Time only moves through `advance`, and every wait polls for a state.
 */
export const brokerContract = (name: string, makeBroker: () => Promise<BrokerHarness>) =>
  describe(`broker contract: ${name}`, () => {
    let h: BrokerHarness;
    let broker: Broker;
    let ack: number;
    const loops = new Loops();
    const never = new AbortController().signal;

    beforeEach(async () => {
      h = await makeBroker();
      broker = h.broker;
      ack = h.ackWaitMs ?? 300;
    });
    afterEach(async () => {
      loops.abortAll();
      await h.dispose();
    });

    const counts = (job: JobRef) => broker.consumerCounts(job);
    /** A committed job: record, tasks, consumer (of `total` tasks, or of the record given). */
    const openJob = async (job: number | JobRecord, settings: Partial<JobSettings> = {}) => {
      const record = typeof job === "number" ? newRecord(job, ack, settings) : job;
      const total = record.total;
      await broker.createRecord(record);
      await broker.publishTasks(record, taskBodies(total), never);
      await broker.createConsumer(record.queue, record.id, record.settings);
      return record;
    };
    /** `openJob`, its queue's exhausted tasks dead-lettered (the advisories read until the test ends). */
    const openJobDeadLettered = async (record: JobRecord) => {
      await broker.ensureDeadLetters(record.queue);
      void broker.processExhausted(loops.signal());
      return openJob(record);
    };
    /**
     * A clock a reaper with 10 s grace acts on: past the deadline the record was stored with,
     * which its submit counts from its claim (a few ms after `newRecord` planned it on a busy machine),
     * by 5 s: the reaper counts the window from the server's stamp of the claim, its round trip
     * later (the memory broker's manual clock stands still: the time the test took since).
     */
    const pastStoredDeadline = async (r: JobRecord) => {
      const stored = await broker.getRecord(r.id);
      if (!stored) throw new Error(`no record ${r.id}`);
      return () => stored.record.commitDeadline + 15_000;
    };
    /**
     * How far this host's clock (the records' times) is ahead of the server's, as the broker last
     * read it: a reaper judges a deadline by the server's stamp of the record, moved to its clock.
     */
    const serverAhead = () => aheadOfServer(realClock, broker.leases.serverTime());
    const change = async (id: string, update: Partial<JobRecord>) => {
      const found = await broker.getRecord(id);
      if (!found) throw new Error(`no record ${id}`);
      return broker.updateRecord({ ...found.record, ...update }, found.revision);
    };

    // ---- tasks ----

    it("tasks are invisible until createConsumer (the commit point); consuming an unknown job is gone", async () => {
      const r = newRecord(2, ack);
      await broker.createRecord(r);
      await broker.publishTasks(r, taskBodies(2), never);
      expect(await broker.tasksCommitted(r)).toBe(false);
      expect(await counts(r)).toBeUndefined();
      const early = loops.consume(broker, r);
      expect(await early.ended).toBe("gone");
      expect(early.leases).toEqual([]);

      await broker.createConsumer(r.queue, r.id, r.settings);
      expect(await broker.tasksCommitted(r)).toBe(true);
      expect(await counts(r)).toEqual({ waiting: 2, held: 0, redelivered: 0 });
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 2);
      expect(worker.leases.map((l) => [l.body, l.deliveryCount])).toEqual(taskBodies(2).map((b) => [b, 1]));
    });

    it("restoreConsumer makes a job's consumer again over its stored tasks only", async () => {
      const r = newRecord(2, ack);
      await broker.createRecord(r);
      await broker.publishTasks(r, taskBodies(2), never);
      // The consumer gone (a server restarted: it lived in the server's memory), the tasks stored.
      expect(await broker.restoreConsumer(r, r.settings)).toBe("restored");
      expect(await counts(r)).toEqual({ waiting: 2, held: 0, redelivered: 0 });
      expect(await broker.restoreConsumer(r, r.settings)).toBe("present");
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 2);
      await broker.removeTasks(r);
      expect(await broker.restoreConsumer(r, r.settings)).toBe("empty");
      expect(await counts(r)).toBeUndefined();
      expect(await broker.tasksCommitted(r)).toBe(false);
    });

    it("a job is found under its queue only: the same id on another queue is another job", async () => {
      const r = await openJob(1);
      const elsewhere: JobRef = { queue: uid("q"), id: r.id };
      await broker.publishResults(r.queue, r.id, '[{"i":0,"ok":true}]', uid("m"));
      expect(await broker.tasksCommitted({ ...elsewhere, submitId: r.submitId })).toBe(false);
      expect(await counts(elsewhere)).toBeUndefined();
      expect(await loops.consume(broker, elsewhere).ended).toBe("gone");
      const reader = loops.read(broker, elsewhere);
      await eventually(() => reader.state.caughtUp === 1);
      expect(reader.messages).toEqual([]);
      expect(await broker.tasksCommitted(r)).toBe(true);
      expect(await counts(r)).toEqual({ waiting: 1, held: 0, redelivered: 0 });
    });

    it("a lease that runs out is redelivered: deliveryCount 2, same body", async () => {
      const r = await openJob(1);
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 1);
      await h.advance(ack / 2);
      expect(worker.leases).toHaveLength(1);
      await h.advance(ack);
      await eventually(() => worker.leases.length === 2);
      expect(worker.leases[1]).toMatchObject({ body: worker.leases[0]!.body, deliveryCount: 2 });
    });

    it("working() extends the lease by the ack wait", async () => {
      const r = await openJob(1);
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 1);
      for (let beat = 0; beat < 6; beat++) {
        await h.advance(ack / 2);
        worker.leases[0]!.working();
      }
      expect(worker.leases).toHaveLength(1); // three ack waits later, still the first delivery
      await h.advance(ack * 1.5);
      await eventually(() => worker.leases.length === 2);
      expect(worker.leases[1]!.deliveryCount).toBe(2);
    });

    it("nak(delay) redelivers after the delay, not before; nak() at once", async () => {
      const r = await openJob(1);
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 1);
      worker.leases[0]!.nak(ack * 4);
      await h.advance(ack * 2); // past the ack wait, before the delay
      expect(worker.leases).toHaveLength(1);
      await h.advance(ack * 2.5); // past the delay, before that delivery's lease ends
      await eventually(() => worker.leases.length === 2);
      expect(worker.leases[1]!.deliveryCount).toBe(2);
      worker.leases[1]!.nak();
      await eventually(() => worker.leases.length === 3); // no time passes: released at once
      expect(worker.leases[2]!.deliveryCount).toBe(3);
    });

    it("ack() and term() remove a task: never redelivered", async () => {
      const r = await openJob(2);
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 2);
      worker.leases[0]!.ack();
      worker.leases[1]!.term();
      await h.advance(ack * 3);
      expect(worker.leases).toHaveLength(2);
      await eventually(async () => {
        expect(await counts(r)).toEqual({ waiting: 0, held: 0, redelivered: 0 });
      });
    });

    it("consumerCounts: waiting, held by workers, redelivered", async () => {
      const r = await openJob(3);
      expect(await counts(r)).toEqual({ waiting: 3, held: 0, redelivered: 0 });
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 3);
      await eventually(async () => expect(await counts(r)).toEqual({ waiting: 0, held: 3, redelivered: 0 }));
      worker.leases[0]!.ack();
      await eventually(async () => expect(await counts(r)).toEqual({ waiting: 0, held: 2, redelivered: 0 }));
      await h.advance(ack * 1.5);
      await eventually(() => worker.leases.length === 5);
      await eventually(async () => expect(await counts(r)).toEqual({ waiting: 0, held: 2, redelivered: 2 }));
    });

    it("two workers on one job never hold the same task", async () => {
      const r = await openJob(6);
      const a = loops.consume(broker, r);
      const b = loops.consume(broker, r);
      await eventually(() => a.leases.length + b.leases.length === 6);
      const all = [...a.leases, ...b.leases];
      expect(all.map(indexOf).sort()).toEqual([0, 1, 2, 3, 4, 5]);
      expect(all.every((l) => l.deliveryCount === 1)).toBe(true);
    });

    it("duplicate task publish is dropped (same task id); a new submit id is not", async () => {
      const r = newRecord(2, ack);
      await broker.createRecord(r);
      await broker.publishTasks(r, taskBodies(2), never);
      await broker.publishTasks(r, taskBodies(2), never); // a retried publish
      await broker.createConsumer(r.queue, r.id, r.settings);
      expect(await counts(r)).toEqual({ waiting: 2, held: 0, redelivered: 0 });
      await broker.publishTasks({ ...r, submitId: uid("s") }, taskBodies(1, 2), never); // a resubmit
      expect(await counts(r)).toEqual({ waiting: 3, held: 0, redelivered: 0 });
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 3);
      expect(worker.leases.map(indexOf)).toEqual([0, 1, 2]);
    });

    it("max deliveries: an unanswered task becomes a dead letter; one termed on its last delivery does not", async () => {
      const r = newRecord(2, ack, { maxDeliver: 2 });
      await openJobDeadLettered(r);
      const results = loops.read(broker, r);
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 2);
      await h.advance(ack * 1.5);
      await eventually(() => worker.leases.filter((l) => l.deliveryCount === 2).length === 2);
      worker.leases.find((l) => l.deliveryCount === 2 && indexOf(l) === 1)!.term(); // answered on its last delivery
      await h.advance(ack * 1.5);
      await eventually(async () => expect(await broker.listDeadLetters(r.queue, r.id)).toHaveLength(1));
      const [letter] = await broker.listDeadLetters(r.queue, r.id);
      expect(letter).toMatchObject({
        queue: r.queue,
        jobId: r.id,
        index: 0,
        taskId: `${r.id}.0`,
        payload: { n: 0 },
        deliveries: 2,
        source: "advisory",
      });
      expect(letter!.error).toMatch(/no answer after 2 deliveries/);
      await eventually(() => results.messages.length === 1);
      // Naming its letter, by its sequence in the dead-letter store: a redrive's marker takes it back only if it sends that letter back.
      expect(JSON.parse(results.messages[0]!.body)).toEqual([
        { i: 0, ok: false, dead: true, e: letter!.error, l: letter!.seq },
      ]);
      await eventually(async () => expect(await counts(r)).toMatchObject({ waiting: 0, held: 0 }));
      await h.advance(ack * 3);
      expect(worker.leases).toHaveLength(4); // never delivered again
      expect(results.messages).toHaveLength(1);
      // It left the tasks stream: once the job is over, cleanup finds no task of it to purge.
      await change(r.id, { status: "failed", phase: "committed", finishedAt: Date.now() });
      const report = await broker.cleanup({ dryRun: true, retentionMs: 3600_000 });
      expect(report).toMatchObject({ consumersDeleted: [r.id], tasksPurged: [] });
    });

    it("putBack: a task on its last delivery comes back as a new message, delivered from 1 again, never dead", async () => {
      const r = newRecord(2, ack, { maxDeliver: 1 });
      await openJobDeadLettered(r);
      const results = loops.read(broker, r);
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 2);
      const [first, second] = worker.leases;
      expect([first!.deliveryCount, second!.deliveryCount]).toEqual([1, 1]);
      // Its loop closes, as a stopping worker's does; the first goes back as a copy, the second is left.
      worker.stop();
      await worker.ended;
      const putBack = first!.putBack(Math.max(10, ack / 3));
      await h.advance(ack * 2);
      await putBack;
      const other = loops.consume(broker, r);
      await eventually(() => other.leases.length === 1);
      const copy = other.leases[0]!;
      expect([indexOf(copy), copy.deliveryCount, copy.seq > first!.seq]).toEqual([indexOf(first!), 1, true]);
      // The one left unanswered died on its last delivery; the one put back did not.
      await eventually(async () => expect(await broker.listDeadLetters(r.queue, r.id)).toHaveLength(1));
      const letters = await broker.listDeadLetters(r.queue, r.id);
      expect(letters.map((l) => l.index)).toEqual([indexOf(second!)]);
      await eventually(() => results.messages.length === 1);
      // The copy answered: nothing more is delivered, and nothing else dies.
      copy.ack();
      await h.advance(ack * 3);
      expect(other.leases).toHaveLength(1);
      expect(await broker.listDeadLetters(r.queue, r.id)).toHaveLength(1);
    });

    it("settle putBack (a delivery leased by reference): the task comes back as a new message, delivered from 1, never dead", async () => {
      const r = newRecord(1, ack, { maxDeliver: 1 });
      await openJobDeadLettered(r);
      const leaseOne = async () => {
        let leased: Awaited<ReturnType<Broker["taskLeasing"]["fetchTasks"]>> = [];
        await eventually(async () => {
          leased = await broker.taskLeasing.fetchTasks(r.queue, r.id, 1);
          return leased.length === 1;
        });
        return leased[0]!;
      };
      const first = await leaseOne();
      expect(first.deliveryCount).toBe(1);
      await broker.taskLeasing.settle([{ ref: first.ref, action: "putBack" }]);
      const copy = await leaseOne();
      expect([copy.body, copy.deliveryCount, copy.ref === first.ref]).toEqual([first.body, 1, false]);
      await broker.taskLeasing.settle([{ ref: copy.ref, action: "ack" }]);
      await h.advance(ack * 3);
      // A pull after the leases' end: an original left unacked would be reported dead now.
      expect(await broker.taskLeasing.fetchTasks(r.queue, r.id, 1)).toEqual([]);
      await h.advance(ack * 3);
      expect(await broker.listDeadLetters(r.queue, r.id)).toEqual([]);
    });

    it("removeTasks (cancel): consumers end 'gone', consumer and counts gone, tasks purged", async () => {
      const r = await openJob(3);
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 3);
      await broker.removeTasks(r);
      expect(await worker.ended).toBe("gone");
      expect(await broker.tasksCommitted(r)).toBe(false);
      expect(await counts(r)).toBeUndefined();
      expect(await loops.consume(broker, r).ended).toBe("gone");
      worker.leases[0]!.ack(); // answering a dropped lease is harmless
      worker.leases[1]!.nak();
      await h.advance(ack * 3);
      expect(worker.leases).toHaveLength(3);
      await broker.createConsumer(r.queue, r.id, r.settings);
      expect(await counts(r)).toEqual({ waiting: 0, held: 0, redelivered: 0 });
    });

    it("removeTasks below a tasksMark removes what was stored before it only (a redrive's task stays)", async () => {
      const r = await openJob(2);
      const mark = await broker.tasksMark(r);
      expect(mark).toBeGreaterThan(0);
      // Published once the end was read, as a redrive does: its own submit id, so no duplicate.
      await broker.publishTasks({ ...r, submitId: "redrive" }, taskBodies(1, 5), never);
      await broker.removeTasks(r, mark);
      expect(await counts(r)).toBeUndefined();
      await broker.createConsumer(r.queue, r.id, r.settings);
      expect(await counts(r)).toEqual({ waiting: 1, held: 0, redelivered: 0 });
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 1);
      expect(indexOf(worker.leases[0]!)).toBe(5);

      const lane = newLaneRecord();
      await broker.createRecord(lane);
      await broker.publishTasks(lane, taskBodies(1), never);
      const laneMark = await broker.tasksMark(lane);
      await broker.publishTasks({ ...lane, submitId: "redrive" }, taskBodies(1, 7), never);
      await broker.removeTasks(lane, laneMark);
      const laneWorker = loops.consumeLane(broker, lane.queue);
      await eventually(() => laneWorker.leases.length === 1);
      expect(laneWorker.leases[0]).toMatchObject({ jobId: lane.id });
      expect(indexOf(laneWorker.leases[0]!)).toBe(7);
    });

    it("publishTasks with ids names each task by its id, not its position: a task in two sets is stored once", async () => {
      const r = newRecord(2, ack);
      await broker.createRecord(r);
      // Two redrives of one job at once: tasks [1] and [0, 1], each named by its own letters.
      // By position, task 1 first took the id task 0 had next: task 0 was never stored.
      await broker.publishTasks({ ...r, submitId: "r" }, taskBodies(1, 1), never, ["1.b"]);
      await broker.publishTasks({ ...r, submitId: "r" }, taskBodies(2), never, ["0.a", "1.b"]);
      await broker.createConsumer(r.queue, r.id, r.settings);
      expect(await counts(r)).toEqual({ waiting: 2, held: 0, redelivered: 0 });
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 2);
      expect(worker.leases.map(indexOf).sort()).toEqual([0, 1]);
    });

    it("removeTaskMessages deletes tasks by sequence (a dead task's message left by a lost term); one gone is no error", async () => {
      const r = await openJob(2);
      // On the same queue: its task's sequence is one of r's stream.
      const other = await openJob({ ...newRecord(1, ack), queue: r.queue });
      const worker = loops.consume(broker, r);
      const others = loops.consume(broker, other);
      await eventually(() => worker.leases.length === 2 && others.leases.length === 1);
      const [first, second] = worker.leases;
      const ref = (lease: typeof first) => ({ seq: lease!.seq, index: indexOf(lease!) });
      // Another job's task, another task of the job at a letter's sequence (a store made again
      // since the letter reuses sequences) and a sequence past the stream's end stay untouched.
      await broker.removeTaskMessages(r, [
        ref(first),
        ref(others.leases[0]),
        { seq: second!.seq, index: indexOf(first!) },
        { seq: first!.seq + 1_000_000, index: indexOf(first!) },
      ]);
      // The second is still stored: released, it is delivered again.
      second!.nak();
      await eventually(() => worker.leases.length === 3);
      worker.leases[2]!.ack();
      // The first one's delivery, never answered, went with its message.
      await eventually(async () => (await counts(r))?.waiting === 0 && (await counts(r))?.held === 0);
      await broker.removeTaskMessages(r, [ref(first)]);
      // The other job's task is still stored: released, it is delivered again.
      others.leases[0]!.nak();
      await eventually(() => others.leases.length === 2);
      others.leases[1]!.ack();
      await eventually(async () => (await counts(other))?.held === 0);
    });

    // ---- records ----

    // ---- the lane: one consumer per queue serves every lane job's one task ----

    /** A lane job's record and task stored, as a submit leaves them at its commit point. */
    const openLaneJob = async (queue?: string) => {
      const record = newLaneRecord(queue);
      await broker.createRecord(record);
      await broker.publishTasks(record, taskBodies(1), never);
      return record;
    };

    it("queueStats: tasks never delivered by a queue's job consumers and lane, and when the oldest was stored", async () => {
      const now = () => h.clock?.now() ?? Date.now();
      const t0 = now();
      const first = await openLaneJob();
      const t1 = now();
      const queue = first.queue;
      await h.advance(50);
      const t2 = now();
      const own = await openJob({ ...newRecord(3, ack), queue });
      await openLaneJob(queue);
      // Stored, not committed (no consumer): not waiting for any worker yet.
      const uncommitted = { ...newRecord(2, ack), queue };
      await broker.createRecord(uncommitted);
      await broker.publishTasks(uncommitted, taskBodies(2), never);
      const empty = uid("q");
      const stats = await broker.queueStats({ queues: [queue, empty], timeoutMs: 5000 });
      expect(stats).toEqual([
        { queue, waiting: 5, oldestWaitingAt: expect.any(Number) },
        { queue: empty, waiting: 0, oldestWaitingAt: undefined },
      ]);
      expect(stats[0]!.oldestWaitingAt).toBeGreaterThanOrEqual(t0);
      expect(stats[0]!.oldestWaitingAt).toBeLessThanOrEqual(t1);
      // Without a list: every queue the broker holds, this one among them.
      const all = await broker.queueStats({ timeoutMs: 5000 });
      expect(all.find((s) => s.queue === queue)?.waiting).toBe(5);
      // The lane's tasks taken, one released again: neither counts; the oldest is now the job's.
      const lane = loops.consumeLane(broker, queue);
      await eventually(() => lane.leases.length === 2);
      lane.leases[0]!.nak(60_000);
      const [after] = await broker.queueStats({ queues: [queue], timeoutMs: 5000 });
      expect(after?.waiting).toBe(3);
      expect(after?.oldestWaitingAt).toBeGreaterThanOrEqual(t2);
      const worker = loops.consume(broker, own);
      await eventually(() => worker.leases.length === 3);
      expect(await broker.queueStats({ queues: [queue], timeoutMs: 5000 })).toEqual([
        { queue, waiting: 0, oldestWaitingAt: undefined },
      ]);
    });

    it("fetchTasks and fetchLane tell when their pull is sent (`pulling`), once, before they return", async () => {
      const r = await openJob(1);
      const lane = await openLaneJob();
      const told: string[] = [];
      const fetched = async (fetch: (pulling: () => void) => Promise<readonly unknown[]>) => {
        const tasks = await fetch(() => told.push("sent"));
        told.push(`answered ${tasks.length}`);
        return tasks.length === 1;
      };
      await eventually(() => fetched((pulling) => broker.taskLeasing.fetchTasks(r.queue, r.id, 1, pulling)));
      await eventually(() => fetched((pulling) => broker.taskLeasing.fetchLane(lane.queue, 1, pulling)));
      // One pull, or more while the tasks were not ready yet: each told once, before its answer.
      expect(told.length % 2).toBe(0);
      for (let n = 0; n < told.length; n += 2)
        expect(told.slice(n, n + 2)).toEqual(["sent", expect.any(String)]);
      expect(told.slice(-2)).toEqual(["sent", "answered 1"]);
    });

    it("lane: a lane job's task comes from consumeLane, naming its job (the lane made at need), never from consumeTasks", async () => {
      const queue = uid("q");
      const lane = loops.consumeLane(broker, queue); // before any lane publish of the queue
      const r = await openLaneJob(queue);
      await eventually(() => lane.leases.length === 1);
      expect(lane.leases[0]).toMatchObject({ jobId: r.id, body: taskBodies(1)[0], deliveryCount: 1 });
      expect(await loops.consume(broker, r).ended).toBe("gone"); // the job has no consumer of its own
      expect(await counts(r)).toBeUndefined();
      lane.stop();
      expect(await lane.ended).toBe("stopped");
    });

    it("lane: two lane jobs and a job of its own on one queue never see each other's tasks; another queue's lane neither", async () => {
      const a = await openLaneJob();
      const own = await openJob({ ...newRecord(2, ack), queue: a.queue });
      const elsewhere = await openLaneJob();
      const b = await openLaneJob(a.queue);
      const lane = loops.consumeLane(broker, a.queue);
      const worker = loops.consume(broker, own);
      await eventually(() => lane.leases.length === 2 && worker.leases.length === 2);
      expect(lane.leases.map((l) => [l.jobId, l.deliveryCount])).toEqual([
        [a.id, 1],
        [b.id, 1],
      ]); // in the order they were published
      expect(worker.leases.map(indexOf)).toEqual([0, 1]);
      const other = loops.consumeLane(broker, elsewhere.queue);
      await eventually(() => other.leases.length === 1);
      expect(other.leases[0]!.jobId).toBe(elsewhere.id);
      await h.advance(ack / 2);
      // Which tasks each saw, not how many leases: on a loaded machine a lease unacked for
      // `ack` of real time is delivered again (4 leases of the same 2 tasks).
      const distinct = (leases: readonly { jobId: string }[]) =>
        [...new Set(leases.map((l) => l.jobId))].sort();
      expect(distinct(lane.leases)).toEqual([a.id, b.id].sort());
      expect([...new Set(worker.leases.map(indexOf))].sort()).toEqual([0, 1]);
      expect(distinct(other.leases)).toEqual([elsewhere.id]);
    });

    it("lane: tasksCommitted is the task stored, or a result of it; a lane lease's ack removes the task", async () => {
      const r = newLaneRecord();
      expect(await broker.tasksCommitted(r)).toBe(false); // never published
      await broker.createRecord(r);
      await broker.publishTasks(r, taskBodies(1), never);
      expect(await broker.tasksCommitted(r)).toBe(true);
      const s = await openLaneJob(r.queue);
      const lane = loops.consumeLane(broker, r.queue);
      await eventually(() => lane.leases.length === 2);
      // r answered as a worker does (its result stored, then its task acked); s acked with no result.
      await broker.publishResults(r.queue, r.id, '[{"i":0,"ok":true}]', uid("m"));
      for (const lease of lane.leases) lease.ack();
      // s's task leaves the stream; r's, acked before it, went too: its result is what stays.
      await eventually(async () => (await broker.tasksCommitted(s)) === false);
      expect(await broker.tasksCommitted(r)).toBe(true);
      expect(lane.leases).toHaveLength(2);
    });

    it("lane: a result is the commit's witness only while it is not taken back by a redrive marker after it", async () => {
      // A lane redrive that died between its marker and its task: the old dead answer, then the
      // marker, and no task. Its job must read as not committed (lost), not as answered.
      const r = newLaneRecord();
      await broker.createRecord(r);
      await broker.publishResults(r.queue, r.id, '[{"i":0,"ok":false,"e":"boom","dead":true}]', uid("m"));
      expect(await broker.tasksCommitted(r)).toBe(true);
      await broker.publishResults(r.queue, r.id, '[{"i":0,"redrive":true}]', uid("m"));
      expect(await broker.tasksCommitted(r)).toBe(false);
      // The redriven task's answer after it is a witness again.
      await broker.publishResults(r.queue, r.id, '[{"i":0,"ok":true}]', uid("m"));
      expect(await broker.tasksCommitted(r)).toBe(true);
    });

    it("lane: removeTasks purges that job's task only (then it is not committed); the lane goes on", async () => {
      const a = await openLaneJob();
      const b = await openLaneJob(a.queue);
      await broker.removeTasks(a);
      expect(await broker.tasksCommitted(a)).toBe(false);
      expect(await broker.tasksCommitted(b)).toBe(true);
      const lane = loops.consumeLane(broker, a.queue);
      await eventually(() => lane.leases.length === 1);
      expect(lane.leases[0]).toMatchObject({ jobId: b.id, deliveryCount: 1 });
      await broker.removeTasks(b); // while a worker holds it
      expect(await broker.tasksCommitted(b)).toBe(false);
      lane.leases[0]!.nak(); // a purged task is not delivered again
      const c = await openLaneJob(a.queue);
      await eventually(() => lane.leases.length === 2);
      expect(lane.leases[1]).toMatchObject({ jobId: c.id, deliveryCount: 1 });
    });

    it("lane: delivers a task up to the lane's maxDeliver, then its advisory dead-letters it under its own job", async () => {
      const r = newLaneRecord();
      expect(r.settings.maxDeliver).toBe(laneMaxDeliver);
      await broker.ensureDeadLetters(r.queue);
      void broker.processExhausted(loops.signal());
      await broker.createRecord(r);
      await broker.publishTasks(r, taskBodies(1), never);
      const results = loops.read(broker, r);
      const lane = loops.consumeLane(broker, r.queue, (lease) => {
        if (lease.jobId === r.id) lease.nak();
      });
      await eventually(async () => expect(await broker.listDeadLetters(r.queue, r.id)).toHaveLength(1));
      expect(lane.leases.map((l) => [l.jobId, l.deliveryCount])).toEqual(
        [1, 2, 3, 4, 5].map((n) => [r.id, n]),
      );
      expect((await broker.listDeadLetters(r.queue, r.id))[0]).toMatchObject({
        queue: r.queue,
        jobId: r.id,
        index: 0,
        payload: { n: 0 },
        deliveries: laneMaxDeliver,
        source: "advisory",
      });
      await eventually(() => results.messages.length === 1);
      expect(JSON.parse(results.messages[0]!.body)).toMatchObject([{ i: 0, ok: false, dead: true }]);
      // The task left the lane: the next lane job's task is what comes next.
      const next = await openLaneJob(r.queue);
      await eventually(() => lane.leases.length === laneMaxDeliver + 1);
      expect(lane.leases.map((l) => [l.jobId === next.id, l.deliveryCount])).toEqual([
        ...[1, 2, 3, 4, 5].map((n) => [false, n]),
        [true, 1],
      ]);
    });

    it("lane: an exhausted task of another submit than its record's (one rolled back) leaves the lane, neither dead-lettered nor counted", async () => {
      const r = newLaneRecord(undefined, 2);
      await broker.ensureDeadLetters(r.queue);
      void broker.processExhausted(loops.signal());
      // The record names the submit that took it over; the task left on the lane names the one before.
      await broker.createRecord(r);
      const rolledBack = { ...r, submitId: uid("s") };
      await broker.publishTasks(
        rolledBack,
        [withSubmit(encodeTask(0, { n: 0 }), 0, rolledBack.submitId)],
        never,
      );
      // Behind it, a lane job's task that names no submit: dead-lettered as before.
      const after = newLaneRecord(r.queue);
      await broker.createRecord(after);
      await broker.publishTasks(after, taskBodies(1), never);
      const results = loops.read(broker, r);
      loops.consumeLane(broker, r.queue, (lease) => lease.nak());
      // The advisories are handled in order: the second's letter stored, the first's was handled.
      await eventually(async () => expect(await broker.listDeadLetters(r.queue, after.id)).toHaveLength(1));
      expect(await broker.listDeadLetters(r.queue, r.id)).toEqual([]);
      expect(await broker.tasksCommitted(r)).toBe(false);
      expect(results.messages).toEqual([]);
    });

    /** The lane job's submit, dead after its tasks' publish: nothing rolled back. */
    const submitThenDie = (r: JobRecord) =>
      expect(
        submitJob(broker, {
          record: r,
          bodies: taskBodies(r.total),
          now: Date.now,
          signal: never,
          hooks: {
            afterStep: (step) => {
              if (step === SubmitStep.tasksPublished) throw new SimulatedCrash("died after publishing");
            },
          },
        }),
      ).rejects.toBeInstanceOf(SimulatedCrash);

    it("lane: a crashed lane submit is rolled forward by the reaper once its task is stored", async () => {
      const r = newLaneRecord();
      await submitThenDie(r);
      const later = await pastStoredDeadline(r);
      expect(await reapSubmits(broker, later, 10_000, serverAhead)).toEqual({
        rolledBack: [],
        rolledForward: [r.id],
      });
      expect((await broker.getRecord(r.id))?.record).toMatchObject({ phase: "committed", status: "running" });
      const lane = loops.consumeLane(broker, r.queue);
      await eventually(() => lane.leases.length === 1);
      expect(lane.leases[0]!.jobId).toBe(r.id);
    });

    it("lane: a crashed submit of a lane job of several tasks is rolled back though its tasks are stored, and they are removed", async () => {
      const r = newLaneRecord(undefined, 3);
      await submitThenDie(r);
      // Its tasks reach the lane before any commit: a worker holds them (api/worker-lane.ts).
      const lane = loops.consumeLane(broker, r.queue);
      await eventually(() => lane.leases.length === 3);
      // Stored tasks are no commit for a job of several tasks: only its record's write is.
      expect(await broker.tasksCommitted(r)).toBe(true);
      const later = await pastStoredDeadline(r);
      expect(await reapSubmits(broker, later, 10_000, serverAhead)).toEqual({
        rolledBack: [r.id],
        rolledForward: [],
      });
      expect((await broker.getRecord(r.id))?.record).toMatchObject({ phase: "rolledBack", status: "failed" });
      expect(await broker.tasksCommitted(r)).toBe(false);
    });

    it("lane: a rollback leaves the tasks of the next submit of the key, which took the record over as the rollback removed its own", async () => {
      const first = newLaneRecord(undefined, 3);
      await broker.createRecord(first);
      await broker.publishTasks(first, taskBodies(3), never);
      const next = { ...first, submitId: uid("s") };
      // Between the rollback's mark and its removal of the tasks, the next submit of the key
      // takes the record over (it says rolled back) and publishes its own tasks on the subject.
      const racing = new Proxy(broker, {
        get: (target, key) => {
          if (key === "removeTasks")
            return async (...args: Parameters<Broker["removeTasks"]>) => {
              await change(first.id, { ...next, phase: "submitting", status: "queuing" });
              await broker.publishTasks(next, taskBodies(3), never);
              return target.removeTasks(...args);
            };
          const value = Reflect.get(target, key);
          return typeof value === "function" ? value.bind(target) : value;
        },
      });
      expect(await Effect.runPromise(rollBackLaneEffect(racing, first, "test", Date.now))).toBeUndefined();
      // The next submit's three tasks are there to run; the first's are gone.
      const lane = loops.consumeLane(broker, first.queue);
      await eventually(() => lane.leases.length === 3);
      await h.advance(50);
      expect(lane.leases).toHaveLength(3);
    });

    it("lane: cleanup purges the lane tasks of jobs that are over and never removes the lane", async () => {
      const prefix = h.prefix ?? "jetstate";
      const done = await openLaneJob();
      const live = await openLaneJob(done.queue);
      await change(done.id, { status: "succeeded", phase: "committed", finishedAt: Date.now() });
      await change(live.id, { status: "running", phase: "committed" });
      for (const job of [done, live]) await broker.leases.acquire(job.id, 60_000);
      expect(await broker.cleanup({ retentionMs: 3600_000 })).toMatchObject({
        consumersDeleted: [],
        tasksPurged: [`${prefix}.tasks.${done.queue}.lane.${done.id}`],
      });
      const lane = loops.consumeLane(broker, done.queue);
      await eventually(() => lane.leases.length === 1);
      expect(lane.leases[0]!.jobId).toBe(live.id);
      const next = await openLaneJob(done.queue);
      await eventually(() => lane.leases.length === 2);
      expect(lane.leases[1]!.jobId).toBe(next.id);
    });

    /** The server's clock: the manual one a memory broker runs on, else this host's (nats-server runs here). */
    const serverNow = () => h.clock?.now() ?? Date.now();

    it("records: a read gives the server's stamp of the write it finds (storedAt), by the server's clock; a later write, a later stamp", async () => {
      const r = newRecord(1, ack);
      const before = serverNow();
      await broker.createRecord(r);
      const after = serverNow();
      const first = await broker.getRecord(r.id);
      expect(first?.storedAt).toBeGreaterThanOrEqual(before - 5);
      expect(first?.storedAt).toBeLessThanOrEqual(after + 5);
      await h.advance(50);
      await change(r.id, { status: "running" });
      const second = await broker.getRecord(r.id);
      expect(second?.storedAt).toBeGreaterThanOrEqual(first!.storedAt! + 40);
    });

    it("leases: serverTime() is the server's clock as a listing read it, carried on by the monotonic clock; none before", async () => {
      const fresh = await h.peer("contract-clock");
      // Nothing read yet on NATS (the memory broker reads its server's clock at each call).
      if (!h.clock) expect(fresh.leases.serverTime()).toBeUndefined();
      expect(await fresh.leases.acquire(uid("j"), 10_000, Date.now())).toBe(true);
      await fresh.leases.list();
      const seen = fresh.leases.serverTime();
      expect(seen).toBeDefined();
      const at = seen!.at + (performance.now() - seen!.seenAt);
      // No earlier than the server's time (its stamp is taken after the ask), later by a round trip at most.
      expect(at).toBeGreaterThanOrEqual(serverNow() - 5);
      expect(at).toBeLessThanOrEqual(serverNow() + 1000);
    });

    it("leases: readServerTime() reads the server's clock when there is no reading, and keeps it as serverTime()", async () => {
      const fresh = await h.peer("contract-clock-read");
      // Nothing read yet on NATS, and no lease stored by it: a listing would take no reading.
      if (!h.clock) expect(fresh.leases.serverTime()).toBeUndefined();
      const read = await fresh.leases.readServerTime();
      expect(read).toBeDefined();
      const at = read!.at + (performance.now() - read!.seenAt);
      expect(at).toBeGreaterThanOrEqual(serverNow() - 5);
      expect(at).toBeLessThanOrEqual(serverNow() + 1000);
      expect(fresh.leases.serverTime()).toBeDefined();
    });

    it("records: compare-and-set on create, update and delete; a deleted record is gone", async () => {
      const r = newRecord(1, ack);
      const rev1 = await broker.createRecord(r);
      await expect(broker.createRecord(r)).rejects.toBeInstanceOf(RevisionConflict);
      const rev2 = await broker.updateRecord({ ...r, status: "running" }, rev1);
      expect(rev2).toBeGreaterThan(rev1);
      await expect(broker.updateRecord({ ...r, status: "failed" }, rev1)).rejects.toMatchObject({
        _tag: "RevisionConflict",
        key: r.id,
      });
      await expect(broker.deleteRecord(r.id, rev1)).rejects.toBeInstanceOf(RevisionConflict);
      expect(await broker.getRecord(r.id)).toEqual({
        record: { ...r, status: "running" },
        revision: rev2,
        storedAt: expect.any(Number),
      });
      await broker.deleteRecord(r.id, rev2);
      expect(await broker.getRecord(r.id)).toBeUndefined();
      expect((await broker.listRecords()).map((x) => x.id)).not.toContain(r.id);
      // The delete is a newer revision: the one before it is stale.
      await expect(broker.updateRecord(r, rev2)).rejects.toBeInstanceOf(RevisionConflict);
      expect(await broker.createRecord(r)).toBeGreaterThan(rev2);
      expect((await broker.listRecords()).filter((x) => x.id === r.id)).toEqual([r]);
    });

    it("flow records: compare-and-set on create and update, read back as written; live marks", async () => {
      const id = uid("f");
      const flow: FlowRecord = {
        v: 1,
        id,
        status: "running",
        onChildFailure: "fail",
        digest: "v1:x",
        createdAt: 1,
        updatedAt: 1,
        nodes: { a: { request: { queue: "q", tasks: [1] }, dependsOn: [], jobId: "ja", status: "waiting" } },
      };
      expect(await broker.flows.getFlow(id)).toBeUndefined();
      const rev1 = await broker.flows.createFlow(flow);
      await expect(broker.flows.createFlow(flow)).rejects.toBeInstanceOf(RevisionConflict);
      const next: FlowRecord = { ...flow, status: "cancelled", reason: "r", updatedAt: 2 };
      const rev2 = await broker.flows.updateFlow(next, rev1);
      expect(rev2).toBeGreaterThan(rev1);
      await expect(broker.flows.updateFlow(flow, rev1)).rejects.toMatchObject({
        _tag: "RevisionConflict",
        key: id,
      });
      expect(await broker.flows.getFlow(id)).toEqual({ record: next, revision: rev2 });
      // Marks: listed with their revision, removed whole or only up to a revision.
      await broker.flows.markLive(id, 5);
      const marked = (await broker.flows.listLive()).find((m) => m.id === id);
      expect(marked).toMatchObject({ id, markedAt: 5 });
      expect(await broker.flows.getFlow(id)).toEqual({ record: next, revision: rev2 });
      await broker.flows.markLive(id, 6);
      await broker.flows.unmarkLive(id, marked?.revision);
      expect((await broker.flows.listLive()).find((m) => m.id === id)).toMatchObject({ id, markedAt: 6 });
      await broker.flows.unmarkLive(id);
      expect((await broker.flows.listLive()).find((m) => m.id === id)).toBeUndefined();
      expect(await broker.flows.getFlow(id)).toEqual({ record: next, revision: rev2 });
      // Its own revision: that mark goes.
      await broker.flows.markLive(id, 7);
      const again = (await broker.flows.listLive()).find((m) => m.id === id);
      expect(again).toMatchObject({ id, markedAt: 7 });
      await broker.flows.unmarkLive(id, again?.revision);
      expect((await broker.flows.listLive()).find((m) => m.id === id)).toBeUndefined();
    });

    /** Every page of a walk from the start, each checked against the page's bounds. */
    const walk = async (
      query: Omit<RecordsPageQuery, "after">,
      between?: (page: number) => Promise<void>,
    ) => {
      const pages: RecordsPage[] = [];
      let after: number | undefined;
      do {
        const page = await broker.listRecordsPage({ ...query, ...(after === undefined ? {} : { after }) });
        expect(page.records.length).toBeLessThanOrEqual(query.limit);
        pages.push(page);
        after = page.next;
        if (pages.length > 500) throw new Error("the walk does not end");
        await between?.(pages.length);
      } while (after !== undefined);
      return pages;
    };
    const idsOf = (pages: readonly RecordsPage[]) => pages.flatMap((p) => p.records.map((r) => r.id));

    it("record pages: in the order of the last write, deletes skipped, filters, next only while more follows", async () => {
      // The ledger: what was written, in the order written.
      const written: JobRecord[] = [];
      for (let i = 0; i < 9; i++) {
        const r = { ...newRecord(1, ack), queue: i % 3 === 0 ? "qa" : "qb" };
        await broker.createRecord(r);
        written.push(r);
      }
      const [first, second] = written as [JobRecord, JobRecord];
      // Deleted: gone (a marker an older version left is read and skipped). Rewritten: moves to the end.
      const found = await broker.getRecord(second.id);
      await broker.deleteRecord(second.id, found?.revision ?? 0);
      await change(first.id, { status: "running" });
      const order = [...written.slice(2), { ...first, status: "running" as const }];

      const pages = await walk({ limit: 3 });
      expect(idsOf(pages)).toEqual(order.map((r) => r.id));
      expect(pages.flatMap((p) => p.records)).toEqual(order);
      // 8 records in pages of 3: the last page says it reached the end.
      expect(pages.map((p) => [p.records.length, p.next !== undefined])).toEqual([
        [3, true],
        [3, true],
        [2, false],
      ]);
      // A page that ends exactly at the end has no next either.
      expect((await broker.listRecordsPage({ limit: 8 })).next).toBeUndefined();
      expect((await broker.listRecordsPage({ limit: 7 })).next).toBeDefined();

      const qa = order.filter((r) => r.queue === "qa");
      expect(idsOf(await walk({ limit: 2, queues: ["qa"] }))).toEqual(qa.map((r) => r.id));
      expect(idsOf(await walk({ limit: 100, statuses: ["running"] }))).toEqual([first.id]);
      expect(idsOf(await walk({ limit: 100, queues: ["qa"], statuses: ["queuing"] }))).toEqual(
        qa.filter((r) => r.status === "queuing").map((r) => r.id),
      );
      expect(idsOf(await walk({ limit: 100, queues: ["none"] }))).toEqual([]);
      // A page starting past the end is empty and final.
      const end = pages.at(-2)?.next ?? 0;
      const pastEnd = await broker.listRecordsPage({ limit: 5, after: end + 1_000_000 });
      expect(pastEnd).toMatchObject({ records: [], store: pages[0]?.store });
      expect(pastEnd.next).toBeUndefined();
      // Where the store's end is known to be before the position (NATS), the page says so.
      if (pastEnd.afterEntry !== undefined) expect(pastEnd.afterEntry).toBe("behind");
      // Every page names the store it read (a cursor is refused in another): the same one for all.
      expect(pages[0]?.store).toMatch(/^[0-9a-f]{8}$/);
      expect(new Set(pages.map((p) => p.store))).toEqual(new Set([pages[0]?.store]));
    });

    it("record pages: maxScan bounds what one call reads; a sparse filter goes on with next", async () => {
      const written: JobRecord[] = [];
      for (let i = 0; i < 7; i++) {
        const r = newRecord(1, ack);
        await broker.createRecord(r);
        written.push(r);
      }
      const wanted = written.at(-1) as JobRecord;
      // Only the last record matches: each call reads 2 stored records at most and returns none
      // of the others, so the walk takes ⌈7 / 2⌉ calls, every one but the last with a next.
      const pages = await walk({ limit: 10, maxScan: 2, queues: [wanted.queue] });
      expect(pages.map((p) => [p.records.map((r) => r.id), p.next !== undefined])).toEqual([
        [[], true],
        [[], true],
        [[], true],
        [[wanted.id], false],
      ]);
    });

    it("record pages: a record this version cannot read is left out and named by the page that read it; the walk goes past it", async () => {
      // The ledger: readable records and unreadable ones (a later version's, one not JSON), interleaved.
      const readable: JobRecord[] = [];
      const raw = { jnewer: '{"v":2,"id":"jnewer"}', jgarbled: "{ not json", jlast: '{"v":2}' };
      const writeReadable = async () => {
        const r = newRecord(1, ack);
        await broker.createRecord(r);
        readable.push(r);
      };
      await writeReadable();
      await h.writeRawRecord("jnewer", raw.jnewer);
      await writeReadable();
      await h.writeRawRecord("jgarbled", raw.jgarbled);
      await writeReadable();
      await h.writeRawRecord("jlast", raw.jlast);
      const [a, b, c] = readable.map((r) => r.id);
      const shape = (pages: readonly RecordsPage[]) =>
        pages.map((p) => [
          p.records.map((r) => r.id),
          (p.unreadable ?? []).map((u) => u.id),
          p.next !== undefined,
        ]);

      // Before: the page that read one threw, whatever its filter; no cursor got past it.
      // An unreadable record is not a record: it counts toward what a page reads, not its limit.
      expect(shape(await walk({ limit: 1 }))).toEqual([
        [[a], [], true],
        [[b], ["jnewer"], true],
        [[c], ["jgarbled"], true],
        [[], ["jlast"], false],
      ]);
      expect(shape(await walk({ limit: 10, maxScan: 2 }))).toEqual([
        [[a], ["jnewer"], true],
        [[b], ["jgarbled"], true],
        [[c], ["jlast"], false],
      ]);
      // Its queue and status are not known: a filtered page names it too.
      expect(
        shape(await walk({ limit: 10, queues: [readable[1]?.queue ?? ""], statuses: ["queuing"] })),
      ).toEqual([[[b], ["jnewer", "jgarbled", "jlast"], false]]);
      const said = (await walk({ limit: 10 })).flatMap((p) => p.unreadable ?? []);
      expect(said.map((u) => [u.id, u.error instanceof Error])).toEqual([
        ["jnewer", true],
        ["jgarbled", true],
        ["jlast", true],
      ]);
      expect(String(said[0]?.error)).toMatch(/unsupported job record version 2/);
      // A page that read none has no `unreadable`.
      const firstPage = await broker.listRecordsPage({ limit: 1 });
      expect(firstPage).toMatchObject({
        records: [readable[0]],
        next: expect.any(Number),
        store: expect.any(String),
      });
      expect(firstPage.unreadable).toBeUndefined();
    });

    it("record pages: a record rewritten during a walk may come twice, one that existed throughout never misses", async () => {
      // The oracle: the ids written before the walk and never deleted, not the broker's listing.
      const before: JobRecord[] = [];
      for (let i = 0; i < 40; i++) {
        const r = newRecord(1, ack);
        await broker.createRecord(r);
        before.push(r);
      }
      const doomed = new Set(before.filter((_, i) => i % 9 === 4).map((r) => r.id));
      const added: string[] = [];
      let rewrites = 0;
      const pages = await walk({ limit: 6 }, async (page) => {
        // Between the first pages: rewrite records behind the cursor and ahead of it, add new
        // ones, delete some. (Rewriting more than a page each time, for good, the walk never ends.)
        if (page > 8) return;
        for (const [i, r] of before.entries()) {
          if (doomed.has(r.id) || (i + page) % 5 !== 0) continue;
          await change(r.id, { updatedAt: r.updatedAt + page });
          rewrites += 1;
        }
        if (page === 2) {
          for (const id of doomed) {
            const found = await broker.getRecord(id);
            if (found) await broker.deleteRecord(id, found.revision);
          }
        }
        if (page < 4) {
          const r = newRecord(1, ack);
          await broker.createRecord(r);
          added.push(r.id);
        }
      });
      expect(rewrites).toBeGreaterThan(20);
      const seen = idsOf(pages);
      const throughout = before.filter((r) => !doomed.has(r.id)).map((r) => r.id);
      expect(throughout.filter((id) => !seen.includes(id))).toEqual([]);
      // Rewritten behind the cursor: listed again at its new place.
      expect(seen.length).toBeGreaterThan(new Set(seen).size);
      // Nothing listed that was never written.
      const known = new Set([...before.map((r) => r.id), ...added]);
      expect(seen.filter((id) => !known.has(id))).toEqual([]);
    });

    it("atomic submit: a crash after publishing is rolled back by the reaper; a resubmit works", async () => {
      const r = newRecord(3, ack);
      const crash = (step: string) => {
        if (step === SubmitStep.tasksPublished) throw new SimulatedCrash("died after publishing");
      };
      await expect(
        submitJob(broker, {
          record: r,
          bodies: taskBodies(3),
          now: Date.now,
          signal: never,
          hooks: { afterStep: crash },
        }),
      ).rejects.toBeInstanceOf(SimulatedCrash);
      expect((await broker.getRecord(r.id))?.record).toMatchObject({
        phase: "submitting",
        status: "queuing",
      });
      expect(await broker.tasksCommitted(r)).toBe(false);
      expect(await loops.consume(broker, r).ended).toBe("gone"); // no worker can see a task

      expect(await reapSubmits(broker, Date.now, 10_000, serverAhead)).toEqual({
        rolledBack: [],
        rolledForward: [],
      });
      const later = await pastStoredDeadline(r);
      expect(await reapSubmits(broker, later, 10_000, serverAhead)).toEqual({
        rolledBack: [r.id],
        rolledForward: [],
      });
      expect((await broker.getRecord(r.id))?.record).toMatchObject({ phase: "rolledBack", status: "failed" });
      expect(await broker.tasksCommitted(r)).toBe(false);

      const again: JobRecord = { ...r, submitId: uid("s") };
      const outcome = await submitJob(broker, {
        record: again,
        bodies: taskBodies(3),
        now: Date.now,
        signal: never,
      });
      expect(outcome.kind).toBe("committed");
      expect((await broker.getRecord(r.id))?.record).toMatchObject({
        phase: "committed",
        status: "running",
        submitId: again.submitId,
      });
      // Only the resubmitted tasks: the crashed submit's were purged.
      expect(await counts(r)).toEqual({ waiting: 3, held: 0, redelivered: 0 });
      const worker = loops.consume(broker, r);
      await eventually(() => worker.leases.length === 3);
      expect(worker.leases.map((l) => [indexOf(l), l.deliveryCount])).toEqual([
        [0, 1],
        [1, 1],
        [2, 1],
      ]);
    });

    it("queueConsumers: the queue's jobs with a consumer of their own and its lane, not another queue's", async () => {
      const queue = uid("q");
      // No stream yet: nothing was ever submitted to the queue.
      expect(await broker.queueConsumers(queue)).toEqual({ jobIds: [], lane: false });
      const a = await openJob({ ...newRecord(1, ack), queue });
      const b = await openJob({ ...newRecord(2, ack), queue });
      await openJob(1); // another queue's
      const uncommitted = { ...newRecord(1, ack), queue };
      await broker.createRecord(uncommitted);
      await broker.publishTasks(uncommitted, taskBodies(1), never);
      let found = await broker.queueConsumers(queue);
      expect([...found.jobIds].sort()).toEqual([a.id, b.id].sort());
      expect(found.lane).toBe(false);
      await openLaneJob(queue);
      await broker.removeTasks(a);
      found = await broker.queueConsumers(queue);
      expect(found).toEqual({ jobIds: [b.id], lane: true });
    });

    it("watchRecordChanges: only writes after onWatching, in order, not deletes; a held reader gets each key's latest", async () => {
      const before = newRecord(1, ack);
      await broker.createRecord(before);
      const seen: JobRecord[] = [];
      let held: Promise<void> | undefined;
      let started = () => {};
      const ready = new Promise<void>((resolve) => {
        started = resolve;
      });
      const watched = broker.watchRecordChanges(
        (record) => {
          seen.push(record);
          return held;
        },
        loops.signal(),
        () => started(),
      );
      await ready;
      await change(before.id, { status: "running" });
      const b = newRecord(1, ack);
      const revB = await broker.createRecord(b);
      // Seen before it is deleted: the bucket keeps a key's last write only, so a create the
      // watch had not read yet when the delete came (a loaded machine) is gone for good.
      await eventually(() => seen.some((x) => x.id === b.id));
      await broker.deleteRecord(b.id, revB);
      const c = newRecord(1, ack);
      await broker.createRecord(c);
      await eventually(() => seen.some((x) => x.id === c.id));
      const mine = (records: JobRecord[]) => records.map((x) => [x.id, x.status]);
      // The record as written before the watch is not delivered: its change is.
      expect(mine(seen)).toEqual([
        [before.id, "running"],
        [b.id, "queuing"],
        [c.id, "queuing"],
      ]);

      // The reader holds the watch with a pending promise: nothing more is handed over until it settles.
      let release = () => {};
      held = new Promise<void>((resolve) => {
        release = resolve;
      });
      await change(c.id, { status: "running" });
      await eventually(() => seen.length === 4);
      held = undefined;
      await change(c.id, { status: "stalled" });
      await change(c.id, { status: "failed" });
      const d = newRecord(1, ack);
      await broker.createRecord(d);
      await h.advance(300);
      expect(seen).toHaveLength(4);
      release();
      await eventually(() => seen.some((x) => x.id === d.id));
      const after = mine(seen.slice(4));
      // Each key at least at its latest revision, in the order written (on NATS the bucket kept
      // only c's latest; the memory broker delivers every revision).
      expect(after.at(-1)).toEqual([d.id, "queuing"]);
      expect(after.filter(([id]) => id === c.id).at(-1)).toEqual([c.id, "failed"]);
      expect([["stalled"], ["failed"], ["stalled", "failed"]]).toContainEqual(
        after.filter(([id]) => id === c.id).map(([, status]) => status),
      );
      loops.abortAll();
      await watched;
    });

    // ---- results and dead letters ----

    it("readResults: in order from the start, pending > 0 until the last stored, onCaughtUp when empty; then live", async () => {
      const job = newJobRef();
      const bodies = [0, 1, 2, 3].map((i) => `[{"i":${i},"ok":true}]`);
      const early = loops.read(broker, job);
      await eventually(() => early.state.caughtUp === 1);
      for (const [n, body] of bodies.slice(0, 3).entries())
        await broker.publishResults(job.queue, job.id, body, `m${n}`);
      await eventually(() => early.messages.length === 3);
      expect(early.messages.map((m) => m.body)).toEqual(bodies.slice(0, 3));

      const late = loops.read(broker, job);
      await eventually(() => late.messages.length === 3);
      expect(late.messages.map((m) => ({ body: m.body, more: m.pending > 0 }))).toEqual(
        bodies.slice(0, 3).map((body, i) => ({ body, more: i < 2 })),
      );
      expect(late.state.caughtUp).toBe(0);
      await broker.publishResults(job.queue, job.id, bodies[3]!, "m3");
      await eventually(() => early.messages.length === 4 && late.messages.length === 4);
      expect(late.messages[3]).toEqual({ body: bodies[3], pending: 0 });
      loops.abortAll();
      await Promise.all([early.ended, late.ended]);
    });

    it("followResults: as readResults (a fresh follower and one that catches up), until its stop; nothing after", async () => {
      const job = newJobRef();
      const bodies = [0, 1, 2, 3, 4].map((i) => `[{"i":${i},"ok":true}]`);
      const follow = (fresh: boolean) => {
        const seen = {
          messages: [] as Array<{ body: string; pending: number }>,
          caughtUp: 0,
          failed: [] as unknown[],
        };
        const stop = broker.followResults(
          job.queue,
          job.id,
          (body, pending) => seen.messages.push({ body, pending }),
          {
            fresh,
            onCaughtUp: () => seen.caughtUp++,
            onFailed: (error) => seen.failed.push(error),
          },
        );
        return { seen, stop };
      };
      // Another job's follower first: on NATS the queue's feed has then fixed where it reads,
      // so the fresh one below takes the fresh path (no catch-up at all).
      let primed = false;
      const primer = broker.followResults(job.queue, uid("j"), () => undefined, {
        onCaughtUp: () => {
          primed = true;
        },
      });
      await eventually(() => primed);
      // Nothing stored yet: a fresh follower (a new submit's feed) is live at once.
      const early = follow(true);
      await eventually(() => early.seen.caughtUp === 1);
      for (const [n, body] of bodies.slice(0, 3).entries())
        await broker.publishResults(job.queue, job.id, body, `m${n}`);
      await eventually(() => early.seen.messages.length === 3);
      expect(early.seen.messages.map((m) => m.body)).toEqual(bodies.slice(0, 3));

      const late = follow(false);
      await eventually(() => late.seen.messages.length === 3);
      expect(late.seen.messages.map((m) => ({ body: m.body, more: m.pending > 0 }))).toEqual(
        bodies.slice(0, 3).map((body, i) => ({ body, more: i < 2 })),
      );
      await broker.publishResults(job.queue, job.id, bodies[3]!, "m3");
      await eventually(() => early.seen.messages.length === 4 && late.seen.messages.length === 4);
      expect(late.seen.messages[3]).toEqual({ body: bodies[3], pending: 0 });

      // Stopped: the next message reaches the one still following, never the stopped one.
      early.stop();
      await broker.publishResults(job.queue, job.id, bodies[4]!, "m4");
      await eventually(() => late.seen.messages.length === 5);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(early.seen.messages).toHaveLength(4);
      late.stop();
      primer();
      expect([...early.seen.failed, ...late.seen.failed]).toEqual([]);
    });

    it("duplicate results message is dropped (same msgId)", async () => {
      const { queue, id } = newJobRef();
      await broker.publishResults(queue, id, '[{"i":0,"ok":true}]', "r1");
      await broker.publishResults(queue, id, '[{"i":0,"ok":true}]', "r1"); // a retried publish
      await broker.publishResults(queue, id, '[{"i":1,"ok":true}]', "r2");
      const reader = loops.read(broker, { queue, id });
      await eventually(() => reader.messages.length === 2);
      expect(reader.messages.map((m) => ({ body: m.body, more: m.pending > 0 }))).toEqual([
        { body: '[{"i":0,"ok":true}]', more: true },
        { body: '[{"i":1,"ok":true}]', more: false },
      ]);
    });

    it("progress notes: a watcher gets the job's notes published while it listens, not other jobs'", async () => {
      const { queue, id: jobId } = newJobRef();
      const heard: string[] = [];
      const listening = new AbortController();
      broker.watchProgress(queue, jobId, (body) => heard.push(body), listening.signal);
      broker.watchProgress(queue, uid("j"), (body) => heard.push(`other ${body}`), loops.signal());
      // The same job id on another queue is another job.
      broker.watchProgress(uid("q"), jobId, (body) => heard.push(`other ${body}`), loops.signal());
      // Not stored: keep publishing until the watcher (a subscription on NATS) is in place.
      let n = 0;
      await eventually(() => {
        broker.publishProgress(queue, jobId, `{"i":0,"info":${n++}}`);
        return heard.length > 0;
      });
      expect(heard.every((b) => /^\{"i":0,"info":\d+\}$/.test(b))).toBe(true);
      listening.abort();
      const before = heard.length;
      // A note published after the watch stopped, then a marker on a fresh watch: the marker arrives, the note never.
      broker.publishProgress(queue, jobId, '{"i":0,"info":"late"}');
      const marker: string[] = [];
      broker.watchProgress(queue, jobId, (body) => marker.push(body), loops.signal());
      await eventually(() => {
        broker.publishProgress(queue, jobId, '{"i":0,"info":"marker"}');
        return marker.length > 0;
      });
      expect(heard.length).toBeLessThanOrEqual(before + 1);
      expect(heard).not.toContain('{"i":0,"info":"marker"}');
      expect(heard.filter((b) => b.startsWith("other"))).toEqual([]);
    });

    it("dead letters: a retried store lands once, every letter is listed in the order stored, removal by seq", async () => {
      const { queue, id: jobId } = newJobRef();
      const letter = (index: number, error: string, source: "worker" | "advisory" = "worker") => ({
        queue,
        jobId,
        index,
        payload: { n: index },
        error,
        deliveries: 3,
        at: Date.now(),
        source,
      });
      const d1 = await broker.storeDeadLetter(letter(1, "boom"), "d1");
      const retried = await broker.storeDeadLetter(letter(1, "boom"), "d1"); // a retried store
      const d2 = await broker.storeDeadLetter(letter(0, "first"), "d2");
      const d3 = await broker.storeDeadLetter(letter(0, "second", "advisory"), "d3"); // the task died twice
      const letters = await broker.listDeadLetters(queue, jobId);
      // Each store answers its letter's sequence (its dead answer names it); a retried one, the first's.
      expect(retried).toBe(d1);
      expect(letters.map((l) => l.seq)).toEqual([d1, d2, d3]);
      expect(await broker.listDeadLetters(uid("q"), jobId)).toEqual([]); // another queue's job of that id
      expect(letters.map((l) => [l.index, l.error, l.taskId, l.payload])).toEqual([
        [1, "boom", `${jobId}.1`, { n: 1 }],
        [0, "first", `${jobId}.0`, { n: 0 }],
        [0, "second", `${jobId}.0`, { n: 0 }],
      ]);
      // One per task, the first stored, as `rt.jobs.deadLetters` shows them.
      expect(firstLetters(letters).map((l) => [l.index, l.error])).toEqual([
        [0, "first"],
        [1, "boom"],
      ]);
      await broker.removeDeadLetters([letters[0]!.seq]);
      // Had the retried store landed twice, task 1 would still be listed.
      expect((await broker.listDeadLetters(queue, jobId)).map((l) => l.index)).toEqual([0, 0]);
      // Removed already (the same redrive made twice at once, or retried after a failure):
      // nothing to do, not a failure of the redrive that asks. (Never a sequence past the
      // stream's end: a clustered nats-server 2.9 does not answer that and resets the stream.)
      await broker.removeDeadLetters([letters[0]!.seq]);
      expect((await broker.listDeadLetters(queue, jobId)).map((l) => l.index)).toEqual([0, 0]);
    });

    // ---- queue controls (rt.queues) ----

    it("queue settings: create, compare-and-set update, list, and a watch that sees the current value then each write", async () => {
      const q = uid("qs");
      expect(await broker.queueControls.getSettings(q)).toBeUndefined();
      const seen: Array<string | undefined> = [];
      const watching = new AbortController();
      const watched = broker.queueControls.watchSettings(q, (value) => seen.push(value), watching.signal);
      const r1 = await broker.queueControls.writeSettings(q, "one", undefined);
      await expect(broker.queueControls.writeSettings(q, "again", undefined)).rejects.toBeInstanceOf(
        RevisionConflict,
      );
      const r2 = await broker.queueControls.writeSettings(q, "two", r1);
      await expect(broker.queueControls.writeSettings(q, "stale", r1)).rejects.toBeInstanceOf(
        RevisionConflict,
      );
      expect(await broker.queueControls.getSettings(q)).toEqual({ value: "two", revision: r2 });
      expect((await broker.queueControls.listSettings()).filter((e) => e.queue === q)).toEqual([
        { queue: q, value: "two" },
      ]);
      await eventually(() => seen.at(-1) === "two");
      expect(seen.filter((v) => v === "stale" || v === "again")).toEqual([]);
      watching.abort();
      await watched;
    });

    it("queue settings written back (restoreSettings) only where nothing of the key is stored", async () => {
      const q = uid("qr");
      expect(await broker.queueControls.restoreSettings(q, "kept")).toBe(true);
      expect((await broker.queueControls.getSettings(q))?.value).toBe("kept");
      const stored = await broker.queueControls.getSettings(q);
      await broker.queueControls.writeSettings(q, "newer", stored?.revision);
      expect(await broker.queueControls.restoreSettings(q, "kept")).toBe(false);
      expect((await broker.queueControls.getSettings(q))?.value).toBe("newer");
    });

    it("permits: a pool of N lends N at once; a release lends it again; a delayed release only after its delay", async () => {
      const q = uid("qp");
      const signal = new AbortController();
      await broker.queueControls.setPermits(q, "concurrency", 2);
      const a = await broker.queueControls.takePermit(q, "concurrency", signal.signal);
      const b = await broker.queueControls.takePermit(q, "concurrency", signal.signal);
      expect(a && b).toBeTruthy();
      let third: unknown;
      const waiting = broker.queueControls.takePermit(q, "concurrency", signal.signal).then((p) => {
        third = p;
        return p;
      });
      await h.advance(ack);
      expect(third).toBeUndefined();
      a?.release(ack * 4);
      await h.advance(ack * 2);
      expect(third).toBeUndefined();
      await h.advance(ack * 3);
      await eventually(() => third !== undefined);
      b?.release();
      (await waiting)?.release();
      // A replaced pool: the permits held from the old one are gone, the new one lends its N.
      const held = await broker.queueControls.takePermit(q, "concurrency", signal.signal);
      await broker.queueControls.setPermits(q, "concurrency", 1);
      held?.release();
      const fresh = await broker.queueControls.takePermit(q, "concurrency", signal.signal);
      let more: unknown;
      const extra = broker.queueControls.takePermit(q, "concurrency", signal.signal).then((p) => {
        more = p;
      });
      await h.advance(ack);
      expect(fresh).toBeTruthy();
      expect(more).toBeUndefined();
      signal.abort();
      await extra;
      expect(more).toBeUndefined();
    });

    it("permits: takeFreePermits lends what is free at once, none from an empty pool", async () => {
      const q = uid("qf");
      await broker.queueControls.setPermits(q, "concurrency", 3);
      const first = await broker.queueControls.takeFreePermits(q, "concurrency", 2);
      expect(first).toHaveLength(2);
      const rest = await broker.queueControls.takeFreePermits(q, "concurrency", 5);
      expect(rest).toHaveLength(1);
      expect(await broker.queueControls.takeFreePermits(q, "concurrency", 5)).toEqual([]);
      // A release lends it again; a delayed one only after its delay.
      first[0]?.release();
      rest[0]?.release(ack * 4);
      await eventually(
        async () => (await broker.queueControls.takeFreePermits(q, "concurrency", 5)).length === 1,
      );
      await h.advance(ack * 5);
      await eventually(
        async () => (await broker.queueControls.takeFreePermits(q, "concurrency", 5)).length === 1,
      );
      expect(await broker.queueControls.takeFreePermits(q, "concurrency", 5)).toEqual([]);
    });

    it("permits: of two rewrites at once the newer record's pool stays, whatever order they end in", async () => {
      const q = uid("qr");
      const rewrite = (revision: number, round: string, looks: Array<() => Promise<boolean>>) => ({
        revision,
        round,
        isLatest: () => (looks.shift() ?? (async () => false))(),
      });
      let newerRan = false;
      const newer = () => {
        newerRan = true;
        return broker.queueControls.setPermits(
          q,
          "concurrency",
          3,
          rewrite(20, "newer", [async () => true, async () => true]),
        );
      };
      // The older one looks first while it is the latest, and the newer one runs whole before its
      // second look (a newer record written meanwhile): on NATS, between its publishes and that look.
      await broker.queueControls.setPermits(
        q,
        "concurrency",
        2,
        rewrite(10, "older", [
          async () => true,
          async () => {
            await newer();
            return false;
          },
        ]),
      );
      // The memory broker does not look (a rewrite is one step there): the newer one runs after.
      if (!newerRan) await newer();
      // The older one's rewrite coming after the newer record's ends no differently.
      await broker.queueControls.setPermits(q, "concurrency", 2, rewrite(10, "older", []));
      const lent = await broker.queueControls.takeFreePermits(q, "concurrency", 10);
      expect(lent).toHaveLength(3);
    });

    it("target pools: filled once on first use by any runtime; a dropped round lends no more", async () => {
      const q = uid("qt");
      const peer = await h.peer("contract-target-peer");
      await broker.queueControls.renewTargetPools(q, undefined);
      const signal = new AbortController();
      const pool = { target: "0123456789abcdef", round: "r1", size: 2 };
      const other = { target: "fedcba9876543210", round: "r1", size: 2 };
      // Two runtimes each fill on their first use: one pool of 2, not 4.
      const a = await broker.queueControls.takeTargetPermit(q, pool, "concurrency", signal.signal);
      const b = await peer.queueControls.takeTargetPermit(q, pool, "concurrency", signal.signal);
      expect(a && b).toBeTruthy();
      let third: unknown;
      const waiting = peer.queueControls.takeTargetPermit(q, pool, "concurrency", signal.signal).then((p) => {
        third = p;
        return p;
      });
      // Another target's pool is its own.
      expect(
        await broker.queueControls.takeTargetPermit(q, other, "concurrency", signal.signal),
      ).toBeTruthy();
      await h.advance(ack);
      expect(third).toBeUndefined();
      a?.release();
      await eventually(() => third !== undefined);
      // Dropped: the permits held from it are forgotten, a taker of the round waits.
      await broker.queueControls.renewTargetPools(q, "r1");
      b?.release();
      (await waiting)?.release();
      const round2 = { ...pool, round: "r2", size: 1 };
      expect(await peer.queueControls.takeTargetPermit(q, round2, "concurrency", signal.signal)).toBeTruthy();
      let more: unknown;
      const extra = broker.queueControls
        .takeTargetPermit(q, round2, "concurrency", signal.signal)
        .then((p) => {
          more = p;
        });
      await h.advance(ack);
      expect(more).toBeUndefined();
      signal.abort();
      await extra;
      expect(more).toBeUndefined();
    });

    it("maxPayload: a larger message is refused with a permanent error", async () => {
      const max = await broker.maxPayload();
      expect(max).toBeGreaterThanOrEqual(64 * 1024);
      await expect(
        broker.publishResults(uid("q"), uid("j"), "x".repeat(max + 1), "big"),
      ).rejects.toMatchObject({
        _tag: "PermanentBrokerError",
      });
    });

    // ---- supervision and housekeeping ----

    /** The clock the broker's leases go by: its manual one (memory), or the host's. */
    const brokerNow = () => h.clock?.now() ?? Date.now();
    /**
     * A lease's `until` as another runtime reads it: its span counted from the server's stamp
     * of its write, so within the time the write took of `writtenAt + span`.
     */
    const near = (until: number | undefined, expected: number, withinMs = 250) =>
      expect(Math.abs((until ?? Number.NaN) - expected), `${until} near ${expected}`).toBeLessThan(withinMs);

    // Time passes for the server too (`h.advance`): a lease's `until` as another runtime reads
    // it counts from the server's stamp of its write (a reader whose clock runs ahead of the
    // holder's must not take a live lease for run out). Spans of 2 s, each check 800 ms or more
    // from a boundary.
    it("supervision leases: acquire, renew, expiry and takeover, release", async () => {
      const a = broker.leases;
      const b = (await h.peer("contract-peer")).leases;
      expect(a.holder).not.toBe(b.holder);
      const span = 2000;
      const jobId = uid("j");
      // Stored before the job's lease: its replaced writes lie behind a message still stored.
      const pinned = uid("j");
      expect(await a.acquire(pinned, 60_000, brokerNow())).toBe(true);
      expect(await a.acquire(jobId, span, brokerNow())).toBe(true);
      expect(a.holds(jobId)).toBe(true);
      expect(await a.acquire(jobId, span, brokerNow())).toBe(true); // ours already
      expect(await b.acquire(jobId, span, brokerNow())).toBe(false);
      expect(b.holds(jobId, brokerNow())).toBe(false);
      // a supervises (it took the lease), b only tried.
      expect([a.supervises(jobId), b.supervises(jobId)]).toEqual([true, false]);
      await h.advance(800);
      const renewedAt = brokerNow();
      expect(await a.renew(jobId, span, renewedAt)).toBe(true);
      await h.advance(1200); // past the first write's span, not the renewal's
      expect(await b.acquire(jobId, span, brokerNow())).toBe(false);
      const [before] = (await a.list(brokerNow())).filter((l) => l.jobId === jobId);
      near(before?.lease.until, renewedAt + span);
      await h.advance(span - 1200 + 800); // the renewal's span and 800 ms
      // Run out on a's clock, but not given up: still its supervisor until it hears otherwise.
      expect(a.holds(jobId, brokerNow())).toBe(false);
      expect(a.supervises(jobId)).toBe(true);
      const takenAt = brokerNow();
      expect(await b.acquire(jobId, span, takenAt)).toBe(true); // ran out: taken over
      // A removal or a release by the holder that lost it (it has not heard yet) removes only
      // its own write, and is no error.
      await a.remove(jobId, before?.revision);
      await a.release(jobId);
      const [taken] = (await b.list(brokerNow())).filter((l) => l.jobId === jobId);
      expect(taken).toMatchObject({ jobId, lease: { holder: b.holder } });
      near(taken?.lease.until, takenAt + span);
      expect(await a.acquire(jobId, span, brokerNow())).toBe(false);
      expect(await a.renew(jobId, span, brokerNow())).toBe(false);
      expect(a.holds(jobId)).toBe(false);
      expect([a.supervises(jobId), b.supervises(jobId)]).toEqual([false, true]);
      const renewedByB = brokerNow();
      expect(await b.renew(jobId, span, renewedByB)).toBe(true);
      const [renewed] = (await a.list(brokerNow())).filter((l) => l.jobId === jobId);
      expect(renewed).toMatchObject({ jobId, lease: { holder: b.holder } });
      near(renewed?.lease.until, renewedByB + span);
      await b.release(jobId);
      expect(b.holds(jobId)).toBe(false);
      expect(b.supervises(jobId)).toBe(false);
      expect((await a.list(brokerNow())).map((l) => l.jobId)).not.toContain(jobId);
      expect(await a.acquire(jobId, span, brokerNow())).toBe(true); // free again
      // Taken over again once run out; a's try to take it back reads it b's: a has heard, and
      // supervises it no more (a deposed supervisor's clock went on deciding the job's stall).
      await h.advance(span + 800);
      expect(await b.acquire(jobId, span, brokerNow())).toBe(true);
      expect(a.supervises(jobId)).toBe(true); // not heard yet
      expect(await a.acquire(jobId, span, brokerNow())).toBe(false);
      expect(a.supervises(jobId)).toBe(false);
      await b.release(jobId);
      expect(await a.acquire(jobId, span, brokerNow())).toBe(true);
      await a.remove(jobId);
      expect((await b.list(brokerNow())).map((l) => l.jobId)).not.toContain(jobId);
      expect(await a.renew(uid("j"), span)).toBe(false); // never held
      await a.release(pinned);
    });

    // A lease says until when by its holder's clock: a runtime whose clock ran ahead of the
    // holder's by more than the lease read every live lease as run out, and took it over.
    it("supervision leases: a runtime whose clock runs a minute ahead reads another's live lease as live", async () => {
      const a = (await h.peer("contract-skew-holder")).leases;
      const ahead = (await h.peer("contract-skew-ahead")).leases;
      const aheadNow = () => brokerNow() + 60_000;
      const jobId = uid("j");
      const writtenAt = brokerNow();
      expect(await a.acquire(jobId, 2000, writtenAt)).toBe(true);
      // It has listed nothing yet (on NATS: no reading of the server's clock): its first look at
      // another's lease reads one.
      expect(await ahead.acquire(jobId, 2000, aheadNow())).toBe(false);
      expect(ahead.supervises(jobId)).toBe(false);
      const [listed] = (await ahead.list(aheadNow())).filter((l) => l.jobId === jobId);
      expect(listed?.lease.holder).toBe(a.holder);
      near(listed?.lease.until, writtenAt + 60_000 + 2000);
      await h.advance(2800);
      expect(await ahead.acquire(jobId, 2000, aheadNow())).toBe(true); // run out by every clock
      await ahead.release(jobId);
    });

    it("supervision leases: get reads one job's lease as list() does, its holder's heartbeat included", async () => {
      // Two peers of their own: the heartbeat written here must not cover another test's leases.
      const a = (await h.peer("contract-get-holder")).leases;
      const b = (await h.peer("contract-get-reader")).leases;
      const held = uid("j");
      const enrolled = uid("j");
      expect(await b.get(held, brokerNow())).toBeUndefined();
      const t0 = brokerNow();
      expect(await a.acquire(held, 1000, t0)).toBe(true);
      // A reading of the server's clock (on NATS a listing of a bucket not empty takes it), as a
      // takeover has: `get` reads by it as `list` does.
      await b.list(brokerNow());
      const one = await b.get(held, brokerNow());
      expect(one).toMatchObject({ jobId: held, lease: { holder: a.holder } });
      near(one?.lease.until, t0 + 1000);
      const givenBack = uid("j");
      expect(await a.acquire(givenBack, 1000, t0)).toBe(true);
      // The holder's heartbeat carries its lease past the lease's own `until`; not one given back.
      const beatAt = brokerNow();
      await a.heartbeat(60_000, beatAt);
      await a.giveBack(givenBack);
      expect(await a.enrol(enrolled)).toBe(true);
      const ids = [held, enrolled, givenBack];
      const got = await Promise.all(ids.map((id) => b.get(id, brokerNow())));
      expect(got).toMatchObject([
        { jobId: held, lease: { holder: a.holder } },
        { jobId: enrolled, lease: { holder: "", until: 0 } },
        { jobId: givenBack, lease: { holder: a.holder, until: 0 } },
      ]);
      near(got[0]?.lease.until, beatAt + 60_000);
      // The same as the listing, revisions included (each `until` within the error of a reading
      // of the server's clock, a round trip at most: each listing reads it anew).
      const listed = await b.list(brokerNow());
      for (const [n, id] of ids.entries()) {
        const [one, inList] = [got[n], listed.find((l) => l.jobId === id)];
        expect({ ...one, lease: one?.lease.holder }).toEqual({ ...inList, lease: inList?.lease.holder });
        near(one?.lease.until, inList?.lease.until ?? Number.NaN);
      }
      await a.release(held);
      await a.remove(enrolled);
      await a.remove(givenBack);
      expect(await Promise.all(ids.map((id) => b.get(id)))).toEqual([undefined, undefined, undefined]);
    });

    it("cleanup running while jobs are submitted never touches a job that started during its pass", async () => {
      // Cleanup reads the records and lists the leftovers at different moments: a job whose record
      // is written between the two must not look like one without a record. Ledger: what each
      // job was given (its tasks, consumer and lease), read back after the passes.
      let passes = 0;
      let stop = false;
      const cleaning = (async () => {
        while (!stop) {
          await broker.cleanup({ retentionMs: 3600_000 });
          passes += 1;
          // The memory broker's pass never waits on I/O: let the submits' timers run between passes.
          await new Promise((resolve) => setImmediate(resolve));
        }
      })();
      const jobs: JobRecord[] = [];
      try {
        for (let k = 0; k < 30; k++) {
          const job = await openJob(2);
          await change(job.id, { status: "running", phase: "committed" });
          await broker.leases.acquire(job.id, 60_000);
          jobs.push(job);
        }
        const passesWhileSubmitting = passes;
        await eventually(() => passes >= passesWhileSubmitting + 2); // two whole passes after the last
      } finally {
        stop = true;
        await cleaning;
      }
      expect(passes).toBeGreaterThan(2);
      const held = new Set((await broker.leases.list()).map((l) => l.jobId));
      for (const job of jobs) {
        expect({ id: job.id, consumer: await broker.tasksCommitted(job) }).toEqual({
          id: job.id,
          consumer: true,
        });
        expect({ id: job.id, counts: await counts(job) }).toEqual({
          id: job.id,
          counts: { waiting: 2, held: 0, redelivered: 0 },
        });
        expect({ id: job.id, lease: held.has(job.id) }).toEqual({ id: job.id, lease: true });
      }
    });

    it("cleanup: a dry run only reports; a real run removes what finished and unknown jobs left", async () => {
      const prefix = h.prefix ?? "jetstate";
      const now = Date.now();
      const retentionMs = 60_000;
      const tasks = (r: JobRecord) => `${prefix}.tasks.${r.queue}.${r.id}`;
      const results = (job: JobRef) => `${prefix}.results.${job.queue}.${job.id}`;
      const old = await openJob(2); // finished long ago
      await change(old.id, { status: "succeeded", phase: "committed", finishedAt: now - 2 * retentionMs });
      await broker.publishResults(old.queue, old.id, '[{"i":0,"ok":true}]', uid("m"));
      await broker.storeDeadLetter(
        {
          queue: old.queue,
          jobId: old.id,
          index: 1,
          payload: 1,
          error: "x",
          deliveries: 1,
          at: now,
          source: "worker",
        },
        uid("m"),
      );
      const recent = await openJob(1); // finished just now: record and results kept
      await change(recent.id, { status: "failed", phase: "committed", finishedAt: now });
      await broker.publishResults(recent.queue, recent.id, '[{"i":0,"ok":false}]', uid("m"));
      const running = await openJob(1);
      await change(running.id, { status: "running", phase: "committed" });
      await broker.publishResults(running.queue, running.id, '[{"i":0,"ok":true}]', uid("m"));
      const submitting = newRecord(1, ack); // the reaper's, not cleanup's
      await broker.createRecord(submitting);
      await broker.publishTasks(submitting, taskBodies(1), never);
      const unknown = newRecord(1, ack); // consumer and tasks, no record
      await broker.publishTasks(unknown, taskBodies(1), never);
      await broker.createConsumer(unknown.queue, unknown.id, unknown.settings);
      const orphan = newJobRef(); // results and a dead letter, no record
      await broker.publishResults(orphan.queue, orphan.id, "[]", uid("m"));
      // A letter of a job with no record (stored after it went) goes; a running job's stays.
      const letterOf = (job: JobRef) => ({
        queue: job.queue,
        jobId: job.id,
        index: 0,
        payload: 0,
        error: "x",
        deliveries: 1,
        at: now,
        source: "worker" as const,
      });
      await broker.storeDeadLetter(letterOf(orphan), uid("m"));
      await broker.storeDeadLetter(letterOf(running), uid("m"));
      for (const id of [old.id, recent.id, running.id, unknown.id]) await broker.leases.acquire(id, 60_000);

      const expected = {
        consumersDeleted: [old.id, recent.id, unknown.id].sort(),
        tasksPurged: [tasks(old), tasks(recent), tasks(unknown)].sort(),
        recordsRemoved: [old.id],
        resultsPurged: [results(old), results(orphan)].sort(),
        leasesRemoved: [old.id, recent.id, unknown.id].sort(),
        // Not over and without a lease: given a run-out one, for takeover and the reaper to find.
        leasesAdded: [submitting.id],
      };
      const sorted = (report: Awaited<ReturnType<Broker["cleanup"]>>) => ({
        dryRun: report.dryRun,
        consumersDeleted: [...report.consumersDeleted].sort(),
        tasksPurged: [...report.tasksPurged].sort(),
        recordsRemoved: [...report.recordsRemoved].sort(),
        resultsPurged: [...report.resultsPurged].sort(),
        leasesRemoved: [...report.leasesRemoved].sort(),
        leasesAdded: [...report.leasesAdded].sort(),
      });
      expect(sorted(await broker.cleanup({ dryRun: true, retentionMs, now }))).toEqual({
        dryRun: true,
        ...expected,
      });
      expect(await broker.tasksCommitted(old)).toBe(true);
      expect(await broker.getRecord(old.id)).toBeDefined();
      expect(await broker.listDeadLetters(old.queue, old.id)).toHaveLength(1);

      expect(sorted(await broker.cleanup({ retentionMs, now }))).toEqual({ dryRun: false, ...expected });
      for (const job of [old, recent, unknown]) expect(await broker.tasksCommitted(job)).toBe(false);
      expect(await counts(running)).toEqual({ waiting: 1, held: 0, redelivered: 0 });
      expect(await broker.getRecord(old.id)).toBeUndefined();
      expect(await broker.getRecord(recent.id)).toBeDefined();
      expect(await broker.getRecord(submitting.id)).toBeDefined();
      expect(await broker.listDeadLetters(old.queue, old.id)).toEqual([]);
      expect(await broker.listDeadLetters(orphan.queue, orphan.id)).toEqual([]);
      expect(await broker.listDeadLetters(running.queue, running.id)).toHaveLength(1);
      expect((await broker.leases.list()).map((l) => l.jobId).sort()).toEqual(
        [running.id, submitting.id].sort(),
      );
      expect((await broker.leases.list()).find((l) => l.jobId === submitting.id)?.lease.until).toBe(0);
      const readers = [old, orphan, recent, running].map((job) => loops.read(broker, job));
      await eventually(() => readers[2]!.messages.length === 1 && readers[3]!.messages.length === 1);
      await eventually(() => readers[0]!.state.caughtUp === 1 && readers[1]!.state.caughtUp === 1);
      expect(readers[0]!.messages.length + readers[1]!.messages.length).toBe(0);
      // The crashed submit's tasks are still there for the reaper to roll back.
      await broker.createConsumer(submitting.queue, submitting.id, submitting.settings);
      expect(await counts(submitting)).toMatchObject({ waiting: 1 });

      expect(sorted(await broker.cleanup({ retentionMs, now }))).toEqual({
        dryRun: false,
        consumersDeleted: [],
        tasksPurged: [],
        recordsRemoved: [],
        resultsPurged: [],
        leasesRemoved: [],
        leasesAdded: [],
      });
    });
  });
