import type { AgentRecord } from "../../src/kernel/agent-record.ts";
import type { Decision } from "../../src/kernel/choose-target.ts";

/**
 * A reference model of one agent lock, written from the lock's rules and not
 * from its machine (nothing here imports src/machines): failures wait in a
 * queue and are handled one at a time (re-read and decide, write the decided
 * record with CAS, announce a switch), a lost CAS race re-decides up to 8
 * times, and every failure gets exactly one reply. What a step should leave
 * behind: the lock state, the queue, the record last read or written, the
 * replies so far and the effect running with its input.
 *
 * To teach it a new event, add a case to `stepLock`.
 */

export interface Failure {
  readonly id: string;
  readonly target: string;
  readonly reason: string;
}

export type LockState = "idle" | "evaluating" | "writing" | "notifying";

export type Reply =
  | { type: "failure.handled"; failureId: string; result: Record<string, string> }
  | { type: "failure.errored"; failureId: string; error: unknown }
  | { type: "switch.notify-failed"; from: string; to: string; error: unknown };

export interface LockModel {
  readonly state: LockState;
  readonly queue: readonly Failure[];
  readonly failure: Failure | undefined;
  readonly decision: Decision | undefined;
  readonly conflicts: number;
  readonly record: AgentRecord;
  /** Everything emitted, in order. */
  readonly replies: readonly Reply[];
  /** The effect running now and its input (none while idle). */
  readonly running:
    | { readonly src: "evaluate" | "write" | "notifySwitch"; readonly input: unknown }
    | undefined;
}

export type LockEvent =
  | { type: "report"; failure: Failure }
  | { type: "evaluated"; decision: Decision }
  | { type: "evaluate.failed"; error: unknown }
  | { type: "written" }
  | { type: "write.failed"; error: unknown }
  | { type: "notified" }
  | { type: "notify.failed"; error: unknown };

export const MAX_CONFLICTS_ALLOWED = 8;

const isConflict = (error: unknown) => (error as { _tag?: string } | null)?._tag === "RevisionConflict";

/** Takes the next failure if the lock is free. */
const next = (m: LockModel, agentId: string): LockModel => {
  if (m.state !== "idle" || m.queue.length === 0) return m;
  const [failure, ...queue] = m.queue;
  return {
    ...m,
    state: "evaluating",
    queue,
    failure,
    decision: undefined,
    conflicts: 0,
    running: { src: "evaluate", input: { agentId, failure } },
  };
};

const idle = (m: LockModel, ...replies: Reply[]): LockModel => ({
  ...m,
  state: "idle",
  failure: undefined,
  decision: undefined,
  conflicts: 0,
  running: undefined,
  replies: [...m.replies, ...replies],
});

const handled = (m: LockModel, result: Record<string, string>): Reply => ({
  type: "failure.handled",
  failureId: m.failure!.id,
  result,
});

const writeOf = (agentId: string, d: Decision): LockModel["running"] => ({
  src: "write",
  input: { agentId, record: d.kind === "stale" ? d.record : (d.next ?? d.record), revision: d.revision },
});

export const initialLock = (record: AgentRecord): LockModel => ({
  state: "idle",
  queue: [],
  failure: undefined,
  decision: undefined,
  conflicts: 0,
  record,
  replies: [],
  running: undefined,
});

export const stepLock = (m: LockModel, e: LockEvent, agentId: string): LockModel => {
  switch (e.type) {
    case "report":
      return next({ ...m, queue: [...m.queue, e.failure] }, agentId);
    case "evaluated": {
      const d = e.decision;
      const read = { ...m, record: d.record };
      if (d.kind === "stale")
        return next(
          idle(read, handled(m, { outcome: "stale", target: m.failure!.target, current: d.record.current })),
          agentId,
        );
      if (d.next === undefined)
        return next(idle(read, handled(m, { outcome: "exhausted", target: m.failure!.target })), agentId);
      return { ...read, state: "writing", decision: d, running: writeOf(agentId, d) };
    }
    case "evaluate.failed":
      return next(idle(m, { type: "failure.errored", failureId: m.failure!.id, error: e.error }), agentId);
    case "written": {
      const d = m.decision!;
      const written = { ...m, record: d.kind === "stale" ? d.record : (d.next ?? d.record) };
      if (d.kind === "switch")
        return {
          ...written,
          state: "notifying",
          running: {
            src: "notifySwitch",
            input: { agentId, from: d.from, to: d.to, reason: m.failure!.reason },
          },
        };
      return next(idle(written, handled(m, { outcome: "exhausted", target: m.failure!.target })), agentId);
    }
    case "write.failed":
      if (isConflict(e.error) && m.conflicts < MAX_CONFLICTS_ALLOWED)
        return {
          ...m,
          state: "evaluating",
          conflicts: m.conflicts + 1,
          running: { src: "evaluate", input: { agentId, failure: m.failure } },
        };
      return next(idle(m, { type: "failure.errored", failureId: m.failure!.id, error: e.error }), agentId);
    case "notified":
    case "notify.failed": {
      const d = m.decision as Decision & { kind: "switch" };
      const switched = handled(m, { outcome: "switched", from: d.from, to: d.to });
      return next(
        e.type === "notified"
          ? idle(m, switched)
          : idle(m, { type: "switch.notify-failed", from: d.from, to: d.to, error: e.error }, switched),
        agentId,
      );
    }
  }
};

/** The oracle's name for a machine (or effect settlement) event. */
export const fromLockEvent = (event: { type: string; [k: string]: unknown }): LockEvent => {
  switch (event.type) {
    case "failure.reported":
      return { type: "report", failure: event.failure as Failure };
    case "xstate.done.actor.evaluate":
      return { type: "evaluated", decision: event.output as Decision };
    case "xstate.error.actor.evaluate":
      return { type: "evaluate.failed", error: event.error };
    case "xstate.done.actor.write":
      return { type: "written" };
    case "xstate.error.actor.write":
      return { type: "write.failed", error: event.error };
    case "xstate.done.actor.notifySwitch":
      return { type: "notified" };
    case "xstate.error.actor.notifySwitch":
      return { type: "notify.failed", error: event.error };
    default:
      throw new Error(`the lock oracle does not know ${event.type}`);
  }
};
