/**
 * What a handle's `cancel()` does when `rt.flows.get("f1")` gave the handle
 * while A's submit of f1 was under way and that submit then lost to B's flow
 * of the same id (another request; A's record write held until B's is
 * written), on both brokers. Decided (a review asked the other way,
 * 45ecf6b, not taken): a handle from `get(id)` is the flow under the id, as
 * its snapshot and `done()` follow B's flow, and so does its cancel, asked
 * before or after the submit lost: B's flow is cancelled with the caller's
 * reason and `cancel()` resolves with that end, as a `get("f1")` asked after
 * the race would. A's own submit cancels nothing: with no handle given out,
 * B's flow runs on (`flows-conflict-actor-left.both.test.ts`).
 *
 * Oracles: the flow record read raw, and W's ledger of the tasks run.
 */
import { describe, expect, it } from "vitest";
import { IdempotencyConflict } from "../../src/kernel/errors.ts";
import { heldSubmit, memoryFlowSide, natsFlowSide } from "../harness/flow-sides.ts";
import { within } from "../harness/wait.ts";

describe.each([
  ["memory", memoryFlowSide],
  ["nats", natsFlowSide],
] as const)(
  "a handle got during a submit that loses to another runtime's flow of the id, on %s",
  (_k, makeSide) => {
    it("cancels the flow under the id, asked while the submit was under way", {
      timeout: 60_000,
    }, async () => {
      const side = await makeSide();
      // W's tasks are held until the cancel aborts them.
      const race = await heldSubmit(side, "f1");
      const submitted = race.submitA();
      try {
        await race.aWriting();
        const early = (await race.a.flows.get("f1"))!;
        const cancelling = early.cancel("mine: stop");
        const theirs = await race.bWins();
        expect(await submitted.catch((error: unknown) => error)).toBeInstanceOf(IdempotencyConflict);
        const ended = await within(cancelling, 20_000);
        expect(ended).toMatchObject({ id: "f1", status: "cancelled", reason: "mine: stop" });
        expect(Object.keys((ended as { nodes: object }).nodes)).toEqual(["theirs"]);
        expect(await side.storedFlow("f1")).toMatchObject({ status: "cancelled", nodes: { theirs: {} } });
        expect(await within(theirs.done(), 10_000)).toMatchObject({
          status: "cancelled",
          reason: "mine: stop",
        });
        // A's request never ran; B's, if it started before the cancel, was stopped.
        expect(race.ran.filter((p) => p !== "b")).toEqual([]);
      } finally {
        await race.dispose();
      }
    });
  },
);
