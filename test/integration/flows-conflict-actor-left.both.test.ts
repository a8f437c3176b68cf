/**
 * A's submit of flow f1 loses to B's flow of the same id (another request;
 * A's record write held until B's is written) and rejects with
 * `IdempotencyConflict`. No handle of A's was given out: nobody on A called
 * `rt.flows.get("f1")`. Since d7bc53b the losing submit's actor is kept to
 * follow B's flow: an actor and a poll of the flow's record every 250 ms,
 * in A's handles, held for the whole life of B's flow by no caller (it was
 * stopped and dropped before). A's own reads of f1 while B's flow runs
 * untouched for 3 s should be its sweep's (one every 2 s), not four a second.
 *
 * Oracle: A's reads of the flow counted at its broker; B's flow read raw.
 */
import { describe, expect, it } from "vitest";
import { IdempotencyConflict } from "../../src/kernel/errors.ts";
import { heldSubmit, memoryFlowSide, natsFlowSide } from "../harness/flow-sides.ts";
import { delay, waitUntil } from "../harness/wait.ts";

describe.each([
  ["memory", memoryFlowSide],
  ["nats", natsFlowSide],
] as const)(
  "a submit that lost to another runtime's flow of the id, no handle given out, on %s",
  (_k, makeSide) => {
    it("leaves nothing of it polling that flow for its whole life", { timeout: 60_000 }, async () => {
      const side = await makeSide();
      const race = await heldSubmit(side, "f1");
      try {
        const submitted = race.submitA();
        await race.aWriting();
        await race.bWins();
        expect(await submitted.catch((error: unknown) => error)).toBeInstanceOf(IdempotencyConflict);
        await waitUntil(() => race.ran.includes("b"), { timeoutMs: 10_000, message: "B's task started" });
        await delay(500);
        // B's flow runs, nothing of it changes: what A reads of it now is A's own doing.
        const from = race.aReads();
        // A negative check: 3 s in which A should read f1 no more than its sweep does.
        await delay(3000);
        expect((await side.storedFlow("f1"))?.status).toBe("running");
        // A's sweep, every 2 s, reads the flow and its step reads it again: up to two sweeps, four
        // reads, in 3 s (six allowed). Polled every 250 ms, the kept actor made 12 more (15 seen).
        expect(
          race.aReads() - from,
          "A's reads of f1 in 3 s, with no handle of it given out",
        ).toBeLessThanOrEqual(6);
      } finally {
        await race.dispose();
      }
    });
  },
);
