import type { Broker, TaskLease } from "../adapters/broker.ts";
import type { RecordFound } from "../adapters/job-records.ts";
import type { LaneLease } from "../adapters/task-queue.ts";
import type { LoopGroup } from "../effects/loop-group.ts";
import { untilDone } from "../effects/retry.ts";
import {
  awaitsLaneCommit,
  type JobRecord,
  laneAckWaitMs,
  laneMaxDeliver,
  leaseKeepEveryMs,
  SubmitPhase,
  takesTasks,
} from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import type { ActiveJob } from "./running-tasks.ts";

/** What a worker's lane loop shares with the rest of the worker. */
interface LaneDeps {
  readonly broker: Pick<Broker, "getRecord" | "consumeLane">;
  readonly queue: string;
  readonly concurrency: number;
  /** The jobs the worker follows, by id. */
  readonly jobs: ReadonlyMap<string, ActiveJob>;
  /** Follows a job the worker did not follow yet. */
  readonly follow: (record: JobRecord, revision: number) => ActiveJob;
  /** Runs a pulled task of a followed job (through the slots and the queue's gate). */
  readonly onTask: (msg: TaskLease, job: ActiveJob) => void | Promise<void>;
  readonly release: (msg: TaskLease, delayMs?: number) => void;
  /** Settled once the server's max payload is known: nothing is pulled before. */
  readonly payloadKnown: Promise<void>;
  /** Aborted when the worker stops pulling. */
  readonly pulling: AbortSignal;
  readonly loops: LoopGroup;
  readonly log: Logger;
  /** The name of its loop in `loops`. */
  readonly name: string;
}

/** A worker's loop on its queue's lane. */
export interface LaneLoop {
  /** Starts it, once (every call after the first does nothing). */
  readonly pull: () => void;
  /** A record the worker's watch handed over: kept while a lane task's read of its job runs. */
  readonly heard: (record: JobRecord, revision: number) => void;
  /** Settles once its loop has ended (at once if it never started). */
  readonly stopped: () => Promise<unknown>;
}

export const laneLoop = (deps: LaneDeps): LaneLoop => {
  const { broker, queue: queueName, concurrency, jobs, follow, onTask, log } = deps;
  // Each job a lane task's read of is under way for: the one read its tasks share, and the newest
  // record the watch handed over meanwhile.
  const reading = new Map<
    string,
    { readers: number; read: Promise<RecordFound | undefined>; heard?: RecordFound }
  >();
  const commits = new AwaitedCommits(deps, (lease, job) => runTask(lease, job));
  const heard = (record: JobRecord, revision: number) => {
    const read = reading.get(record.id);
    if (read && (read.heard === undefined || revision > read.heard.revision))
      read.heard = { record, revision };
    commits.heard(record, revision);
  };
  /** Runs a task its loop no longer waits for (held until its job's commit). */
  const runTask = (lease: LaneLease, job: ActiveJob) =>
    Promise.resolve(onTask(lease, job)).catch((error: unknown) =>
      log.warn({ err: error, jobId: lease.jobId }, "lane task held until its job's commit failed to run"),
    );

  /**
   * The job a lane delivery is of: known from the record watch, or read now
   * (the task can arrive before the watch shows its record). A task of a job
   * that is over, rolled back or has no record never runs: it is removed. A
   * record that cannot be read now: the task is held, and the record read
   * again until it is (`AwaitedCommits.holdUnread`).
   */
  const laneJobOf = async (lease: LaneLease): Promise<ActiveJob | undefined> => {
    const { jobId } = lease;
    // Its job known not committed yet (its record heard, or read for another of its tasks).
    if (commits.awaits(jobId)) {
      await commits.hold(lease, jobId);
      return undefined;
    }
    let found: RecordFound | undefined;
    let unread: { readonly error: unknown } | undefined;
    // One read for the tasks of a job that come together (a lane job of several tasks).
    let reader = reading.get(jobId);
    if (!reader) {
      reader = { readers: 0, read: broker.getRecord(jobId) };
      reading.set(jobId, reader);
    }
    reader.readers += 1;
    try {
      found = await reader.read;
    } catch (error) {
      unread = { error };
    } finally {
      reader.readers -= 1;
      if (reader.readers === 0 && reading.get(jobId) === reader) reading.delete(jobId);
    }
    // Handed over while the read ran and newer than it (its end, written meanwhile): the job's
    // news; when the read failed, what is known of the job.
    const { heard } = reader;
    if (heard && (found === undefined || heard.revision > found.revision)) found = heard;
    const followed = jobs.get(lease.jobId);
    if (followed) return followed;
    if (unread && found === undefined) {
      // Held, its record read again until it is: released, it would spend a delivery at each
      // failed read, and a store's leader election (seconds) could make it die unrun.
      log.debug({ err: unread.error, jobId }, "lane task's job not read; the task is held until it is");
      await commits.holdUnread(lease, jobId);
      return undefined;
    }
    const record = found?.record;
    if (found && record?.queue === queueName && takesTasks(found.record))
      return follow(found.record, found.revision);
    // Its job's other tasks are still being published: held, unrun, until its commit is heard.
    if (found && record?.queue === queueName && awaitsLaneCommit(found.record)) {
      await commits.hold(lease, found.record.id);
      return undefined;
    }
    log.info(
      { jobId: lease.jobId, status: record?.status },
      "lane task of a job that is not running; removed",
    );
    lease.term();
    return undefined;
  };

  /**
   * Runs a lane delivery. A task of a job the worker follows starts in this
   * turn, as a job's own loop's does (a promise for its loop to await only
   * when it waits for a slot).
   */
  const onLaneTask = (lease: LaneLease): void | Promise<void> => {
    const known = jobs.get(lease.jobId);
    if (known) return onTask(lease, known);
    return laneJobOf(lease).then((job) => (job ? onTask(lease, job) : undefined));
  };

  let laned: Promise<unknown> | undefined;
  /**
   * Pulls the queue's lane from the first lane job on (a queue whose jobs
   * never use it costs no lane loop), for as long as the worker runs.
   */
  const pullLane = () => {
    if (laned) return;
    log.info("pulling the queue's lane");
    const loop = deps.payloadKnown
      .then(() => broker.consumeLane(queueName, Math.min(concurrency, 256), onLaneTask, deps.pulling))
      .catch((error) => log.warn({ err: error }, "pulling the queue's lane failed"));
    laned = loop;
    deps.loops.run(deps.name, () => loop);
  };

  return { pull: pullLane, heard, stopped: () => laned ?? Promise.resolve() };
};

/** The first pause between two failed reads of a held task's job (`holdUnread`). */
const unreadRetryMs = 1000;

/** How long a held task of a submit rolled back goes back for (one delivery spent). */
const rolledBackReleaseMs = 1000;

/**
 * How long the lane loop waits, at most, once it holds as many tasks as the
 * worker has slots: a submit that died between its publishes and its commit
 * must not stop the lane here until the reaper rolls it back.
 */
const fullHoldWaitMs = 1000;

/**
 * The lane tasks a worker holds until their job's commit: tasks of a lane
 * job of more than one task can reach a worker while its submit still
 * publishes the others (its record's write commits it, `awaitsLaneCommit`).
 * Each is held, its lease kept, until the record watch shows the commit
 * (they run), the rollback (they are released: it removes them) or the
 * end (they are removed); the records are
 * also read again every `leaseKeepEveryMs` of the lane's ack wait, in case
 * the watch missed a write. A worker that stops releases them. Once it
 * holds as many as it has slots, the lane loop waits before it takes the
 * next task (until some are settled, or `fullHoldWaitMs`): held tasks are
 * not in its pull window, and it would otherwise take a job's every task
 * while the queue's other workers have free slots.
 */
class AwaitedCommits {
  readonly #deps: LaneDeps;
  readonly #run: (lease: LaneLease, job: ActiveJob) => void;
  readonly #held = new Map<string, LaneLease[]>();
  /** The jobs whose record `holdUnread` reads again. */
  readonly #rereading = new Set<string>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #stopHeard = false;
  /** Tasks held, all jobs together. */
  #count = 0;
  /** The lane loop's wait for room, when it holds as many tasks as the worker has slots. */
  #roomWaiters: Array<() => void> = [];

  constructor(deps: LaneDeps, run: (lease: LaneLease, job: ActiveJob) => void) {
    this.#deps = deps;
    this.#run = run;
  }

  /** Whether the job is known not committed yet: its tasks are held without a read. */
  awaits(jobId: string): boolean {
    return this.#held.has(jobId);
  }

  /** Holds the task; a promise for the lane loop to wait on when the worker holds as many as it has slots. */
  hold(lease: LaneLease, jobId: string): Promise<void> | undefined {
    const { pulling, release, concurrency } = this.#deps;
    if (pulling.aborted) {
      release(lease);
      return undefined;
    }
    const held = this.#held.get(jobId);
    if (held) held.push(lease);
    else this.#watch(jobId, [lease]);
    this.#count += 1;
    if (this.#count < concurrency) return undefined;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, fullHoldWaitMs);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#roomWaiters.push(done);
    });
  }

  /**
   * Holds a task whose job's record could not be read, as `hold` does, and
   * reads the record again (at once, then after 1 s, doubling up to the
   * keep interval, each pause jittered) until a read answers, the job's
   * tasks are settled otherwise (its record heard from the watch) or the
   * worker stops. A task held so
   * spends no delivery: released at each failed read, a task met by a store
   * unavailable for a few seconds (a leader election) died unrun. Once the
   * worker holds as many tasks as it has slots, the task is released as
   * before (a delivery spent), and the lane loop goes on, unless it is on
   * its last delivery (the lane's `maxDeliver`): that one is held all the
   * same.
   */
  holdUnread(lease: LaneLease, jobId: string): Promise<void> | undefined {
    // Held as many as the worker has slots (a store out for long): released, as before, rather
    // than the lane loop slowed to a task a second (`fullHoldWaitMs`) for the jobs it follows;
    // but not on its last delivery, which a release would make die unrun.
    if (this.#count >= this.#deps.concurrency && lease.deliveryCount < laneMaxDeliver) {
      this.#deps.release(lease, unreadRetryMs);
      return undefined;
    }
    const waiting = this.hold(lease, jobId);
    if (this.#held.has(jobId) && !this.#rereading.has(jobId)) {
      this.#rereading.add(jobId);
      const { broker, pulling, log } = this.#deps;
      void untilDone(
        async () => {
          if (this.#held.has(jobId)) this.#settle(jobId, await broker.getRecord(jobId));
        },
        { initialMs: unreadRetryMs, maxMs: leaseKeepEveryMs(laneAckWaitMs), jitter: true },
        pulling,
        () => true,
        (error) => log.debug({ err: error, jobId }, "held lane tasks' job still not read"),
      ).finally(() => this.#rereading.delete(jobId));
    }
    return waiting;
  }

  /** `settled` tasks are no longer held: the lane loop goes on once there is room. */
  #letGo(settled: number): void {
    this.#count -= settled;
    if (this.#count >= this.#deps.concurrency && !this.#deps.pulling.aborted) return;
    const waiters = this.#roomWaiters;
    this.#roomWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Holds the job's tasks from now on; its record is read again every few seconds meanwhile. */
  #watch(jobId: string, held: LaneLease[]): void {
    this.#held.set(jobId, held);
    this.#timer ??= setInterval(() => this.#keep(), leaseKeepEveryMs(laneAckWaitMs));
    if (!this.#stopHeard) {
      this.#stopHeard = true;
      this.#deps.pulling.addEventListener("abort", () => this.#releaseAll(), { once: true });
    }
  }

  /**
   * A record of one of the queue's lane jobs, from the watch: a job heard
   * not committed yet has its tasks held as they come, without a read of
   * its record each.
   */
  heard(record: JobRecord, revision: number): void {
    if (this.#held.has(record.id)) this.#settle(record.id, { record, revision });
    else if (awaitsLaneCommit(record) && !this.#deps.jobs.has(record.id) && !this.#deps.pulling.aborted)
      this.#watch(record.id, []);
  }

  /**
   * Runs the job's tasks held once it is committed; releases them once it is
   * rolled back (its rollback removes them) or the worker stops; removes
   * them once it is over or gone (no record).
   */
  #settle(jobId: string, found: RecordFound | undefined): void {
    const held = this.#held.get(jobId);
    if (!held || (found && awaitsLaneCommit(found.record))) return;
    this.#held.delete(jobId);
    this.#stopTimerIfIdle();
    // None of its tasks came here: what the record says is the watch's to act on.
    if (held.length === 0) return;
    this.#letGo(held.length);
    const { jobs, follow, pulling, release, log } = this.#deps;
    if (pulling.aborted) {
      for (const lease of held) release(lease);
    } else if (found && takesTasks(found.record)) {
      const job = jobs.get(jobId) ?? follow(found.record, found.revision);
      for (const lease of held) this.#run(lease, job);
    } else if (found?.record.phase === SubmitPhase.rolledBack) {
      // Its rollback removes its tasks. Released, not termed: the watch may hand the rollback
      // over late, after the next submit of the key took the record over and published its own
      // tasks, some held here under this job's id since; each comes again and is read anew.
      log.info({ jobId }, "lane tasks of a submit rolled back; released");
      for (const lease of held) release(lease, rolledBackReleaseMs);
    } else {
      log.info({ jobId, status: found?.record.status }, "lane tasks of a job that is over; removed");
      for (const lease of held) lease.term();
    }
  }

  /** Keeps the leases of the tasks held, and reads their jobs' records again (the watch may miss a write). */
  #keep(): void {
    for (const [jobId, held] of this.#held) {
      for (const lease of held) {
        try {
          lease.working();
        } catch (error) {
          // Its connection gone: the lease runs out, and the task comes again.
          this.#deps.log.debug({ err: error, jobId }, "held lane task's lease not extended");
        }
      }
      this.#deps.broker.getRecord(jobId).then(
        (found) => this.#settle(jobId, found),
        (error: unknown) => this.#deps.log.debug({ err: error, jobId }, "held lane tasks' job not read"),
      );
    }
  }

  #releaseAll(): void {
    for (const held of this.#held.values()) for (const lease of held) this.#deps.release(lease);
    this.#held.clear();
    this.#stopTimerIfIdle();
    this.#letGo(this.#count);
  }

  #stopTimerIfIdle(): void {
    if (this.#held.size > 0 || this.#timer === undefined) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
