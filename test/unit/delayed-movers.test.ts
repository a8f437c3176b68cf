/**
 * Which queues a runtime pulls held tasks from (api/movers.ts): a queue's
 * pull loop runs while at least one job of it is followed, ends when the last
 * one lets go, and starts again with the next. The oracle is the consume
 * function's own record of the loops it was asked to run and of their ends.
 */
import { afterEach, describe, expect, it } from "vitest";
import { Movers } from "../../src/api/movers.ts";
import { LoopGroup } from "../../src/effects/loop-group.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { waitUntil } from "../harness/wait.ts";

describe("Movers", () => {
  const groups: LoopGroup[] = [];
  afterEach(async () => {
    for (const group of groups.splice(0)) await group.close();
  });

  /** A LoopGroup and a consume that records each loop: its queue, and whether it has ended. */
  const setUp = () => {
    const group = new LoopGroup(silentLogger());
    groups.push(group);
    const loops: { queue: string; ended: boolean }[] = [];
    const consume = (queue: string, signal: AbortSignal) =>
      new Promise<void>((resolve) => {
        const loop = { queue, ended: false };
        loops.push(loop);
        signal.addEventListener("abort", () => {
          loop.ended = true;
          resolve();
        });
      });
    return { movers: new Movers(group, consume), loops, group };
  };

  it("pulls a queue once, while any of its jobs is followed, and again after it was let go", async () => {
    const { movers, loops } = setUp();
    const a1 = movers.follow("A");
    // The same job twice (a redriven job's old and new actors): followed until both let go.
    const a2 = movers.follow("A");
    const b1 = movers.follow("B");
    await waitUntil(() => loops.length === 2, { timeoutMs: 2000, message: "a loop per queue" });
    expect(loops.map((l) => l.queue).sort()).toEqual(["A", "B"]);
    a1();
    a1(); // twice: no effect
    expect(loops.every((l) => !l.ended)).toBe(true);
    a2();
    await waitUntil(() => loops[0]?.ended === true, { timeoutMs: 2000, message: "A's loop ended" });
    expect(loops.find((l) => l.queue === "B")?.ended).toBe(false);
    const again = movers.follow("A");
    await waitUntil(() => loops.length === 3, { timeoutMs: 2000, message: "A pulled again" });
    expect(loops[2]).toEqual({ queue: "A", ended: false });
    again();
    b1();
    await waitUntil(() => loops.every((l) => l.ended), { timeoutMs: 2000, message: "every loop ended" });
  });

  it("the runtime's stop ends every loop", async () => {
    const { movers, loops, group } = setUp();
    movers.follow("A");
    await waitUntil(() => loops.length === 1, { timeoutMs: 2000, message: "A pulled" });
    await group.close();
    expect(loops[0]?.ended).toBe(true);
  });
});
