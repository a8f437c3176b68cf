import { setup } from "xstate";

/**
 * A queue's life as one worker sees it (src/api/queue-gate.ts runs it):
 * `loading` until its settings are first read, then `open` (no limit: a
 * task starts at once), `limited` (a task starts once it holds its permits)
 * or `paused` (a task pulled is held until the resume, and the worker pulls
 * no more). Each
 * write of the settings, seen by the worker's watch, moves it; a revision
 * older than the last one seen never reaches it (the gate drops it).
 */

/** What one write of a queue's settings says, as far as starting a task goes. */
interface QueueView {
  readonly paused: boolean;
  /** A rate or a concurrency limit is set. */
  readonly limited: boolean;
}

/** The queue's states, as a worker knows them (`worker.stats().queueState`). */
export type QueueState = "loading" | "open" | "limited" | "paused";

export type QueueEvent =
  | ({ readonly type: "settings.seen" } & QueueView)
  /** The first read failed: run as open until the watch brings the settings. */
  | { readonly type: "settings.unread" };

const decide = [
  { guard: "isPaused", target: ".paused" },
  { guard: "isLimited", target: ".limited" },
  { target: ".open" },
] as const;

export const queueMachine = setup({
  types: {
    events: {} as QueueEvent,
  },
  guards: {
    isPaused: ({ event }) => event.type === "settings.seen" && event.paused,
    isLimited: ({ event }) => event.type === "settings.seen" && event.limited,
  },
}).createMachine({
  id: "queue",
  initial: "loading",
  on: { "settings.seen": decide },
  states: {
    loading: {
      on: { "settings.unread": { target: "open" } },
    },
    open: {},
    limited: {},
    paused: {},
  },
});
