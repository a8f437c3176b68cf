/**
 * A handle `rt.flows.get(id)` handed out while this runtime's submit of the
 * flow is under way, when that submit then loses to another runtime's flow
 * of the same id with another request (found by a review): the submit
 * rejects with `IdempotencyConflict`, and the handle said the flow failed
 * ("not submitted: …"), though a flow of that id runs and ends as its own
 * jobs do. The handle follows the flow that exists under the id.
 *
 * Runtime A's record write is held until B's flow is written: B's submit
 * lands first, A's create then finds the id taken. The oracle is the flow
 * record read raw from the memory server, and W's ledger of the tasks run.
 */
import { describe, expect, it } from "vitest";
import { IdempotencyConflict } from "../../src/kernel/errors.ts";
import { heldSubmit, memoryFlowSide } from "../harness/flow-sides.ts";
import { waitUntil, within } from "../harness/wait.ts";

describe("a flow handle got during a submit that loses to another runtime's flow of the same id", () => {
  it("follows that flow to its end, as its record says; not failed", { timeout: 30_000 }, async () => {
    const side = await memoryFlowSide();
    // A's record write waits until B's flow is written; W's tasks are held until released.
    const race = await heldSubmit(side, "f1");
    const { a, ran } = race;
    try {
      const submitted = race.submitA();
      await race.aWriting();
      const early = await a.flows.get("f1");
      expect(early).toBeDefined();
      // B's flow of the same id, another request: written while A's write waits.
      const theirs = await race.bWins();
      const refused = await submitted.catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(IdempotencyConflict);
      await waitUntil(() => ran.includes("b"), { timeoutMs: 10_000, message: "B's task started" });
      // The flow under f1 runs: the handle says so, with B's job, not A's.
      await waitUntil(() => early!.snapshot().nodes.theirs?.status === "running", {
        timeoutMs: 5000,
        message: () => `A's early handle follows B's flow; it says ${JSON.stringify(early!.snapshot())}`,
      });
      expect(early!.snapshot().status).toBe("running");
      expect(Object.keys(early!.snapshot().nodes)).toEqual(["theirs"]);
      race.releaseTasks();
      expect((await theirs.done()).status).toBe("succeeded");
      expect((await side.storedFlow("f1"))?.status).toBe("succeeded");
      const seen = await within(early!.done(), 5000);
      expect(seen).toMatchObject({ id: "f1", status: "succeeded" });
      // A's request never ran; the one flow under the id is B's.
      expect(ran).toEqual(["b"]);
      // Asked again, A hands out a handle of that flow too.
      expect((await a.flows.get("f1"))?.snapshot().status).toBe("succeeded");
    } finally {
      await race.dispose();
    }
  });
});
