import type { Broker } from "../adapters/broker.ts";
import { rollLaneForward } from "../effects/reap-submits.ts";
import { isSameSubmit } from "../effects/submit-undo.ts";
import type { Clock } from "../kernel/clock.ts";
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
export const keepJobLease = (deps: JobLeaseDeps): { end(over: boolean): Promise<void> } => {
  const { broker, clock, log, record, leaseMs, takeOver } = deps;
  const { leases } = broker;
  const jobId = record.id;
  let supervised = false;
  /** Set at the end: releases the lease, or gives it back. */
  let letGo: (() => Promise<void>) | undefined;
  const renew = (): Promise<void> | undefined => {
    if (letGo || isFinal(deps.status())) return undefined;
    const held = leases.holds(jobId, clock.now());
    if (held && leases.coveredByHeartbeat(jobId, clock.now())) return undefined; // the heartbeat renews it
    // Its own lease, run out (its renewals failed: the server away for a while), is taken back
    // whether or not this runtime takes jobs over: the lease its submit took, which the heartbeat
    // renewed since, is its own though this actor never wrote it (`supervised` says it did).
    const ours = leases.supervises(jobId);
    if (!held && !supervised && !ours && !takeOver) return undefined;
    const step = held
      ? leases.renew(jobId, leaseMs, clock.now())
      : leases.acquire(jobId, leaseMs, clock.now());
    return step.then(
      (ok) => {
        // Answered after the actor ended: its end let the lease go before this write landed.
        if (letGo) return ok ? letGo() : undefined;
        if (held && !ok) log.warn("lost the supervision lease to another runtime: watching only");
        if (!held && ok && !supervised) {
          if (ours) log.warn({ leaseMs }, "took its supervision lease back (its renewals had failed)");
          else log.warn({ leaseMs }, "took over supervision of the job (its supervisor stopped renewing)");
          // Its supervisor may have died with the server restarting under it: its consumer too.
          restoreSupervised(broker, log, clock.now(), record);
          // A 1-task lane job's commit is written with its next write, which its submitter may have
          // died before: written now, as a takeover of an orphan does (`adopt`), not with the
          // job's end or by the reaper, 40 s on.
          if (commitsOnPublish(record)) commitTakenLane(broker, log, record, () => clock.now());
        }
        if (ok) supervised = true;
        else if (held) supervised = false;
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
