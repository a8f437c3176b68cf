import type { Actor } from "xstate";
import type { RecordFound } from "../adapters/job-records.ts";
import type { RecordSeen } from "../effects/record-updates.ts";
import type { JobRecord, JobStatus } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import type { HeldTaskBody } from "../kernel/wire.ts";
import type { JobMachine } from "../machines/job.machine.ts";

/** What one job's actors reach besides the shared parts: its record and its actor. */
export interface JobRun {
  readonly record: JobRecord;
  /** Status the job was resumed from (undefined: this actor submits it). */
  readonly resumeFrom?: JobStatus;
  /** The task bodies to submit; only a new job has them. */
  readonly bodies?: readonly string[];
  /** The tasks it holds until due (delayed); only a new job has them. */
  readonly held?: readonly HeldTaskBody[];
  readonly log: Logger;
  /** The actor the effects run in (made from the machine, so handed over later). */
  readonly self: () => Actor<JobMachine>;
  /** The submit found the job already made (idempotency key): this actor must be replaced. */
  readonly foundExisting: (found: RecordFound) => void;
  /** Another submit of the key made the job's record again (`madeAgain`): the job ends lost, nothing written. */
  readonly madeAgain: (record: JobRecord) => void;
  /** The record as this actor last wrote it (its commit, its progress): its end's write starts there. */
  readonly seen: RecordSeen;
}

/** A job's run as its effects keep it: why its submit failed, whether its next batch is a replay. */
export interface RunState {
  readonly run: JobRun;
  submitError: unknown;
  /** Why the end was not written (undefined: it was, or nothing was to be). */
  finalizeError: unknown;
  replay: boolean;
  /**
   * Every results message the job's feed handed, in order from the first,
   * while they are few and small (`keptBytes`, job-feed.ts); undefined when they are not
   * kept (too many, or the feed did not read): `results()` reads the stream.
   */
  kept: string[] | undefined;
  keptSize: number;
  /** The feed has handed the actor every answer stored when it started reading (or it reads none). */
  caughtUp: boolean;
  /** Called, then cleared, once `caughtUp` is true (one waiter: `whenCaughtUp` in job-effects.ts chains them). */
  onCaughtUp: (() => void) | undefined;
  /** The submit, once started. */
  submitting: Effect | undefined;
  /** The end's write, once started. */
  finalizing: Effect | undefined;
  /**
   * The redrives whose markers the actor counted (`""`: a marker of an earlier version, which
   * names no redrive: it stands for that version's redrives only, `markerCounts`), and the
   * one its record was read with at the start (its marker is in the results read from the
   * first); undefined: none.
   */
  redrives: Set<string> | undefined;
  /**
   * The redrive whose reopened record the end's write met, its marker not counted here: the
   * results the feed held since the end was decided, once they hold that marker, are counted
   * and the job runs again (`flush`).
   */
  reopenFor: string | undefined;
  /** The feed's hand-over of what it holds (set by the feed). */
  flush: (() => void) | undefined;
  /** Ends a refused end's wait: an end was recorded elsewhere meanwhile (a cancel). */
  endHeard: (() => void) | undefined;
}

/**
 * One of a job's effects running beside its actor: its abort while it runs,
 * none once it has settled (a live job kept its submit's controller and
 * signal for its whole life, ~0.5 KB of heap each: Node gives every
 * `AbortSignal` a hidden class of its own).
 */
export interface Effect {
  control: AbortController | undefined;
}
