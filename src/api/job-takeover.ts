import type { Broker } from "../adapters/broker.ts";
import type { RecordFound } from "../adapters/job-records.ts";
import { restoreConsumer } from "../effects/lost-job.ts";
import { type ReapReport, reapSubmits, rollLaneForward } from "../effects/reap-submits.ts";
import type { RecordSeen } from "../effects/record-updates.ts";
import { actsAsSupervisor, takeRecord } from "../effects/take-record.ts";
import { inBatches } from "../kernel/batches.ts";
import { aheadOfServerRead, type Clock } from "../kernel/clock.ts";
import { isFinal, isRunning, type JobRecord, SubmitPhase } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import type { RuntimeCore } from "./runtime-core.ts";

/**
 * One reaper pass. Its candidates are the records of the supervision leases
 * (a submit writes its lease beside its record), not every record kept: the
 * pass costs O(jobs not over). Each deadline is judged by the server's clock
 * as the listing of the leases read it, moved to `clock` (the clock `now`
 * reads, or counts on from).
 */
export const reapPass = async (
  broker: Broker,
  log: Logger,
  graceMs: number,
  now: () => number,
  clock: Clock,
): Promise<ReapReport> => {
  const leased = await broker.leases.list();
  const revisions = new Map(leased.map(({ jobId, revision }) => [jobId, revision]));
  const submits = (
    await inBatches(leased, ({ jobId }) =>
      // One record not read (a newer version's, a read that timed out) keeps no other submit
      // from being finished: it is read again at the next pass.
      broker.getRecord(jobId).catch((error: unknown) => {
        log.debug({ jobId, err: error }, "record not read by the reaper; read again at its next pass");
        return undefined;
      }),
    )
  ).filter((found): found is RecordFound => found?.record.phase === SubmitPhase.submitting);
  const report = await reapSubmits(
    broker,
    now,
    graceMs,
    () => aheadOfServerRead(clock, broker.leases.serverTime()),
    submits,
  );
  // A rolled-back submit has no supervisor: its lease goes (a resubmit's, written since, stays).
  for (const id of report.rolledBack)
    await broker.leases
      .remove(id, revisions.get(id))
      .catch((error: unknown) =>
        log.debug({ jobId: id, err: error }, "lease of a rolled-back submit not removed; it expires"),
      );
  return report;
};

/** What a takeover pass needs of the registry that runs it. */
export interface TakeoverHost {
  readonly core: RuntimeCore;
  readonly broker: Broker;
  readonly log: Logger;
  readonly leaseMs: number;
  /** True while the registry has a live actor for the job. */
  watching(id: string): Promise<boolean>;
  /** True while the registry has an actor for the job or a submit of it in flight (no wait). */
  local(id: string): boolean;
  /** Starts (and tracks) an actor supervising the job from its record as read (its revision, the server's stamp). */
  supervise(found: RecordFound): void;
  /** True once the registry stops: no actor may start then. */
  stopping(): boolean;
}

/**
 * Jobs still running whose supervisor stopped renewing its lease: watch
 * them here (the actor takes the lease). Found from the leases, one per job
 * not over, never from every record kept: a pass reads the leases (one
 * scan) and the record of each that ran out.
 */
export const adoptOrphans = async (host: TakeoverHost): Promise<void> => {
  const now = host.core.clock.now();
  const { leases } = host.broker;
  const runOut = [];
  // A lease naming this runtime that it does not hold, with neither an actor nor a submit of
  // its own for the job, is run out too: a take stored whose answer never came back. This
  // runtime's heartbeat makes every other runtime read it as held for as long as it runs.
  // Told without a wait: a submit in flight here settles only at its commit.
  for (const listed of await leases.list(now))
    if (
      listed.lease.until <= now
        ? !(await host.watching(listed.jobId))
        : listed.lease.holder === leases.holder &&
          !leases.holds(listed.jobId, now) &&
          !host.local(listed.jobId)
    )
      runOut.push(listed);
  // 32 at a time: the jobs of a dead supervisor were taken over one after the other, each a
  // few round trips, so the last of 24 came a second after the first (five-processes test).
  await inBatches(runOut, async ({ jobId, revision }) => {
    if (host.stopping()) return;
    await adopt(host, jobId, revision).catch((error: unknown) =>
      // Not now (a read or the lease failed): the lease stays, and the next pass tries again.
      host.log.debug({ jobId, err: error }, "orphan not taken over now; tried again"),
    );
  });
};

/** One lease that ran out: its job taken over if it runs, the lease removed if the job is over or gone. */
const adopt = async (host: TakeoverHost, jobId: string, revision: number): Promise<void> => {
  const { broker } = host;
  const found = await broker.getRecord(jobId);
  if (!found || isOver(found.record)) {
    // Stale (its supervisor died after the end, a cancel ended it meanwhile, the record is
    // gone): removed, so the bucket holds the jobs not over. Up to the revision listed: a
    // lease written since (a resubmit of the key) stays.
    await broker.leases.remove(jobId, revision);
    return;
  }
  // A submit that died: the reaper's, once its deadline passed. A lane job whose task is stored
  // committed; its commit is written with its next write, which its submitter did not make.
  if (
    found.record.phase === SubmitPhase.submitting &&
    !(await rollLaneForward(broker, found, () => host.core.clock.now()))
  )
    return;
  if (!(await broker.leases.acquire(jobId, host.leaseMs, host.core.clock.now()))) return;
  // A `get` here may have started watching it meanwhile: that actor now holds the lease.
  if (await host.watching(jobId)) return;
  // Read again now that the lease is held: a supervisor that finished (or a cancel) between
  // the read and the lease released it, and a job adopted from the stale record would be
  // watched forever.
  const again = await broker.getRecord(jobId).catch((error: unknown) => {
    host.log.debug({ jobId, err: error }, "record of an orphan not read; not taken over now");
    return null;
  });
  if (await host.watching(jobId)) return;
  if (again === undefined || (again && isOver(again.record))) return broker.leases.release(jobId);
  // Not read, or stopping: given back, for the next pass or another runtime to take it over at once.
  if (again === null || host.stopping()) return broker.leases.giveBack(jobId);
  const { record } = again;
  host.log.warn({ jobId: record.id }, "taking over a job whose supervisor stopped renewing its lease");
  // Its first act: the record names this runtime. Any write of the supervisor it takes the job
  // from, held back past its lease, now fails (`takeRecord`).
  const seen: RecordSeen = { submit: record.submitId };
  const taken = await takeRecord(broker, jobId, seen, broker.leases.holder).catch(async (error: unknown) => {
    host.log.debug({ jobId, err: error }, "record of an orphan not taken; the lease is given back");
    await broker.leases.giveBack(jobId);
    return undefined;
  });
  if (taken === "over") return broker.leases.release(jobId);
  if (taken !== "taken" || !seen.last || (await host.watching(jobId))) return broker.leases.giveBack(jobId);
  host.supervise({ ...again, ...seen.last });
};

/** Over: its end recorded (a committed job) or its submit rolled back; a submit in progress is not. */
const isOver = (record: JobRecord): boolean =>
  record.phase !== SubmitPhase.submitting && isFinal(record.status);

/**
 * A running job this runtime supervises gets its consumer made again if it
 * is gone (a server restarted with its store, and the consumer lived in its
 * memory: `jobs.memoryConsumers`); its workers' pull loops find it on their
 * next round, and a worker that does not follow the job hears of it by the
 * record write that tells of the restore. A failure is left to the job's lost-task check, which
 * restores too. A restore that races the job's end (read running, then
 * ended, its consumer deleted, before the restore) may leave an empty
 * consumer for the ended job: the next cleanup pass removes it.
 *
 * Supervised as a write of its supervisor is (`actsAsSupervisor`): the lease
 * held, and `record` naming this runtime or no one, with the actor's `seen`
 * (when there is one) not waiting for its take's write. A lease alone is
 * timing: a runtime held up past it (then reconnected, its records read
 * again) still holds it by its own clock, and made the consumer again for a
 * job another runtime took over, whose tasks then ran for a supervisor that
 * counts nothing of them, or whose end left that consumer behind. Resolves
 * once done (never rejects).
 */
export const restoreSupervised = (
  broker: Broker,
  log: Logger,
  now: number,
  record: JobRecord,
  seen: Pick<RecordSeen, "fenced"> = {},
): Promise<void> => {
  const { leases } = broker;
  const named = record.supervisor === undefined || record.supervisor === leases.holder;
  if (record.lane || !isRunning(record) || !named || !actsAsSupervisor(leases, seen, record.id, now))
    return Promise.resolve();
  return restoreConsumer(broker, record, now).then(
    (restored) => {
      if (restored === "restored")
        log.warn({ jobId: record.id }, "job's consumer made again (the server lost it: restarted?)");
    },
    (error: unknown) =>
      log.debug({ jobId: record.id, err: error }, "consumer not checked; the lost-task check will"),
  );
};
