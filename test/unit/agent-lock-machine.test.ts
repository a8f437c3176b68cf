/**
 * The agent-lock machine on its own: started without its effects provided,
 * it answers each failure with an error naming the missing actor and takes
 * the next one (it never wedges); a write rejected with `null` is answered
 * as an error, not mistaken for a lost compare-and-set.
 */
import { describe, expect, it } from "vitest";
import { createActor, fromPromise } from "xstate";
import type { Decision } from "../../src/kernel/choose-target.ts";
import {
  type AgentLockEmitted,
  agentLockMachine,
  type EvaluateInput,
  type WriteInput,
} from "../../src/machines/agent-lock.machine.ts";

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

  it("a write rejected with null is answered as an error, not taken for a conflict", async () => {
    const record = { v: 1 as const, current: "A", skips: [], switches: 0 };
    const decision: Decision = {
      kind: "switch",
      from: "A",
      to: "B",
      record,
      next: { ...record, current: "B", switches: 1 },
      revision: 1,
    };
    const actor = createActor(
      agentLockMachine.provide({
        actors: {
          evaluate: fromPromise<Decision, EvaluateInput>(async () => decision),
          write: fromPromise<number, WriteInput>(() => Promise.reject(null)),
        },
      }),
      { input: { agentId: "a1", record } },
    );
    const replies = new Promise<AgentLockEmitted | { type: "actor crashed"; error: unknown }>((resolve) => {
      actor.on("*", (event) => resolve(event));
      actor.subscribe({ error: (error) => resolve({ type: "actor crashed", error }) });
    });
    actor.start();
    actor.send({ type: "failure.reported", failure: { id: "f1", target: "A", reason: "x" } });
    expect(await replies).toEqual({ type: "failure.errored", failureId: "f1", error: null });
    expect(actor.getSnapshot().status).toBe("active");
    actor.stop();
  });
});
