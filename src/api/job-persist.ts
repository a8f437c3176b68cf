import type { Actor, SnapshotFrom } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import type { LoopGroup } from "../effects/loop-group.ts";
import { type RecordSeen, recordProgress } from "../effects/record-updates.ts";
import { actsAsSupervisor } from "../effects/take-record.ts";
import { type Clock, monotonicNow } from "../kernel/clock.ts";
import { Deposed } from "../kernel/errors.ts";
import {
  isFinal,
  type JobCounts,
  type JobRecord,
  type JobStatus,
  type JobTasksRef,
} from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import type { JobMachine } from "../machines/job.machine.ts";
import { isRecorded, type JobSnapshot, snapshotOf } from "./job-handle.ts";
import { listWorkers } from "./worker-presence.ts";

/**
 * What the job's host does with each snapshot: one log line per state change;
 * progress written by the supervisor at most once a second, and only when it
 * differs from what the record was last seen to say (a live job that nothing
 * answers writes and reads nothing: with 10,000 of them, a read each second
 * each was the runtime's main load); the actor stopped once its end is
 * recorded. Returns the observer of the actor's snapshots (`next`; the job's
 * host subscribes it with its own end), what cancels a pending progress
 * write (`stop`) and the last status the job had before an end was decided
 * (`live`: what its handles show while that end is not written).
 */
export const persistAndLog = (
  broker: Broker,
  clock: Clock,
  actor: Actor<JobMachine>,
  /** Stops the actor (only its parent can). */
  stop: () => void,
  log: Logger,
  loops: Pick<LoopGroup, "track">,
  record: JobRecord,
  seen: RecordSeen,
  /** Another runtime took the job over since: the actor writes nothing more, and stops. */
  stepDown: (deposed: Deposed) => void,
): { next: (snapshot: SnapshotFrom<JobMachine>) => void; stop: () => void; live: () => JobStatus } => {
  const leases = broker.leases;
  /** What the record says, as this runtime last read or wrote it. */
  let recorded: { readonly status: JobStatus; readonly counts: JobCounts } = record;
  const recordSays = (s: JobSnapshot) =>
    recorded.status === s.status &&
    recorded.counts.done === s.done &&
    recorded.counts.failed === s.failed &&
    recorded.counts.dead === s.dead;
  let last: JobStatus | undefined;
  let live: JobStatus = isFinal(record.status) ? "running" : record.status;
  let timer: unknown;
  /** When progress was last written (the record's `updatedAt`). */
  let writtenAt = Number.NEGATIVE_INFINITY;
  let writtenAtMonotonic = Number.NEGATIVE_INFINITY;
  const write = () => {
    timer = undefined;
    const s = snapshotOf(actor);
    // While queuing the submitter owns the record: its commit is a compare-and-set of its own.
    if (s.status === "queuing" || isFinal(s.status) || !actsAsSupervisor(leases, seen, s.id, clock.now()))
      return;
    writtenAt = clock.now();
    writtenAtMonotonic = monotonicNow(clock);
    const at = writtenAt;
    // One of the runtime's loops, so `rt.stop()` waits for it; none is started once they closed
    // (the runtime is stopping: the next supervisor writes progress). The counts as they are at
    // each try, not as planned: a try after a conflict with a redrive's write (its dead count
    // lowered) wrote the redriven task dead again, from counts planned before its marker was counted.
    loops.track(`job-progress:${s.id}`, () =>
      recordProgress(broker, s.id, s.status, () => snapshotOf(actor), at, seen).then(
        (stored) => {
          if (stored) recorded = stored;
        },
        (error) =>
          error instanceof Deposed
            ? stepDown(error)
            : log.warn({ err: error }, "progress not recorded; the next write, or the end, carries it"),
      ),
    );
  };
  /**
   * The timer's write, once a second has passed on the clock the record is stamped with: a
   * timer may fire a millisecond before that clock says so (progress events 999 ms apart
   * were seen in test/integration/job-events.both.test.ts), and on the monotonic clock. That
   * clock alone once the other was stepped back since (its wait past a second): by it alone,
   * the counts stayed unwritten for as long as the step.
   */
  const writeWhenDue = () => {
    const byMonotonic = writtenAtMonotonic + 1000 - monotonicNow(clock);
    const byStamp = writtenAt + 1000 - clock.now();
    const wait = byStamp > 1000 ? byMonotonic : Math.max(byMonotonic, byStamp);
    if (wait > 0) timer = clock.setTimeout(writeWhenDue, wait);
    else write();
  };
  const next = (snapshot: SnapshotFrom<JobMachine>) => {
    const s = snapshotOf(actor);
    if (s.status !== last) {
      log.info(
        {
          state: s.status,
          from: last ?? null,
          done: s.done,
          failed: s.failed,
          dead: s.dead,
          total: s.total,
          ...(s.reason ? { reason: s.reason } : {}),
        },
        `job ${last ?? "new"} → ${s.status}`,
      );
      // Never rejects; a log line, so none once the runtime's loops closed (it is stopping).
      if (s.status === "stalled")
        loops.track(`job-stall-log:${s.id}`, () => logStall(broker, record, s, clock.now(), log));
      // Just committed with nothing answered yet: the submit's commit wrote exactly this. A lane
      // job's commit is not written by its submit: its end writes it, or this write a second on.
      const committedAsIs = last === "queuing" && s.status === "running" && s.done + s.failed + s.dead === 0;
      const commitUnwritten = committedAsIs && seen?.laneSubmit !== undefined;
      if (committedAsIs && !commitUnwritten)
        recorded = { status: s.status, counts: { done: 0, failed: 0, dead: 0 } };
      last = s.status;
      if (!isFinal(s.status)) live = s.status;
      if (commitUnwritten) timer = clock.setTimeout(writeWhenDue, 1000);
      // A job resumed as its record says it is (a takeover, `stalled` included): nothing to
      // write, nor to read first.
      else if (s.status !== "queuing" && !isFinal(s.status) && !committedAsIs && !recordSays(s)) {
        cancelTimer(); // written now: a pending write would only repeat it
        write();
      }
    } else if (!timer && !isFinal(s.status) && snapshot.status === "active" && !recordSays(s)) {
      timer = clock.setTimeout(writeWhenDue, 1000);
    }
    // The end is written by finalize; a pending progress write has nothing left to say.
    if (isFinal(s.status)) cancelTimer();
    // Once the end is recorded nothing is left to supervise: stop the feed, clock and lease.
    if (isRecorded(actor) && snapshot.status === "active") queueMicrotask(stop);
  };
  const cancelTimer = () => {
    if (timer !== undefined) clock.clearTimeout(timer);
    timer = undefined;
  };
  return { next, stop: cancelTimer, live: () => live };
};

/**
 * "No task picked up in X": how long, how many tasks wait, how many a worker
 * holds, how many workers are alive on the queue (`rt.workers.list()`). The job's own count of tasks left is exact; the consumer's counts
 * are not disjoint: nats-server 2.9 counts a released (nak'd) task both in
 * `num_pending` (it rewinds) and in `num_ack_pending` until it is delivered
 * again, so a stopped worker's released tasks would read as held. Held is
 * therefore what is left beyond the pending ones, at most `num_ack_pending`.
 */
const logStall = async (broker: Broker, tasks: JobTasksRef, s: JobSnapshot, now: number, log: Logger) => {
  const [counts, alive] = await Promise.all([
    broker.consumerCounts(tasks).catch((error: unknown) => {
      log.debug({ err: error }, "consumer counts not read; the stall is logged without them");
      return undefined;
    }),
    // Who could be pulling: the queue's live workers in every process (none: the likeliest why).
    listWorkers(broker.presence, now, tasks.queue).then(
      (workers) => workers.length,
      (error: unknown) => {
        log.debug({ err: error }, "live workers not listed; the stall is logged without them");
        return undefined;
      },
    ),
  ]);
  const idleMs = now - s.lastProgressAt;
  const left = s.total - s.done - s.failed - s.dead;
  const idle = `job stalled: no task answered for ${formatDuration(idleMs)}`;
  const workers =
    alive === undefined ? "" : `; ${alive} worker${alive === 1 ? "" : "s"} alive on queue ${tasks.queue}`;
  const fields = { idleMs, left, ...(alive === undefined ? {} : { workersAlive: alive }) };
  if (!counts) return log.warn(fields, `${idle}${workers}`);
  const held = Math.max(0, Math.min(counts.held, left - counts.waiting));
  const waiting = left - held;
  log.warn(
    { ...fields, waiting, held, redelivered: counts.redelivered },
    `${idle}; ${waiting} tasks wait, ${held} held by workers` +
      (held > 0 ? " (a worker holds tasks but answers none)" : " (no worker is pulling)") +
      workers,
  );
};

/** 0.3 s, 42 s, 7 min: the stall threshold may be well under a second. */
const formatDuration = (ms: number): string =>
  ms < 10_000
    ? `${(ms / 1000).toFixed(1)} s`
    : ms < 120_000
      ? `${Math.round(ms / 1000)} s`
      : `${Math.round(ms / 60_000)} min`;
