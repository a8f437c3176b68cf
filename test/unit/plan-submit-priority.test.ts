/**
 * `submit({ priority })` as planSubmit checks and stores it: an integer in
 * [−100, 100] (anything else an InvalidArgument naming `priority`, nothing
 * planned), stored in the settings only when not 0 (so a priority-0 job's
 * record and request digest are what they were before priorities), part of
 * the idempotency digest, and never on the lane.
 */
import { describe, expect, it } from "vitest";
import { assertSameRequest, planSubmit, type SubmitRequest } from "../../src/effects/plan-submit.ts";
import { IdempotencyConflict, InvalidArgument } from "../../src/kernel/errors.ts";
import { decodeRecord, encodeRecord } from "../../src/kernel/job-record-codec.ts";

const plan = (request: Record<string, unknown>, lane = false) =>
  planSubmit({ queue: "q", tasks: [1], ...request } as SubmitRequest, 1024 * 1024, 0, lane);

describe("planSubmit: priority", () => {
  it.each([1.5, 101, -101, "10", Number.NaN, Number.POSITIVE_INFINITY, null])(
    "refuses %s, naming the field",
    async (priority) => {
      const error = await plan({ priority }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidArgument);
      expect((error as InvalidArgument).field).toBe("priority");
      expect((error as InvalidArgument).message).toMatch(
        typeof priority === "number" ? "priority: must be an integer between -100 and 100" : /^priority: /,
      );
    },
  );

  it("stores a priority that is not 0 in the settings, and reads it back", async () => {
    for (const priority of [-100, -1, 1, 10, 100]) {
      const { record } = await plan({ priority });
      expect(record.settings.priority).toBe(priority);
      expect(decodeRecord(encodeRecord(record)).settings.priority).toBe(priority);
    }
  });

  it("leaves priority 0 out, as records before priorities: the same digest as no priority", async () => {
    const none = await plan({ idempotencyKey: "k" });
    const zero = await plan({ idempotencyKey: "k", priority: 0 });
    expect("priority" in zero.record.settings).toBe(false);
    expect(zero.record.requestDigest).toBe(none.record.requestDigest);
    expect(() => assertSameRequest({ ...none.record, phase: "committed" }, zero.record)).not.toThrow();
  });

  it("makes another priority under the same key a conflict", async () => {
    const low = await plan({ idempotencyKey: "k" });
    const high = await plan({ idempotencyKey: "k", priority: 10 });
    expect(high.record.requestDigest).not.toBe(low.record.requestDigest);
    expect(() => assertSameRequest({ ...low.record, phase: "committed" }, high.record)).toThrow(
      IdempotencyConflict,
    );
  });

  it("puts a 1-task job on the lane only at priority 0", async () => {
    expect((await plan({}, true)).record.lane).toBe(true);
    expect((await plan({ priority: 0 }, true)).record.lane).toBe(true);
    expect((await plan({ priority: 10 }, true)).record.lane).toBeUndefined();
    expect((await plan({ priority: -3 }, true)).record.lane).toBeUndefined();
  });
});
