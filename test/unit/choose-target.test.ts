/**
 * The switch decision as pure functions of a record read under the lock:
 * which targets are eligible, which one is chosen, what the next record
 * holds, and how a reported error is shortened for storage. Every expected
 * record is written out by hand.
 */
import { describe, expect, it } from "vitest";
import type { AgentRecord } from "../../src/kernel/agent-record.ts";
import {
  activeSkips,
  chooseTarget,
  decide,
  describeFailure,
  eligibleTargets,
  isStale,
} from "../../src/kernel/choose-target.ts";

const base: AgentRecord = { v: 1, current: "A", skips: [], switches: 0 };

describe("eligible targets and the choice", () => {
  it("a skip is in force until its `until`, exclusive", () => {
    const skips = [
      { target: "B", until: 100 },
      { target: "C", until: 101 },
    ];
    expect(activeSkips(skips, 100)).toEqual([{ target: "C", until: 101 }]);
    expect(eligibleTargets(["A", "B", "C", "D"], { ...base, skips }, 100)).toEqual(["B", "D"]);
    expect(eligibleTargets(["A", "B", "C", "D"], { ...base, skips }, 99)).toEqual(["D"]);
  });

  it("the least loaded wins, ties go to the earlier, unusable loads never win", () => {
    const loads = new Map<string, number | undefined>([
      ["B", 5],
      ["C", 2],
      ["D", 2],
      ["E", Number.NaN],
      ["F", Number.NEGATIVE_INFINITY],
      ["G", undefined],
    ]);
    expect(chooseTarget(["B", "C", "D"], loads)).toBe("C");
    expect(chooseTarget(["D", "C"], loads)).toBe("D");
    expect(chooseTarget(["E", "F", "G", "H", "B"], loads)).toBe("B");
    expect(chooseTarget(["E", "F", "G"], loads)).toBeUndefined();
    expect(chooseTarget([], loads)).toBeUndefined();
    expect(chooseTarget(["B", "Z"], new Map([["Z", 0]]))).toBe("Z");
  });

  it("a failure is stale when the record already moved off its target", () => {
    expect(isStale(base, { target: "A", reason: "" })).toBe(false);
    expect(isStale(base, { target: "B", reason: "" })).toBe(true);
  });
});

describe("decide", () => {
  const input = {
    record: base,
    revision: 4,
    failure: { target: "A", reason: "429" },
    targets: ["A", "B", "C"],
    loads: new Map([
      ["B", 3],
      ["C", 1],
    ]),
    now: 1000,
    skipForMs: 500,
  };

  it("switches to the least-loaded target, skipping the failed one for skipForMs", () => {
    const record: AgentRecord = {
      ...base,
      skips: [
        { target: "A", until: 900 }, // expired: dropped
        { target: "B", until: 2000 }, // still in force: kept
      ],
      switches: 2,
      exhausted: { target: "A", at: 10 },
    };
    expect(decide({ ...input, record, targets: ["A", "B", "C"] })).toEqual({
      kind: "switch",
      from: "A",
      to: "C",
      record,
      revision: 4,
      next: {
        v: 1,
        current: "C",
        skips: [
          { target: "B", until: 2000 },
          { target: "A", until: 1500 },
        ],
        switches: 3,
        lastSwitch: { from: "A", to: "C", at: 1000, reason: "429" },
      },
    });
  });

  it("an older skip of the failed target is replaced, not kept twice", () => {
    const record: AgentRecord = { ...base, skips: [{ target: "A", until: 5000 }] };
    const decision = decide({ ...input, record });
    expect(decision.kind === "switch" && decision.next.skips).toEqual([{ target: "A", until: 1500 }]);
  });

  it("stale: nothing to write", () => {
    expect(decide({ ...input, failure: { target: "B", reason: "x" } })).toEqual({
      kind: "stale",
      record: base,
      revision: 4,
    });
  });

  it("exhausted: the first failure of a spell is written once, with expired skips dropped", () => {
    const record: AgentRecord = { ...base, skips: [{ target: "Q", until: 10 }] };
    const first = decide({ ...input, record, targets: ["A"] });
    expect(first).toEqual({
      kind: "exhausted",
      record,
      revision: 4,
      next: { ...record, skips: [], exhausted: { target: "A", at: 1000 } },
    });
    const recorded: AgentRecord = { ...base, exhausted: { target: "A", at: 900 } };
    expect(decide({ ...input, record: recorded, targets: ["A", "B"], loads: new Map() })).toEqual({
      kind: "exhausted",
      record: recorded,
      revision: 4,
      next: undefined,
    });
  });
});

describe("describeFailure", () => {
  it("takes an Error's message, or its name when the message is empty", () => {
    expect(describeFailure(new Error("upstream 503"))).toBe("upstream 503");
    expect(describeFailure(new TypeError(""))).toBe("TypeError");
  });

  it("takes a string as it is, an object's message, and anything else as text", () => {
    expect(describeFailure("quota")).toBe("quota");
    expect(describeFailure({ message: 429 })).toBe("429");
    expect(describeFailure({ code: 1 })).toBe("[object Object]");
    expect(describeFailure(null)).toBe("null");
    expect(describeFailure(undefined)).toBe("undefined");
  });

  it("keeps 200 characters, and cuts longer text to 197 plus an ellipsis", () => {
    expect(describeFailure("x".repeat(200))).toBe("x".repeat(200));
    expect(describeFailure(`${"y".repeat(197)}abcd`)).toBe(`${"y".repeat(197)}...`);
  });
});
