import type { Broker } from "../adapters/broker.ts";
import { cleanUpEnd, type EndMark } from "../effects/finalize-job.ts";
import { isSameWrite } from "../effects/record-updates.ts";
import { sleep } from "../effects/supervise-loop.ts";
import { actsAsSupervisor, takeRecord } from "../effects/take-record.ts";
import type { Clock } from "../kernel/clock.ts";
import { type FinalizeInput, isFinal, type JobRecord, madeAgain } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import { boundReason } from "../kernel/reason.ts";
import type { RunState } from "./job-run.ts";

/** The event that hands a stored record to the job machine. */
export const recordEvent = (record: JobRecord) =>
  ({
    type: "record.changed",
    status: record.status,
    counts: record.counts,
    reason: record.reason ?? null,
  }) as const;

/**
 * Whether the end recorded is another than the one decided here: its status,
 * or its reason (a job cancelled here whose supervisor recorded its tasks
 * lost: both `failed`). The recorded one is how the job ended.
 */
export const otherEnd = (recorded: JobRecord, decided: FinalizeInput): boolean =>
  recorded.status !== decided.status ||
  // Both reasons as they are stored now (cut: a long one read back was taken for another end;
  // a record written before reasons were cut may hold a longer one).
  (recorded.reason == null ? null : boundReason(recorded.reason)) !==
    (decided.reason == null ? null : boundReason(decided.reason));

/** What the wait for a job's end needs of its runtime (job-effects.ts's shared part). */
interface EndWaitShared {
  readonly broker: Broker;
  readonly clock: Clock;
  readonly leaseMs: number;
  readonly takeOver: boolean;
}

/**
 * The wait of an actor whose end is decided while another runtime holds the
 * job's lease (`finalize`, job-effects.ts), made once per runtime.
 */
export const endWait = (shared: EndWaitShared) => {
  const { broker, clock, leaseMs } = shared;
  const leases = broker.leases;

  /** The lease for a watcher waiting for the end: a failed try is tried again on the next turn. */
  const takeLease = (jobId: string, log: Logger) =>
    leases.acquire(jobId, leaseMs, clock.now()).catch((error: unknown) => {
      log.debug({ err: error }, "supervision lease not taken while waiting for the job's end; tried again");
      return false;
    });

  /**
   * Until this runtime supervises the job (false), or the job's end is found
   * recorded, or the actor stops (true). Only the supervisor writes the end;
   * a watcher waits for it (or for the lease). The wait ends as soon as the
   * actor stops, which the runtime's stop does too (`sleep` heeds `aborted`):
   * a watcher stopped meanwhile leaves the end to the supervisor, or to
   * whoever takes over.
   */
  const untilSupervising = async (
    state: RunState,
    input: FinalizeInput,
    aborted: AbortSignal,
    mark: EndMark,
  ) => {
    const { record, log, self } = state.run;
    const jobId = record.id;
    const { seen } = state.run;
    while (!actsAsSupervisor(leases, seen, jobId, clock.now())) {
      // Stopped, or another end was heard: the actor's end already chose to release or give
      // back its lease (job-actor.ts), and its handles read no reason from here.
      if (aborted.aborted) return true;
      const found = await broker.getRecord(jobId).catch((error: unknown) => {
        log.debug({ err: error }, "record not read while waiting for the job's end; read again");
        return undefined;
      });
      // Another submit of the key made the record again (the store came back empty): this job is
      // lost, and the new one's lease and end are not its to wait for.
      if (found && madeAgain(found.record, record.submitId)) {
        state.run.madeAgain(found.record);
        return true;
      }
      if (found && isFinal(found.record.status)) {
        // The end as recorded: another than this actor counted (a cancel that landed first)
        // is how the job ended, as for a supervisor whose write found it below.
        if (otherEnd(found.record, input)) {
          if (!aborted.aborted) self().send(recordEvent(found.record));
        } else if (mark.below && isSameWrite(found.record, state.run.seen.writing)) {
          // This actor's own end, written though its answer was lost while the lease ran out:
          // what follows an end is still its to do, below the mark read before that write.
          const below = await mark.below;
          await cleanUpEnd(broker, found.record, below).catch((error: unknown) =>
            log.debug({ err: error }, "tasks of the job's end not removed; the cleanup pass removes them"),
          );
        }
        return true;
      }
      // Its own supervisor takes its lease back too (its renewals failed while it tried to
      // write the end), whether or not this runtime takes jobs over.
      if ((shared.takeOver || leases.supervises(jobId)) && (await takeLease(jobId, log))) {
        // Taken as the actor ended (its end heard from elsewhere, its runtime stopping): the
        // lease its end released would be renewed by this runtime's heartbeat for good. Given
        // back: a takeover pass removes it if the job is over, or takes the job over.
        if (aborted.aborted) {
          await leases.giveBack(jobId).catch(() => undefined);
          return true;
        }
        // Its first act: the record names this runtime (`takeRecord`); over, the next turn reads
        // its end at once.
        const taken = await takeRecord(broker, jobId, seen, leases.holder).catch(async (error: unknown) => {
          log.debug(
            { err: error },
            "record not taken while waiting for the job's end; the lease is given back",
          );
          await leases.giveBack(jobId).catch(() => undefined);
          return undefined;
        });
        if (taken === "taken") return false;
        if (taken === "over") continue;
        // Not taken (its write failed, the lease given back) or `later`: the pause the other
        // turns take. Without it, each turn read the record, took the lease and failed again at
        // once, against the server, for as long as that lasted. `later` is not rolled forward
        // here as a takeover pass does (`rollLaneForward` in `adopt`): a 1-task lane job's actor
        // knows its own submit committed (`seen.laneSubmit`: its publish, or the record it started
        // from), and its take's write carries the commit (`changeFrom`, record-updates.ts).
        // `later` is a submit it does not know committed, one still under way (its submitter's
        // write, or the reaper past its deadline, settles it) or another submit's of the key (the
        // next read finds it made again): not this actor's to commit.
      }
      await sleep(Math.min(500, leaseMs / 4), aborted);
    }
    return false;
  };
  return untilSupervising;
};
