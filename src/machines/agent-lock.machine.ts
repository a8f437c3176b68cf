import { assign, emit, fromPromise, setup } from "xstate";
// Type-only imports: the machine shares the record and decision shapes with
// the effects that produce them, but never runs effect code itself.
import type { AgentRecord } from "../kernel/agent-record.ts";
import type { Decision } from "../kernel/choose-target.ts";

/**
 * One lock actor per agent. Its mailbox is the lock: failures are queued in
 * context and evaluated one at a time, each against a record re-read after
 * the previous one was fully handled (written and announced). XState drops
 * events a state does not handle, so queueing is explicit: every state
 * enqueues, and only `idle` dequeues.
 */

export interface ReportedFailure {
  /** Correlates the reply with the caller's promise. */
  readonly id: string;
  readonly target: string;
  readonly reason: string;
}

export type FailureOutcome =
  | { readonly outcome: "switched"; readonly from: string; readonly to: string }
  | { readonly outcome: "stale"; readonly target: string; readonly current: string }
  | { readonly outcome: "exhausted"; readonly target: string };

export type AgentLockEvent = { readonly type: "failure.reported"; readonly failure: ReportedFailure };

export type AgentLockEmitted =
  | { readonly type: "failure.handled"; readonly failureId: string; readonly result: FailureOutcome }
  | { readonly type: "failure.errored"; readonly failureId: string; readonly error: unknown }
  | {
      readonly type: "switch.notify-failed";
      readonly from: string;
      readonly to: string;
      readonly error: unknown;
    };

export interface AgentLockContext {
  readonly agentId: string;
  /** Failures waiting for the lock, oldest first. */
  readonly queue: readonly ReportedFailure[];
  /** The failure holding the lock. */
  readonly failure: ReportedFailure | undefined;
  readonly decision: Decision | undefined;
  /** CAS losses for the current failure; bounded so a hot record cannot spin us forever. */
  readonly conflicts: number;
  /** The last record read or written: what `get()` reports between failures. */
  readonly record: AgentRecord;
}

export interface AgentLockInput {
  readonly agentId: string;
  readonly record: AgentRecord;
}

export interface EvaluateInput {
  readonly agentId: string;
  readonly failure: ReportedFailure;
}
export interface WriteInput {
  readonly agentId: string;
  readonly record: AgentRecord;
  readonly revision: number;
}
export interface NotifySwitchInput {
  readonly agentId: string;
  readonly from: string;
  readonly to: string;
  readonly reason: string;
}

/** After this many CAS losses on one failure, give up on it with the conflict error. */
export const MAX_CONFLICTS = 8;

const unprovided = (name: string) => () =>
  Promise.reject(new Error(`agent-lock: actor ${name} not provided`));

// By tag, not instanceof: a tagged error's tag is its contract, whichever module copy built it.
const isRevisionConflict = (error: unknown): boolean =>
  typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "RevisionConflict";

const current = (context: AgentLockContext): ReportedFailure => {
  if (context.failure === undefined) throw new Error("agent-lock: no failure holds the lock");
  return context.failure;
};

const decided = (context: AgentLockContext): Decision => {
  if (context.decision === undefined) throw new Error("agent-lock: no decision to act on");
  return context.decision;
};

// XState does not infer the event type of `onError` params; this says it once.
const errorOf = ({ event }: { event: { error: unknown } }): unknown => event.error;

/** The record a decision leaves behind once its write (if any) succeeded. */
const recordAfter = (decision: Decision): AgentRecord =>
  decision.kind === "stale" ? decision.record : (decision.next ?? decision.record);

export const agentLockMachine = setup({
  types: {
    context: {} as AgentLockContext,
    events: {} as AgentLockEvent,
    input: {} as AgentLockInput,
    emitted: {} as AgentLockEmitted,
  },
  actors: {
    /** Re-reads the record and decides; provided by the registry. */
    evaluate: fromPromise<Decision, EvaluateInput>(unprovided("evaluate")),
    /** CAS-writes the decided record; rejects with RevisionConflict on a lost race. */
    write: fromPromise<number, WriteInput>(unprovided("write")),
    /** Runs the user's onSwitch while still holding the lock (e.g. restart the pool). */
    notifySwitch: fromPromise<void, NotifySwitchInput>(unprovided("notifySwitch")),
  },
  guards: {
    hasQueued: ({ context }) => context.queue.length > 0,
    isStale: (_, decision: Decision) => decision.kind === "stale",
    needsWrite: (_, decision: Decision) => decision.kind !== "stale" && decision.next !== undefined,
    decidedSwitch: ({ context }) => context.decision?.kind === "switch",
    mayRetryConflict: ({ context }, error: unknown) =>
      isRevisionConflict(error) && context.conflicts < MAX_CONFLICTS,
  },
  actions: {
    enqueue: assign({
      queue: ({ context }, failure: ReportedFailure) => [...context.queue, failure],
    }),
    takeNext: assign(({ context }) => ({
      failure: context.queue[0],
      queue: context.queue.slice(1),
      decision: undefined,
      conflicts: 0,
    })),
    release: assign({ failure: undefined, decision: undefined, conflicts: 0 }),
    keepDecision: assign({ decision: (_, decision: Decision) => decision }),
    learnRead: assign({ record: (_, decision: Decision) => decision.record }),
    learnWritten: assign({ record: ({ context }) => recordAfter(decided(context)) }),
    countConflict: assign({ conflicts: ({ context }) => context.conflicts + 1 }),
    replyStale: emit(({ context }) => ({
      type: "failure.handled" as const,
      failureId: current(context).id,
      result: { outcome: "stale" as const, target: current(context).target, current: context.record.current },
    })),
    replyExhausted: emit(({ context }) => ({
      type: "failure.handled" as const,
      failureId: current(context).id,
      result: { outcome: "exhausted" as const, target: current(context).target },
    })),
    replySwitched: emit(({ context }) => {
      const decision = decided(context);
      const result: FailureOutcome =
        decision.kind === "switch"
          ? { outcome: "switched", from: decision.from, to: decision.to }
          : { outcome: "exhausted", target: current(context).target };
      return { type: "failure.handled" as const, failureId: current(context).id, result };
    }),
    replyError: emit(({ context }, error: unknown) => ({
      type: "failure.errored" as const,
      failureId: current(context).id,
      error,
    })),
    reportNotifyFailure: emit(({ context }, error: unknown) => {
      const decision = decided(context);
      const [from, to] = decision.kind === "switch" ? [decision.from, decision.to] : ["", ""];
      return { type: "switch.notify-failed" as const, from, to, error };
    }),
  },
}).createMachine({
  id: "agent-lock",
  context: ({ input }) => ({
    agentId: input.agentId,
    queue: [],
    failure: undefined,
    decision: undefined,
    conflicts: 0,
    record: input.record,
  }),
  initial: "idle",
  // Handled at the root so a failure arriving in any state waits its turn.
  on: {
    "failure.reported": { actions: { type: "enqueue", params: ({ event }) => event.failure } },
  },
  states: {
    idle: {
      entry: "release",
      always: { guard: "hasQueued", target: "evaluating", actions: "takeNext" },
    },
    evaluating: {
      invoke: {
        id: "evaluate",
        src: "evaluate",
        input: ({ context }) => ({ agentId: context.agentId, failure: current(context) }),
        onDone: [
          {
            guard: { type: "isStale", params: ({ event }) => event.output },
            target: "idle",
            actions: [{ type: "learnRead", params: ({ event }) => event.output }, "replyStale"],
          },
          {
            guard: { type: "needsWrite", params: ({ event }) => event.output },
            target: "writing",
            actions: [
              { type: "learnRead", params: ({ event }) => event.output },
              { type: "keepDecision", params: ({ event }) => event.output },
            ],
          },
          {
            // Exhausted and already recorded: nothing to write.
            target: "idle",
            actions: [{ type: "learnRead", params: ({ event }) => event.output }, "replyExhausted"],
          },
        ],
        onError: { target: "idle", actions: { type: "replyError", params: errorOf } },
      },
    },
    writing: {
      invoke: {
        id: "write",
        src: "write",
        input: ({ context }) => {
          const decision = decided(context);
          return { agentId: context.agentId, record: recordAfter(decision), revision: decision.revision };
        },
        onDone: [
          { guard: "decidedSwitch", target: "notifying", actions: "learnWritten" },
          { target: "idle", actions: ["learnWritten", "replyExhausted"] },
        ],
        onError: [
          {
            // Someone else wrote first: re-read and re-decide (usually: now stale).
            guard: { type: "mayRetryConflict", params: errorOf },
            target: "evaluating",
            actions: "countConflict",
          },
          { target: "idle", actions: { type: "replyError", params: errorOf } },
        ],
      },
    },
    notifying: {
      invoke: {
        id: "notifySwitch",
        src: "notifySwitch",
        input: ({ context }) => {
          const decision = decided(context);
          if (decision.kind !== "switch") throw new Error("agent-lock: notifying without a switch");
          return {
            agentId: context.agentId,
            from: decision.from,
            to: decision.to,
            reason: current(context).reason,
          };
        },
        onDone: { target: "idle", actions: "replySwitched" },
        // The switch is already recorded; a failing hook is reported, not undone.
        onError: {
          target: "idle",
          actions: [{ type: "reportNotifyFailure", params: errorOf }, "replySwitched"],
        },
      },
    },
  },
});

export type AgentLockState = "idle" | "evaluating" | "writing" | "notifying";
