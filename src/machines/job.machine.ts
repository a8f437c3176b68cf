import { and, assign, setup } from "xstate";
import type { ResultEntry } from "../kernel/job-progress.ts";
import { afterResults, remaining } from "../kernel/job-progress.ts";
import type { FinalizeInput, JobCounts, JobSettings, JobStatus } from "../kernel/job-record.ts";
import { withinTolerance } from "../kernel/job-record.ts";
import { boundReason } from "../kernel/reason.ts";
import { type JobContext, type JobInput, jobContext, stallStart } from "./job-context.ts";

/**
 * The life of one job: `queuing → running ⇄ stalled → succeeded | failed`.
 *
 * No I/O here. Entering `submitting` and an end's `recording` starts the
 * submit and the finalize (`startSubmit`, `startFinalize`: actions the
 * runtime provides, which run beside the actor and answer with an event:
 * `submit.committed` or `submit.failed`, `finalize.settled`); leaving them
 * aborts what is left (`abortSubmit`, `abortFinalize`). The job's results and
 * its clock's ticks come in as events (`results.received`, `clock.tick`)
 * from the job's feed, which the runtime runs beside the actor for its whole
 * life. Every timer is a deadline in context, so a snapshot restored in
 * another process loses nothing. Every time it gets is on the runtime's
 * steady clock (kernel/clock.ts `steadyClock`), which a step of the wall
 * clock does not move; the record's due times are wall-clock times
 * (`wallAhead` in its context).
 */

/**
 * How often the job's clock must tick at least: how late a stall may be seen
 * (a quarter of `stallAfterMs`, between 20 ms and 1 s).
 */
export const tickEveryMs = (settings: Pick<JobSettings, "stallAfterMs">): number =>
  Math.max(20, Math.min(1000, settings.stallAfterMs / 4));

export type JobEvent =
  | {
      type: "results.received";
      entries: readonly ResultEntry[];
      at: number;
      /**
       * Answers stored before this actor started (a takeover or a restart
       * replaying the results): counted, but they say nothing about the rate,
       * which would otherwise read as thousands of tasks in a millisecond.
       */
      replay?: boolean;
      /**
       * The end being written met a record a redrive reopened whose marker this actor had not
       * counted (its write refused): these answers, held since the end was decided, hold that
       * marker; counted, the job runs again.
       */
      reopen?: boolean;
    }
  | {
      type: "clock.tick";
      /** On the runtime's steady clock (kernel/clock.ts `steadyClock`), as every time the machine gets. */
      now: number;
      /** How far the wall clock reads ahead of `now` (absent: as last told). */
      wallAhead?: number;
      /**
       * False when this runtime does not supervise the job (a watcher: it never took the job's
       * lease): its clock may show a stall, but the stalled timeout is the supervisor's to apply.
       */
      supervising?: boolean;
    }
  | { type: "job.cancel"; reason: string }
  /** The submit committed the job (`at`: when its tasks became visible to workers). */
  | { type: "submit.committed"; at?: number }
  /** The submit failed (and was rolled back, or wrote nothing). */
  | { type: "submit.failed"; error: unknown }
  /** The end was written, or could not be: the job is over either way. */
  | { type: "finalize.settled" }
  /**
   * The job record as stored (read, watched, or found by an idempotent
   * resubmit). A final status ends the job here as recorded, without writing:
   * another runtime ended or cancelled it.
   */
  | { type: "record.changed"; status: JobStatus; counts: JobCounts; reason: string | null };

const jobSetup = setup({
  types: {
    context: {} as JobContext,
    events: {} as JobEvent,
    input: {} as JobInput,
  },
  guards: {
    resumeRunning: ({ context }) => context.resumeFrom === "running",
    resumeStalled: ({ context }) => context.resumeFrom === "stalled",
    resumeSucceeded: ({ context }) => context.resumeFrom === "succeeded",
    resumeFailed: ({ context }) => context.resumeFrom === "failed",
    recordSucceeded: ({ event }) => event.type === "record.changed" && event.status === "succeeded",
    recordFailed: ({ event }) => event.type === "record.changed" && event.status === "failed",
    reopens: ({ event }) => event.type === "results.received" && event.reopen === true,
    allAnswered: ({ context }) => remaining(context) === 0,
    withinTolerance: ({ context }) => withinTolerance(context, context.total, context.settings.maxFailures),
    stallDue: ({ context, event }) =>
      event.type === "clock.tick" &&
      remaining(context) > 0 &&
      event.now - stallStart(context, event.now, event.wallAhead ?? context.wallAhead) >=
        context.settings.stallAfterMs,
    stalledTooLong: ({ context, event }) =>
      event.type === "clock.tick" &&
      event.supervising !== false &&
      context.settings.stalledTimeoutMs > 0 &&
      context.stalledSince !== null &&
      event.now - context.stalledSince >= context.settings.stalledTimeoutMs,
    // `>=`: an answer stamped in the very millisecond the job stalled is progress too (the
    // stall needs stallAfterMs > 0 without any, so the last one before it is always earlier).
    madeProgress: ({ context }) =>
      context.lastProgressAt >= (context.stalledSince ?? Number.POSITIVE_INFINITY),
  },
  actions: {
    // The I/O, provided by the runtime (`api/job-effects.ts`); here they do nothing. Not actors
    // invoked by the machine: two child actors a job (their actors, mailboxes, scopes and their
    // own transitions) were about half of what the machine alone cost a one-task job.
    /** Starts the submit, which answers `submit.committed` or `submit.failed`. */
    startSubmit: () => undefined,
    /** The submit's state was left (a cancel): what the submit still does is aborted. */
    abortSubmit: () => undefined,
    /** Starts writing the end decided (`params`), which answers `finalize.settled`. */
    startFinalize: (_, _end: FinalizeInput) => undefined,
    /** The end's state was left for another end recorded: the finalize still running is aborted. */
    abortFinalize: () => undefined,
    countResults: assign(({ context, event }) => {
      if (event.type !== "results.received") return {};
      const next = afterResults(context, event.entries, event.at, event.replay === true);
      // Replayed answers are no progress (given before this actor, at a time it does not know),
      // unless the record did not have them: those were given after its last write (after the
      // stall it recorded), while nobody counted them. Progress then, at this read.
      const answered =
        (next.done ?? context.done) + (next.failed ?? context.failed) + (next.dead ?? context.dead);
      const { recorded } = context;
      if (
        event.replay === true &&
        "done" in next &&
        answered > recorded.done + recorded.failed + recorded.dead
      )
        return { ...next, lastProgressAt: Math.max(context.lastProgressAt, event.at) };
      return next;
    }),
    /**
     * The stall clock starts when the tasks became visible, not when the actor
     * was created: a submit that took longer than `stallAfterMs` (a big job)
     * stalled the moment it committed.
     */
    markCommitted: assign(({ context, event }) => {
      const committedAt = event.type === "submit.committed" ? event.at : undefined;
      const at =
        committedAt === undefined ? context.lastProgressAt : Math.max(committedAt, context.lastProgressAt);
      return { lastProgressAt: at, now: Math.max(context.now, at) };
    }),
    /**
     * The record's end. Its counts, unless more answers were counted here: one
     * observation or the other, never a mix of fields (which could add up to
     * more answers than tasks).
     */
    adoptRecord: assign(({ context, event }) => {
      if (event.type !== "record.changed") return {};
      const { done, failed, dead } = event.counts;
      const theirs = done + failed + dead >= context.done + context.failed + context.dead;
      // The record's reason, none included: a job that ends succeeded elsewhere has no reason,
      // whatever end this actor had decided.
      return { recorded: event.counts, ...(theirs ? { done, failed, dead } : {}), reason: event.reason };
    }),
    adoptReason: assign({
      reason: ({ context, event }) =>
        event.type === "record.changed" ? (event.reason ?? context.reason) : context.reason,
    }),
    rememberRecorded: assign({
      recorded: ({ context, event }) => (event.type === "record.changed" ? event.counts : context.recorded),
    }),
    tick: assign(({ event, context }) =>
      event.type === "clock.tick" ? { now: event.now, wallAhead: event.wallAhead ?? context.wallAhead } : {},
    ),
    markStalled: assign({
      stalledSince: ({ event, context }) => (event.type === "clock.tick" ? event.now : context.now),
    }),
    clearStalled: assign({ stalledSince: null }),
    rememberCancel: assign({
      reason: ({ event, context }) =>
        event.type === "job.cancel" ? boundReason(`cancelled: ${event.reason}`) : context.reason,
    }),
    /** The end decided is not the job's (a redrive reopened it): no reason until the next. */
    clearReason: assign({ reason: null }),
    failedByTolerance: assign({
      reason: ({ context }) =>
        `${context.failed + context.dead} of ${context.total} tasks failed or died (tolerance ${context.settings.maxFailures})`,
    }),
    failedStalled: assign({
      reason: ({ context }) =>
        `stalled: no progress for ${context.now - context.lastProgressAt} ms with ${remaining(context)} tasks left`,
    }),
  },
});

/** One state of the job's chart, as `createMachine` types it (actors, guards and actions by name). */
type JobStateConfig = NonNullable<Parameters<typeof jobSetup.createMachine>[0]["states"]>[string];

/**
 * An end, `succeeded` or `failed`: finalize writes it to the record (deletes
 * the consumer, purges what is left), then the job is `recorded`. `satisfies`
 * types the config where it is written, as the inline literal was, and keeps
 * its literal type, so `createMachine` still infers the state values
 * (`{ succeeded: "recorded" }`) from it.
 */
const endState = (status: FinalizeInput["status"]) =>
  ({
    initial: "recording",
    states: {
      recording: {
        entry: { type: "startFinalize", params: ({ context }) => finalizeInput(context, status) },
        exit: "abortFinalize",
        on: {
          "finalize.settled": "recorded",
          // The same end in the record (this write's echo, or another runtime's): finalize
          // still deletes the consumer and purges what is left before the job is recorded. The
          // recorded reason is the job's (another runtime's end of the same status: tasks lost
          // where this one cancelled).
          "record.changed": {
            guard: status === "succeeded" ? "recordSucceeded" : "recordFailed",
            actions: "adoptReason",
          },
          // Its write refused: a redrive not counted here reopened the job (api/job-effects.ts).
          // Counted with the answers held since, the job runs again; leaving aborts the finalize.
          "results.received": {
            guard: "reopens",
            target: "#job.running",
            actions: ["countResults", "clearReason"],
          },
        },
      },
      recorded: { type: "final", on: { "record.changed": {} } },
    },
  }) satisfies JobStateConfig;

export const jobMachine = jobSetup.createMachine({
  id: "job",
  context: ({ input }) => jobContext(input),
  // An end recorded by another runtime (its supervisor finished, or anyone cancelled) ends
  // the job here too; the final states' `recorded` children ignore it (they are over).
  on: {
    "record.changed": [
      { guard: "recordSucceeded", target: ".succeeded.recorded", actions: "adoptRecord" },
      { guard: "recordFailed", target: ".failed.recorded", actions: "adoptRecord" },
      { actions: "rememberRecorded" },
    ],
  },
  initial: "queuing",
  states: {
    queuing: {
      initial: "checking",
      states: {
        checking: {
          always: [
            { guard: "resumeRunning", target: "#job.running" },
            { guard: "resumeStalled", target: "#job.stalled" },
            { guard: "resumeSucceeded", target: "#job.succeeded.recorded" },
            { guard: "resumeFailed", target: "#job.failed.recorded" },
            { target: "submitting" },
          ],
        },
        submitting: {
          entry: "startSubmit",
          exit: "abortSubmit",
          on: {
            "submit.committed": { target: "#job.running", actions: "markCommitted" },
            "submit.failed": {
              target: "#job.failed",
              actions: assign({
                reason: ({ event }) => boundReason(`submit failed: ${errorText(event.error)}`),
              }),
            },
          },
        },
      },
      on: { "job.cancel": { target: "failed", actions: "rememberCancel" } },
    },
    running: {
      entry: "clearStalled",
      always: [
        { guard: and(["allAnswered", "withinTolerance"]), target: "succeeded" },
        { guard: "allAnswered", target: "failed", actions: "failedByTolerance" },
      ],
      on: {
        "results.received": { actions: "countResults" },
        "clock.tick": [
          { guard: "stallDue", target: "stalled", actions: ["tick", "markStalled"] },
          { actions: "tick" },
        ],
        "job.cancel": { target: "failed", actions: "rememberCancel" },
      },
    },
    stalled: {
      always: [
        { guard: and(["allAnswered", "withinTolerance"]), target: "succeeded" },
        { guard: "allAnswered", target: "failed", actions: "failedByTolerance" },
        { guard: "madeProgress", target: "running" },
      ],
      on: {
        "results.received": { actions: "countResults" },
        "clock.tick": [
          { guard: "stalledTooLong", target: "failed", actions: ["tick", "failedStalled"] },
          { actions: "tick" },
        ],
        "job.cancel": { target: "failed", actions: "rememberCancel" },
      },
    },
    succeeded: endState("succeeded"),
    failed: endState("failed"),
  },
});

const finalizeInput = (context: JobContext, status: FinalizeInput["status"]): FinalizeInput => ({
  jobId: context.jobId,
  queue: context.queue,
  status,
  reason: context.reason,
  counts: { done: context.done, failed: context.failed, dead: context.dead },
});

const errorText = (error: unknown): string => (error instanceof Error ? error.message : String(error));

export type JobMachine = typeof jobMachine;
