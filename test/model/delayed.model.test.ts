/**
 * The delayed statechart, replayed on live actors along generated paths
 * (delayed.paths.ts): every transition is taken, and where each delivery
 * ends matches the rule written independently (`expectedOf`).
 */

import { describe, expect, it } from "vitest";
import { createActor } from "xstate";
import { delayedMachine } from "../../src/machines/delayed.machine.ts";
import { transitionRecorder } from "./coverage.ts";
import { deliveriesOf, describePath, expectedOf, input, paths } from "./delayed.paths.ts";

describe("the delayed statechart", () => {
  const recorder = transitionRecorder(delayedMachine);

  it.each(paths.map((p) => [describePath(p), p] as const))("%s", (_, path) => {
    for (const delivery of deliveriesOf(path)) {
      // Each delivery starts from `held`: the server keeps the task between deliveries.
      const actor = createActor(delayedMachine, { input, inspect: recorder.inspect }).start();
      for (const event of delivery) actor.send(event);
      const snapshot = actor.getSnapshot();
      // A path may end mid-delivery (due, moving): nothing is answered yet.
      if (snapshot.matches("due") || snapshot.matches("moving")) continue;
      const expected = expectedOf(delivery);
      if (expected.answer === "done") {
        expect(snapshot.status).toBe("done");
        expect(snapshot.matches("moved")).toBe(expected.moved);
      } else {
        expect(snapshot.matches("held")).toBe(true);
        expect(snapshot.context.retryAt - snapshot.context.now).toBe(expected.ms);
      }
      actor.stop();
    }
  });

  it("the paths take every transition", () => {
    expect(recorder.missing()).toEqual([]);
  });
});
