import { Schema } from "effect";
import { laneMaxTasksDefault, laneMaxTasksLimit } from "../kernel/job-record.ts";
import { number, TimerMs, TimerMsOrZero, withDefault } from "../kernel/validation.ts";

/** How the runtime supervises, reaps and cleans up jobs. */
export interface JobRuntimeOptions {
  /**
   * Supervision lease, in ms: a job whose supervising runtime died is taken over after it.
   * @defaultValue 10000
   */
  readonly leaseMs?: number;
  /**
   * Take over jobs whose supervisor died.
   * @defaultValue true
   */
  readonly takeOver?: boolean;
  /**
   * How often to look for submits that died before committing, in ms; 0:
   * never in this runtime (another admin runtime must, or `rt.admin.cleanup()`
   * finds their leftovers only after the retention).
   * @defaultValue 15000
   */
  readonly reapIntervalMs?: number;
  /**
   * Margin after a submit's commit deadline before it is rolled back, in ms.
   * @defaultValue 10000
   */
  readonly reapGraceMs?: number;
  /**
   * How long finished jobs' records, results and dead letters are kept, in ms,
   * and settled flows' records (a flow not settled keeps its jobs' until it settles).
   * @defaultValue 604800000 (7 days)
   */
  readonly retentionMs?: number;
  /**
   * How often finished and abandoned jobs are cleaned up, in ms; 0: only on demand (`rt.admin.cleanup()`).
   * @defaultValue 600000 (10 min)
   */
  readonly cleanupIntervalMs?: number;
  /**
   * Put each small job (at most `laneMaxTasks` tasks, with the default 30 s
   * ack wait, 5 deliveries and priority 0) on its queue's lane: one consumer
   * per queue serves them all, so a small job costs no consumer of its own
   * (and a job of one task is committed by its task's publish). HTTP workers take lane jobs' tasks from the queue
   * (`POST /queues/{queue}/tasks`); a lane job's own reserve
   * (`POST /jobs/{id}/tasks`) answers 409 `job_in_lane`. Off: every job gets
   * its own consumer, as before 0.3.
   * @defaultValue true
   */
  readonly lane?: boolean;
  /**
   * The most tasks a job on its queue's lane may have (with `lane` on). A
   * lane job of more than one task commits with its record's write once its
   * tasks are stored; a worker holds any of its tasks that comes first until
   * then. What it saves is a consumer's create and delete, which cost the
   * server as much as some tens of tasks; what it costs is the lane's order:
   * the lane is one queue, first in first out, so a job's turn there comes
   * after every lane task stored before it, where a job with a consumer of
   * its own takes turns with the other jobs. 1: only jobs of one task; at
   * most 1000.
   * @defaultValue 100
   */
  readonly laneMaxTasks?: number;
  /**
   * Keep each job's own consumer in the NATS server's memory (`mem_storage`)
   * instead of on its disk: made and deleted for about a third of the
   * server's CPU, which is what many concurrent jobs pay (50 jobs of 100
   * tasks against one job of 5,000: 0.58–0.78 of its speed on disk and
   * 0.71–0.96 in memory, medians of four bench runs). The price is a server
   * restart: the consumers are gone. Each job's supervisor makes its consumer
   * again, but the tasks workers held then are delivered again, and may run
   * twice (on a cluster, a node back with an empty store re-ran more than
   * half of a job's tasks in one chaos run). No effect on the memory
   * broker, nor on lane jobs (no consumer of their own).
   * @defaultValue false
   */
  readonly memoryConsumers?: boolean;
  /**
   * Fire the ticks of the stored schedules (`rt.schedules`) from this
   * runtime, when it has the submitter role. Every such runtime fires each
   * tick, and the tick's idempotency key makes it one job; off: this runtime
   * only manages schedules (the CLI).
   * @defaultValue true
   */
  readonly scheduler?: boolean;
}

/** `jobs`: each field's default is the one its documentation states. */
export const JobsShape = Schema.Struct({
  leaseMs: withDefault(TimerMs, 10_000),
  takeOver: withDefault(Schema.Boolean, true),
  reapIntervalMs: withDefault(TimerMsOrZero, 15_000),
  reapGraceMs: withDefault(TimerMsOrZero, 10_000),
  retentionMs: withDefault(number(1, Number.MAX_SAFE_INTEGER), 7 * 24 * 3600_000),
  cleanupIntervalMs: withDefault(TimerMsOrZero, 600_000),
  lane: withDefault(Schema.Boolean, true),
  laneMaxTasks: withDefault(number(1, laneMaxTasksLimit), laneMaxTasksDefault),
  memoryConsumers: withDefault(Schema.Boolean, false),
  scheduler: withDefault(Schema.Boolean, true),
} satisfies Record<keyof JobRuntimeOptions, Schema.Top>);
