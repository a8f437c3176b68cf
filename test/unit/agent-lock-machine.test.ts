/**
 * The agent-lock machine's own placeholder actors: a lock started without
 * its effects provided answers each failure with an error naming the
 * missing actor, and takes the next one (it never wedges).
 */
import { describe, expect, it } from "vitest";
import { createActor } from "xstate";
import { type AgentLockEmitted, agentLockMachine } from "../../src/machines/agent-lock.machine.ts";

describe("agent-lock machine: placeholder actors", () => {
  it("answers every failure with 'actor evaluate not provided' and goes back to idle", async () => {
    const actor = createActor(agentLockMachine, {
      input: { agentId: "a1", record: { v: 1, current: "A", skips: [], switches: 0 } },
    });
    const emitted: AgentLockEmitted[] = [];
    let answered: () => void = () => undefined;
    const bothAnswered = new Promise<void>((resolve) => {
      answered = resolve;
    });
    actor.on("*", (event) => {
      emitted.push(event);
      if (emitted.length === 2) answered();
    });
    actor.start();
    actor.send({ type: "failure.reported", failure: { id: "f1", target: "A", reason: "x" } });
    actor.send({ type: "failure.reported", failure: { id: "f2", target: "A", reason: "y" } });
    await bothAnswered;
    expect(
      emitted.map((e) => e.type === "failure.errored" && [e.failureId, (e.error as Error).message]),
    ).toEqual([
      ["f1", "agent-lock: actor evaluate not provided"],
      ["f2", "agent-lock: actor evaluate not provided"],
    ]);
    expect(actor.getSnapshot().value).toBe("idle");
    expect(actor.getSnapshot().context).toMatchObject({ queue: [], failure: undefined, conflicts: 0 });
    actor.stop();
  });
});
