import { assign, setup } from "xstate";
import { isOfAttempt, uncommittedRetryMs, waitFor } from "../kernel/held-task.ts";
import { isFinal, type JobRecord, SubmitPhase } from "../kernel/job-record.ts";

/**
 * One delivery of a held (delayed) task to a runtime's mover:
 * `held → due → moving → moved`, or back to `held` (not due yet, its submit
 * not committed yet, its publish failed), or `dropped` (its job is over,
 * cancelled, rolled back or gone). The server keeps the task between
 * deliveries: `held` is where a delivery starts and where a nak leaves it,
 * so nothing about it lives in any process. The mover runs this chart with
 * XState's pure `transition()` (no actor per delivery); no I/O here.
 */

export interface DelayedContext {
  readonly dueAt: number;
  /** The message id it is published with once due (its submit attempt's). */
  readonly msgId: string;
  /** In `held`: when to deliver it again (the nak's delay is `retryAt − now`). */
  readonly retryAt: number;
  readonly now: number;
  /** Why it was dropped, for the log. */
  readonly reason: string | null;
}

export type DelayedEvent =
  /** The server delivered it to a mover. */
  | { type: "held.delivered"; now: number }
  /** Its job's record as read once due (undefined: no record). */
  | { type: "record.read"; record: JobRecord | undefined }
  | { type: "move.published" }
  | { type: "move.failed" };

export interface DelayedInput {
  readonly dueAt: number;
  readonly msgId: string;
}

const publishRetryMs = 1000;

const recordOf = (event: DelayedEvent) => (event.type === "record.read" ? event.record : undefined);

export const delayedMachine = setup({
  types: {
    context: {} as DelayedContext,
    events: {} as DelayedEvent,
    input: {} as DelayedInput,
  },
  guards: {
    notDue: ({ context, event }) => event.type === "held.delivered" && event.now < context.dueAt,
    /** No record, a record of another attempt (this one rolled back), or one rolled back. */
    attemptGone: ({ context, event }) => {
      const record = recordOf(event);
      return (
        record === undefined || !isOfAttempt(context.msgId, record) || record.phase === SubmitPhase.rolledBack
      );
    },
    jobOver: ({ event }) => {
      const record = recordOf(event);
      return record !== undefined && isFinal(record.status);
    },
    uncommitted: ({ event }) => recordOf(event)?.phase === SubmitPhase.submitting,
  },
  actions: {
    deliveredAt: assign({
      now: ({ context, event }) => (event.type === "held.delivered" ? event.now : context.now),
    }),
    waitUntilDue: assign({ retryAt: ({ context }) => context.now + waitFor(context.dueAt, context.now) }),
    waitForCommit: assign({ retryAt: ({ context }) => context.now + uncommittedRetryMs }),
    /** A publish that failed (after its operation's own retries): tried again a second later. */
    retrySoon: assign({ retryAt: ({ context }) => context.now + publishRetryMs }),
    dropGone: assign({ reason: "its submit was rolled back or its record is gone" }),
    dropOver: assign({ reason: "its job is over" }),
  },
}).createMachine({
  id: "delayed",
  context: ({ input }) => ({
    dueAt: input.dueAt,
    msgId: input.msgId,
    retryAt: input.dueAt,
    now: 0,
    reason: null,
  }),
  initial: "held",
  states: {
    held: {
      on: {
        "held.delivered": [
          { guard: "notDue", target: "held", reenter: true, actions: ["deliveredAt", "waitUntilDue"] },
          { target: "due", actions: "deliveredAt" },
        ],
      },
    },
    due: {
      on: {
        "record.read": [
          { guard: "attemptGone", target: "dropped", actions: "dropGone" },
          { guard: "jobOver", target: "dropped", actions: "dropOver" },
          { guard: "uncommitted", target: "held", actions: "waitForCommit" },
          { target: "moving" },
        ],
      },
    },
    moving: {
      on: {
        "move.published": "moved",
        "move.failed": { target: "held", actions: "retrySoon" },
      },
    },
    /** Published to its job's subject with its message id: acked on the delayed stream. */
    moved: { type: "final" },
    /** Acked without a publish. */
    dropped: { type: "final" },
  },
});
