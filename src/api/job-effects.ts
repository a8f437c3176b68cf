import { type Actor, fromCallback, fromPromise } from "xstate";
import type { Broker } from "../adapters/broker.ts";
import { finalizeJob } from "../effects/finalize-job.ts";
import type { LoopGroup } from "../effects/loop-group.ts";
import { type SubmitHooks, submitJob } from "../effects/submit-job.ts";
import { sleep } from "../effects/supervise-loop.ts";
import { type Clock, every } from "../kernel/clock.ts";
import { PermanentBrokerError } from "../kernel/errors.ts";
import type { ResultEntry } from "../kernel/job-progress.ts";
import { isFinal, type JobRecord, type JobStatus } from "../kernel/job-record.ts";
import type { Logger } from "../kernel/logger.ts";
import { decodeResults } from "../kernel/wire.ts";
import { type JobMachine, jobMachine } from "../machines/job.machine.ts";
import { snapshotOf } from "./job-handle.ts";

/** What the job machine's actors reach: one job's record, its runtime's broker and clock. */
export interface JobEffectsEnv {
  readonly broker: Broker;
  readonly clock: Clock;
  readonly leaseMs: number;
  /** `jobs.takeOver`: off, this runtime never supervises a job it did not submit. */
  readonly takeOver: boolean;
  readonly submitHooks?: SubmitHooks;
  readonly record: JobRecord;
  /** Status the job was resumed from (undefined: this actor submits it). */
  readonly resumeFrom?: JobStatus;
  /** The task bodies to submit; only a new job has them. */
  readonly bodies?: readonly string[];
  /** Aborted when the actor or its runtime stops. */
  readonly signal: AbortSignal;
  /** The runtime's loops: `rt.stop()` waits for the job's results feed. */
  readonly loops: Pick<LoopGroup, "run">;
  readonly log: Logger;
  /** The actor the effects run in (made from them, so handed over later). */
  readonly self: () => Actor<JobMachine>;
  /** The submit found the job already made (idempotency key): this actor must be replaced. */
  readonly foundExisting: (record: JobRecord) => void;
}

/** The event that hands a stored record to the job machine. */
export const recordEvent = (record: JobRecord) =>
  ({
    type: "record.changed",
    status: record.status,
    counts: record.counts,
    reason: record.reason ?? null,
  }) as const;

/**
 * The job machine with its actors' real I/O provided: `submit`, `feed` (the
 * job's results), `clock` and `finalize`. `submitError()` is why the submit
 * failed, as the typed error it failed with (undefined: it did not);
 * `finalizeError()` why the job's end was not written.
 */
export const provideJobEffects = (env: JobEffectsEnv) => {
  const { broker, clock, leaseMs, record, signal, log, self } = env;
  const leases = broker.leases;
  const jobId = record.id;
  let submitError: unknown;
  /** Why the end was not written (undefined: it was, or nothing was to be). */
  let finalizeError: unknown;
  // A resumed job's first batch is what was answered before this actor: not a rate sample.
  let replay = env.resumeFrom !== undefined;

  /** The lease for a watcher waiting for the end: a failed try is tried again on the next turn. */
  const takeLease = () =>
    leases.acquire(jobId, leaseMs, clock.now()).catch((error: unknown) => {
      log.debug({ err: error }, "supervision lease not taken while waiting for the job's end; tried again");
      return false;
    });

  const machine = jobMachine.provide({
    actors: {
      submit: fromPromise(async ({ signal: aborted }) => {
        if (!env.bodies) throw new Error("nothing to submit");
        try {
          // The queue's streams, advisories included: exhausted tasks must be captured before one
          // can exhaust. Inside the try: a queue that cannot be set up fails the submit, typed.
          await broker.ensureDeadLetters(record.queue);
          await leases.acquire(jobId, leaseMs, clock.now());
          const outcome = await submitJob(broker, {
            record,
            bodies: env.bodies,
            now: () => clock.now(),
            signal: AbortSignal.any([aborted, signal]),
            ...(env.submitHooks ? { hooks: env.submitHooks } : {}),
          });
          if (outcome.kind === "existing") {
            // Another submit (maybe another runtime's) made this job, with its own tasks and
            // settings: this actor is not its actor. `jobs` replaces it with one resumed from
            // the record; until then it stays queuing (nothing counted, nothing written).
            log.info({ status: outcome.record.status }, "idempotency key matched an existing job");
            env.foundExisting(outcome.record);
            await new Promise<void>((resolve) => {
              if (signal.aborted) resolve();
              else signal.addEventListener("abort", () => resolve(), { once: true });
            });
          }
        } catch (error) {
          // The caller gets the typed error the submit failed with; anything else is wrapped in one.
          submitError =
            typeof error === "object" && error !== null && "_tag" in error
              ? error
              : new PermanentBrokerError({
                  message: `submit failed: ${error instanceof Error ? error.message : String(error)}`,
                  operation: "job.submit",
                  cause: error,
                });
          throw error;
        }
        return clock.now(); // committed: the job's rate and stall clocks start here
      }),
      feed: fromCallback(({ sendBack }) => {
        if (env.resumeFrom && isFinal(env.resumeFrom)) return () => undefined;
        const ac = new AbortController();
        const backlog: ResultEntry[] = [];
        let caughtUp = false;
        const flush = () => {
          // Answers read while the submit is still running (an idempotent resubmit of a job
          // that has them) wait for it: the machine counts from `running` on.
          if (!caughtUp || backlog.length === 0 || snapshotOf(self()).status === "queuing") return;
          sendBack({
            type: "results.received",
            entries: backlog.splice(0),
            at: clock.now(),
            ...(replay ? { replay } : {}),
          });
          replay = false;
        };
        const leftQueuing = self().subscribe(() => flush());
        const feeding = broker
          .readResults(
            record.queue,
            jobId,
            (body, pending) => {
              try {
                backlog.push(...decodeResults(body));
              } catch (error) {
                // Not written by jetstate: nothing in it to count.
                log.warn({ err: error }, "results message skipped");
              }
              // The first time through, hand over everything stored in one event once caught
              // up: a redrive marker must be counted before the job decides it is over.
              if (!caughtUp && pending > 0) return;
              caughtUp = true;
              flush();
            },
            AbortSignal.any([ac.signal, signal]),
            () => {
              caughtUp = true;
            },
          )
          .catch((error) => log.warn({ err: error }, "results feed failed"));
        // Ends when the feed is left or the actor or runtime stops; started whether or not the
        // runtime's loops still run, and while they do, `rt.stop()` waits for it to end.
        env.loops.run(`job-results:${jobId}`, () => feeding);
        return () => {
          leftQueuing.unsubscribe();
          ac.abort();
        };
      }),
      // Not one of the runtime's loops: a timer of the statechart's own, stopped by XState when
      // the state that invokes it is left or the actor stops (`jobs.stop()` stops every actor
      // before the runtime's loops close), with no I/O in flight to wait for.
      clock: fromCallback(({ sendBack, input }) =>
        every(clock, input.everyMs, () => sendBack({ type: "clock.tick", now: clock.now() })),
      ),
      finalize: fromPromise(async ({ input }) => {
        // A submit that failed rolled back what it wrote, or wrote nothing (it lost its key's
        // claim to another request): the record under this id is not this actor's to end.
        if (submitError !== undefined) return;
        // Only the supervisor writes the end; a watcher waits for it (or for the lease). The wait
        // ends as soon as the actor or the runtime stops (`sleep` and every read heed `signal`):
        // a watcher stopped meanwhile leaves the end to the supervisor, or to whoever takes over.
        while (!leases.holds(jobId, clock.now())) {
          if (signal.aborted) {
            finalizeError = "stopped before the end was written";
            return;
          }
          const found = await broker.getRecord(jobId).catch((error: unknown) => {
            log.debug({ err: error }, "record not read while waiting for the job's end; read again");
            return undefined;
          });
          if (found && isFinal(found.record.status)) return;
          if (env.takeOver && (await takeLease())) break;
          await sleep(Math.min(500, leaseMs / 4), signal);
        }
        const stored = await finalizeJob(broker, input, () => clock.now()).catch((error: unknown) => {
          // The machine ends `recorded` either way; the record still says the job runs, so its
          // lease must stay for a takeover pass to find the job and write the end.
          finalizeError = error;
          throw error;
        });
        // Another runtime recorded another end first (a cancel): that is how the job ended.
        if (stored && isFinal(stored.status) && stored.status !== input.status)
          self().send(recordEvent(stored));
      }),
    },
  });
  return { machine, submitError: () => submitError, finalizeError: () => finalizeError };
};
