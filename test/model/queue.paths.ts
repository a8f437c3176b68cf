import { getShortestPaths } from "@xstate/graph";
import { createActor, type SnapshotFrom } from "xstate";
import { type QueueEvent, queueMachine } from "../../src/machines/queue.machine.ts";

/**
 * The queue machine's model: the events its paths are generated with (each
 * a write of the queue's settings that the public API can make), and the
 * paths: the shortest to every state, each extended by every event once, so
 * that every transition out of every reachable state is taken.
 */
type SettingsSeen = Extract<QueueEvent, { type: "settings.seen" }>;

export const events: SettingsSeen[] = [
  { type: "settings.seen", paused: false, limited: false },
  { type: "settings.seen", paused: false, limited: true },
  { type: "settings.seen", paused: true, limited: false },
  { type: "settings.seen", paused: true, limited: true },
];

const serializeState = (s: SnapshotFrom<typeof queueMachine>) => JSON.stringify(s.value);

export interface QueuePath {
  readonly name: string;
  readonly events: readonly SettingsSeen[];
  /** The state after each event. */
  readonly states: readonly string[];
}

const describe = (e: QueueEvent) =>
  e.type === "settings.seen" ? `${e.paused ? "paused" : "running"}${e.limited ? "+limit" : ""}` : e.type;

export const queuePaths = (): QueuePath[] => {
  const shortest = getShortestPaths(queueMachine, { events, serializeState } as never);
  const heads = shortest.map((p) => p.steps.slice(1));
  const all = [
    ...heads,
    ...heads.flatMap((head, n) =>
      events.map((e) => [...head, { event: e, state: shortest[n]?.state }] as typeof head),
    ),
  ];
  return all
    .filter((steps) => steps.length > 0)
    .map((steps) => {
      const list = steps.map((s) => s.event as SettingsSeen);
      return {
        name: list.map(describe).join(" → "),
        events: list,
        // The states the machine itself reaches, replayed on an actor (the extensions' last step included).
        states: replayStates(list),
      };
    });
};

const replayStates = (list: readonly QueueEvent[]): string[] => {
  const actor = createActor(queueMachine).start();
  const seen = list.map((e) => {
    actor.send(e);
    return String(actor.getSnapshot().value);
  });
  actor.stop();
  return seen;
};
