import { describe, expect, it } from "vitest";
import { jobMachine } from "../../src/machines/job.machine.ts";
import { isRecordedValue, jobStatusOf } from "../../src/machines/job-state.ts";

/**
 * `jobStatusOf` and `isRecordedValue` read a job's state value by hand (XState's `matches`
 * builds a state value on every call). The oracle is XState's own `matches`, on every state
 * value the chart has: each top state, with each of its children.
 */
const everyValue = (): unknown[] =>
  Object.entries(jobMachine.root.states).flatMap(([top, node]): unknown[] => {
    const children = Object.keys(node.states);
    return children.length === 0 ? [top] : children.map((child) => ({ [top]: child }));
  });

describe("jobStatusOf, isRecordedValue", () => {
  const values = everyValue();

  it("cover every state of the chart (eight)", () => {
    expect(values).toHaveLength(8);
  });

  it.each(values.map((value) => [JSON.stringify(value), value]))("%s as XState matches it", (_, value) => {
    const snapshot = jobMachine.resolveState({ value: value as never, context: {} as never });
    const tops = Object.keys(jobMachine.root.states).filter((top) => snapshot.matches(top as never));
    expect(tops).toHaveLength(1);
    expect(jobStatusOf(snapshot.value)).toBe(tops[0]);
    const recorded = snapshot.matches({ succeeded: "recorded" }) || snapshot.matches({ failed: "recorded" });
    expect(isRecordedValue(snapshot.value)).toBe(recorded);
  });
});
