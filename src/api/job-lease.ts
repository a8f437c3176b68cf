import type { Broker } from "../adapters/broker.ts";
import { rollLaneForward } from "../effects/reap-submits.ts";
import type { RecordSeen } from "../effects/record-updates.ts";
import { isSameSubmit } from "../effects/submit-undo.ts";
import { takeRecord } from "../effects/take-record.ts";
import type { Clock } from "../kernel/clock.ts";
import { Deposed } from "../kernel/errors.ts";
import { commitsOnPublish, isFinal, type JobRecord, type JobStatus } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import type { JobChores } from "./job-chores.ts";
import { restoreSupervised } from "./job-takeover.ts";

/** What a job actor's lease keeper needs: its job, its runtime's leases and timer, its status. */
export interface JobLeaseDeps {
  readonly broker: Broker;
  readonly clock: Clock;
  readonly chores: JobChores;
  readonly log: Logger;
  readonly record: JobRecord;
  /** The record as the actor last saw it, and whether it names this runtime yet (`fenced`). */
  readonly seen: RecordSeen;
  readonly leaseMs: number;
  /** This runtime takes over a job whose supervisor stopped renewing its lease. */
  readonly takeOver: boolean;
  /** The actor's status now. */
  readonly status: () => JobStatus;
}

/** A supervisor renews its lease every third of it. */
export const renewEveryMs = (leaseMs: number) => Math.max(20, Math.floor(leaseMs / 3));

/**
 * A job actor's supervision lease: renewed while held (when the runtime's
 * heartbeat does not cover it); taken over when it runs out (unless the
 * runtime takes no job over); a step on the runtime's timer for its jobs
 * (`chores`), which `rt.stop()` waits for while one is in flight. `end`
 * stops it and lets the lease go: released once the job is over, given back
 * otherwise; a take or renewal answered after that lets go of what it wrote.
 */
export const keepJobLease = (
  deps: JobLeaseDeps,
): { end(over: boolean): Promise<void>; stillDeposed(): Promise<boolean> } => {
  const { broker, clock, log, record, seen, leaseMs, takeOver } = deps;
  const { leases } = broker;
  const jobId = record.id;
  let supervised = false;
  /** Set at the end: releases the lease, or gives it back. */
  let letGo: (() => Promise<void>) | undefined;
  /** The take's write of the record in flight (`takeRecord`). */
  let taking: Promise<void> | undefined;
  /**
   * The record named after this runtime, its first act once it took the lease: only then does
   * the actor act as the job's supervisor (`actsAsSupervisor`). Then what a taker does first.
   */
  const take = (ours: boolean): Promise<void> => {
    taking = takeRecord(broker, jobId, seen, leases.holder)
      .then(
        (taken) => {
          if (taken !== "taken" || letGo) return;
          if (ours) log.warn({ leaseMs }, "took its supervision lease back (its renewals had failed)");
          else log.warn({ leaseMs }, "took over supervision of the job (its supervisor stopped renewing)");
          // Its supervisor may have died with the server restarting under it: its consumer too.
          // From the record as taken, which names this runtime (the one the actor started from
          // may name the supervisor it took the job from).
          void restoreSupervised(broker, log, clock.now(), seen.last?.record ?? record, seen);
          // A 1-task lane job's commit is written with its next write, which its submitter may have
          // died before: written now, as a takeover of an orphan does (`adopt`), not with the
          // job's end or by the reaper, 40 s on.
          if (commitsOnPublish(record)) commitTakenLane(broker, log, record, () => clock.now());
        },
        async (error: unknown) => {
          // Named otherwise since its read: another runtime took the job after it. Given back, for
          // the next takeover to read the record anew.
          if (!(error instanceof Deposed))
            return log.debug({ err: error }, "record not taken; tried again on the next tick");
          log.warn({ supervisor: error.supervisor }, "another runtime took the job over: lease given back");
          supervised = false;
          await leases.giveBack(jobId);
        },
      )
      .finally(() => {
        taking = undefined;
      });
    return taking;
  };
  const renew = (): Promise<void> | undefined => {
    if (letGo || taking || isFinal(deps.status())) return undefined;
    const held = leases.holds(jobId, clock.now());
    // Held, the record not naming it yet (its take's write failed, or a takeover pass took the
    // lease as this actor started).
    if (held && seen.fenced === false) return take(leases.supervises(jobId) && supervised);
    if (held && leases.coveredByHeartbeat(jobId, clock.now())) return undefined; // the heartbeat renews it
    // Its own lease, run out (its renewals failed: the server away for a while), is taken back
    // whether or not this runtime takes jobs over: the lease its submit took, which the heartbeat
    // renewed since, is its own though this actor never wrote it (`supervised` says it did).
    const ours = leases.supervises(jobId);
    if (!held && !supervised && !ours && !takeOver) return undefined;
    // Another's lease taken: acts as the supervisor only once the record names it. Its own, run
    // out, taken back: acts on (a write of its lands on no record another taker named: `fenceOf`),
    // its stalled timeout and lost-task check too, which waited for the take's write, and for good
    // when that write found no record (a server back with an empty store).
    if (!held && !ours) seen.fenced = false;
    const step = held
      ? leases.renew(jobId, leaseMs, clock.now())
      : leases.acquire(jobId, leaseMs, clock.now());
    return step.then(
      (ok) => {
        // Answered after the actor ended: its end let the lease go before this write landed.
        if (letGo) return ok ? letGo() : undefined;
        if (held && !ok) log.warn("lost the supervision lease to another runtime: watching only");
        const taken = !held && ok;
        if (ok) supervised = true;
        else if (held) supervised = false;
        if (taken) return take(ours);
      },
      // Tried again on the next tick; a lease not renewed in time is lost like any other.
      (error) => log.debug({ err: error }, "lease renewal failed"),
    );
  };
  const stop = deps.chores.add({ name: `job-lease:${jobId}`, everyMs: renewEveryMs(leaseMs), run: renew });
  return {
    end: (over) => {
      stop();
      letGo = () => (over ? leases.release(jobId) : leases.giveBack(jobId));
      return letGo();
    },
    // A write refused as the record named another (`Deposed`) read it before a take of this
    // runtime's own lease may have named it since (a taker came and went): after any take on
    // its way, the record read again says whether the refusal stands (unread: not yet).
    stillDeposed: async () => {
      await taking;
      const found = await broker.getRecord(jobId).catch(() => undefined);
      const name = found?.record.supervisor;
      return name !== undefined && name !== leases.holder;
    },
  };
};

/** Writes the commit of a lane job taken over whose record still holds its submit, if its task is stored. */
const commitTakenLane = (broker: Broker, log: Logger, record: JobRecord, now: () => number): void =>
  void broker
    .getRecord(record.id)
    .then((found) => (isSameSubmit(found, record) ? rollLaneForward(broker, found, now) : false))
    .catch((error: unknown) =>
      log.debug({ err: error }, "commit of a lane job taken over not written; its next write carries it"),
    );
