/**
 * The agent record as stored: the checks a record read back must pass (an
 * unknown version or a malformed field fails loudly, naming the agent), and
 * the memory store's compare-and-set contract, with copies in and out.
 */
import { describe, expect, it } from "vitest";
import { memoryAgentStore } from "../../src/adapters/memory/memory-agent-store.ts";
import { type AgentRecord, initialAgentRecord, parseAgentRecord } from "../../src/kernel/agent-record.ts";
import { PermanentBrokerError, RevisionConflict } from "../../src/kernel/errors.ts";

const good: AgentRecord = { v: 1, current: "A", skips: [{ target: "B", until: 5 }], switches: 2 };

const refusal = (value: unknown): PermanentBrokerError => {
  try {
    parseAgentRecord("agent-7", value);
  } catch (error) {
    expect(error).toBeInstanceOf(PermanentBrokerError);
    return error as PermanentBrokerError;
  }
  throw new Error(`accepted ${JSON.stringify(value)}`);
};

describe("parseAgentRecord", () => {
  it("returns a well-formed version 1 record as it is", () => {
    expect(parseAgentRecord("a", good)).toBe(good);
    // A field a later writer adds is kept, to be written back.
    const extended = { ...good, note: "x" };
    expect(parseAgentRecord("a", extended)).toBe(extended);
    expect(initialAgentRecord("X")).toEqual({ v: 1, current: "X", skips: [], switches: 0 });
    expect(parseAgentRecord("a", initialAgentRecord("X"))).toEqual(initialAgentRecord("X"));
  });

  it("says which agent and what is wrong", () => {
    const cases: [unknown, string][] = [
      [null, "not an object"],
      [[good], "not an object"],
      ["text", "not an object"],
      [{ ...good, v: 2 }, "unsupported version 2"],
      [{ ...good, v: 2, current: 3 }, "unsupported version 2"],
      [{ ...good, current: 3 }, "current: expected string"],
      [{ ...good, skips: "B" }, "skips: expected array"],
      [{ ...good, skips: [{ target: "B" }] }, "skips[0].until: is required"],
      [{ ...good, skips: [{ target: 1, until: 5 }] }, "skips[0].target: expected string"],
      [{ ...good, skips: [null] }, "skips[0]: expected object"],
      [{ ...good, switches: "2" }, "switches: expected number"],
      [{ ...good, lastSwitch: { from: "A", to: "B", at: 1 } }, "lastSwitch.reason: is required"],
    ];
    for (const [value, why] of cases) {
      const error = refusal(value);
      expect(error.message).toBe(`agent record for agent-7 is unreadable: ${why}`);
      expect(error.operation).toBe("agents.read");
    }
  });
});

describe("memoryAgentStore", () => {
  it("creates once, updates only at the current revision, and counts the updates", async () => {
    const store = memoryAgentStore();
    expect(await store.read("a")).toBeUndefined();
    const r1 = await store.create("a", good);
    await expect(store.create("a", good)).rejects.toBeInstanceOf(RevisionConflict);
    await expect(store.create("a", good)).rejects.toMatchObject({
      key: "a",
      message: "agent a: record already exists",
    });
    await expect(store.update("missing", good, 1)).rejects.toBeInstanceOf(RevisionConflict);
    await expect(store.update("missing", good, 1)).rejects.toMatchObject({
      key: "missing",
      message: "agent missing: record does not exist",
    });
    const moved = { ...good, current: "B" };
    const r2 = await store.update("a", moved, r1);
    expect(r2).toBeGreaterThan(r1);
    const stale = store.update("a", good, r1);
    await expect(stale).rejects.toBeInstanceOf(RevisionConflict);
    await expect(store.update("a", good, r1)).rejects.toMatchObject({
      key: "a",
      message: `agent a: revision ${r1} is stale (now ${r2})`,
    });
    expect(await store.read("a")).toEqual({ record: moved, revision: r2 });
    expect(store.updates()).toBe(1);
  });

  it("hands out copies: what a caller changes is not what the next one reads", async () => {
    const store = memoryAgentStore();
    const mine = { ...good, skips: [...good.skips] };
    await store.create("a", mine);
    (mine.skips as { target: string; until: number }[]).push({ target: "Z", until: 9 });
    const read = await store.read("a");
    expect(read?.record.skips).toEqual([{ target: "B", until: 5 }]);
    (read!.record.skips as { target: string; until: number }[]).length = 0;
    expect((await store.read("a"))?.record.skips).toHaveLength(1);
  });
});
