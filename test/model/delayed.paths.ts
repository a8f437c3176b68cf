import { getShortestPaths, type StatePath } from "@xstate/graph";
import { type SnapshotFrom, transition } from "xstate";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { type DelayedEvent, delayedMachine } from "../../src/machines/delayed.machine.ts";
import { defaultSettings } from "../harness/finished-records.ts";

/**
 * The delayed statechart's model: one held task (due at 1000), the
 * deliveries (before and after its time), every kind of record a due task
 * can find, and the publish's two ends. Shared by the replay on the machine
 * (delayed.model.test.ts) and the replay through the mover on real brokers
 * (delayed.runtime.model.test.ts).
 */

export type Snapshot = SnapshotFrom<typeof delayedMachine>;

export const jobId = "jmodel";
export const submitId = "s1";
export const dueAt = 1000;
export const input = { dueAt, msgId: `${jobId}.${submitId}.d0` };

const base: JobRecord = {
  v: 1,
  id: jobId,
  queue: "model",
  status: "running",
  phase: "committed",
  total: 1,
  submitId,
  settings: defaultSettings,
  counts: { done: 0, failed: 0, dead: 0 },
  createdAt: 0,
  updatedAt: 0,
  commitDeadline: 60_000,
  runAt: dueAt,
  dueUntil: dueAt,
};

/** Each kind of record a due task can find, by name (undefined: no record at all). */
export const records: Record<string, JobRecord | undefined> = {
  running: base,
  submitting: { ...base, status: "queuing", phase: "submitting" },
  rolledBack: { ...base, status: "failed", phase: "rolledBack", reason: "submit failed" },
  otherAttempt: { ...base, submitId: "s2" },
  over: { ...base, status: "succeeded", counts: { done: 1, failed: 0, dead: 0 } },
  cancelled: { ...base, status: "failed", reason: "cancelled: user" },
  none: undefined,
};

/** The record's name in a `record.read` event (the events carry the record itself). */
export const recordName = (record: JobRecord | undefined): string =>
  Object.entries(records).find(([, r]) => r === record)?.[0] ?? "?";

export const events = (state: Snapshot): DelayedEvent[] => {
  if (state.matches("held"))
    return [
      { type: "held.delivered", now: 500 },
      { type: "held.delivered", now: 1500 },
    ];
  if (state.matches("due")) return Object.values(records).map((record) => ({ type: "record.read", record }));
  if (state.matches("moving")) return [{ type: "move.published" }, { type: "move.failed" }];
  return [];
};

/** A state as the model tells them apart: where, why dropped, and the nak delay a `held` gives. */
const key = (s: Snapshot) =>
  `${String(s.value)}|${s.context.reason}|${s.matches("held") ? s.context.retryAt - s.context.now : ""}`;

const shortest = getShortestPaths(delayedMachine, { events, input, serializeState: key });

/** Each shortest path extended by every event its end accepts: every transition is taken. */
export const paths: StatePath<Snapshot, DelayedEvent>[] = shortest.flatMap((head) => [
  head,
  ...events(head.state).map((event): StatePath<Snapshot, DelayedEvent> => {
    const [state] = transition(delayedMachine, head.state, event);
    return { state, steps: [...head.steps, { event, state }], weight: head.weight + 1 };
  }),
]);

/** The events of a path, without the synthetic `xstate.init` first step. */
export const eventsOf = (path: StatePath<Snapshot, DelayedEvent>): DelayedEvent[] =>
  path.steps.map((s) => s.event).filter((e) => !e.type.startsWith("xstate."));

/** A path's events cut into deliveries: each starts with `held.delivered`. */
export const deliveriesOf = (path: StatePath<Snapshot, DelayedEvent>): DelayedEvent[][] => {
  const deliveries: DelayedEvent[][] = [];
  for (const event of eventsOf(path)) {
    if (event.type === "held.delivered") deliveries.push([event]);
    else deliveries.at(-1)?.push(event);
  }
  return deliveries;
};

export const describePath = (path: StatePath<Snapshot, DelayedEvent>): string =>
  eventsOf(path)
    .map((e) =>
      e.type === "held.delivered"
        ? `delivered@${e.now}`
        : e.type === "record.read"
          ? `read:${recordName(e.record)}`
          : e.type,
    )
    .join(" → ");

/**
 * What one delivery must come to, by the rule as docs/architecture.md states
 * it (written here independently of the machine): before its time, a nak for
 * what is left; a record that is not its submit's, rolled back or gone →
 * dropped; its job over → dropped; its submit not committed → a nak of 200
 * ms; committed → published (a nak of 1 s when the publish failed).
 */
export type Expected =
  | { readonly answer: "done"; readonly moved: boolean }
  | { readonly answer: "later"; readonly ms: number };

export const expectedOf = (delivery: readonly DelayedEvent[]): Expected => {
  const [delivered, read, move] = delivery;
  if (delivered?.type !== "held.delivered") throw new Error("a delivery starts with held.delivered");
  if (delivered.now < dueAt) return { answer: "later", ms: dueAt - delivered.now };
  if (read?.type !== "record.read") throw new Error("a due task reads its record");
  const name = recordName(read.record);
  if (name === "none" || name === "otherAttempt" || name === "rolledBack")
    return { answer: "done", moved: false };
  if (name === "over" || name === "cancelled") return { answer: "done", moved: false };
  if (name === "submitting") return { answer: "later", ms: 200 };
  if (move?.type === "move.failed") return { answer: "later", ms: 1000 };
  return { answer: "done", moved: true };
};
