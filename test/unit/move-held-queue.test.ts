/**
 * A due held task is moved only to a job of its own queue: a record of
 * another queue under its job id is not its job (as if it had none). The
 * oracle: the publishes the mover asks of its ports, recorded by a fake.
 */
import { describe, expect, it } from "vitest";
import type { HeldTask } from "../../src/adapters/delayed-tasks.ts";
import { moveHeld } from "../../src/effects/move-held.ts";
import { heldMsgId } from "../../src/kernel/held-task.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { newRecord } from "../contract/contract-helpers.ts";

describe("moveHeld", () => {
  const running = { ...newRecord(1, 30_000), status: "running" as const, phase: "committed" as const };
  const task = (queue: string): HeldTask => ({
    jobId: running.id,
    queue,
    dueAt: 0,
    msgId: heldMsgId(running.id, running.submitId, 0),
    body: '{"i":0,"p":1}',
  });
  const move = async (queue: string) => {
    const published: string[] = [];
    const answer = await moveHeld(
      {
        getRecord: async () => ({ record: running, revision: 1 }),
        releaseHeld: async (t) => {
          published.push(t.queue);
        },
      },
      task(queue),
      () => 1000,
      silentLogger(),
    );
    return { answer, published };
  };

  it("moves a due task of a running job of its queue; drops one whose job id names a job of another queue", async () => {
    expect(await move(running.queue)).toEqual({ answer: { kind: "done" }, published: [running.queue] });
    expect(await move("elsewhere")).toEqual({ answer: { kind: "done" }, published: [] });
  });
});
