/**
 * What a delayed submit asks for, checked by planSubmit before anything is
 * written: each task's due time, which tasks are held, the record's `runAt`
 * and `dueUntil`, the error naming the field of a bad time, and the
 * idempotency digest that includes the times as asked.
 */
import { describe, expect, it } from "vitest";
import { assertSameRequest, planSubmit, type SubmitRequest } from "../../src/effects/plan-submit.ts";
import { IdempotencyConflict, InvalidArgument } from "../../src/kernel/errors.ts";
import { maxDelayMs, stallClockFrom } from "../../src/kernel/held-task.ts";
import { decodeTask } from "../../src/kernel/wire.ts";

const now = 1_800_000_000_000;
const plan = (request: Partial<SubmitRequest>, lane = false) =>
  planSubmit({ queue: "q", tasks: [1, 2, 3], ...request } as SubmitRequest, 1024 * 1024, now, lane);

const refusal = async (request: Record<string, unknown>): Promise<InvalidArgument> => {
  try {
    await plan(request);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidArgument);
    return error as InvalidArgument;
  }
  throw new Error(`accepted: ${JSON.stringify(request)}`);
};

describe("planSubmit: delayed tasks", () => {
  it("holds every task of a job with delayMs, due now + delayMs", async () => {
    const { record, bodies, held } = await plan({ delayMs: 5000 });
    expect(bodies).toEqual([]);
    expect(held.map((h) => h.dueAt)).toEqual([now + 5000, now + 5000, now + 5000]);
    expect(held.map((h) => decodeTask(h.body).index)).toEqual([0, 1, 2]);
    expect(held.map((h) => h.msgId)).toEqual([0, 1, 2].map((n) => `${record.id}.${record.submitId}.d${n}`));
    expect(record).toMatchObject({ runAt: now + 5000, dueUntil: now + 5000, total: 3 });
  });

  it("takes runAt as a Date or ms since epoch; a time past runs now, unheld", async () => {
    expect((await plan({ runAt: new Date(now + 10) })).held).toHaveLength(3);
    expect((await plan({ runAt: now + 10 })).record.runAt).toBe(now + 10);
    const past = await plan({ runAt: now - 60_000 });
    expect(past.held).toEqual([]);
    expect(past.bodies).toHaveLength(3);
    expect(past.record.runAt).toBeUndefined();
  });

  it("per task: taskRunAt beside tasks, null for the job's time; only tasks due later are held", async () => {
    const { record, bodies, held } = await plan({
      delayMs: 1000,
      taskRunAt: [now + 3000, null, now - 1],
    });
    expect(bodies.map((b) => decodeTask(b).index)).toEqual([2]);
    expect(held.map((h) => [decodeTask(h.body).index, h.dueAt])).toEqual([
      [0, now + 3000],
      [1, now + 1000],
    ]);
    expect(record).toMatchObject({ runAt: now + 1000, dueUntil: now + 3000 });
  });

  it("a payload shaped { payload, runAt } is a payload, not a time", async () => {
    const { bodies, held } = await planSubmit(
      { queue: "q", tasks: [{ payload: 1, runAt: now + 10_000 }] },
      1024 * 1024,
      now,
    );
    expect(held).toEqual([]);
    expect(decodeTask(bodies[0] ?? "").payload).toEqual({ payload: 1, runAt: now + 10_000 });
  });

  it("a delayed job of one task is not on the lane; an undelayed one is", async () => {
    expect(
      (await planSubmit({ queue: "q", tasks: [1], delayMs: 100 }, 1024 * 1024, now, true)).record.lane,
    ).toBe(undefined);
    expect(
      (await planSubmit({ queue: "q", tasks: [1], delayMs: 0 }, 1024 * 1024, now, true)).record.lane,
    ).toBe(true);
  });

  it.each([
    [{ delayMs: Number.NaN }, "delayMs"],
    [{ delayMs: -1 }, "delayMs"],
    [{ delayMs: maxDelayMs + 1 }, "delayMs"],
    [{ delayMs: "5s" }, "delayMs"],
    [{ runAt: new Date("not a date") }, "runAt"],
    [{ runAt: Number.NaN }, "runAt"],
    [{ runAt: -5 }, "runAt"],
    [{ runAt: now + maxDelayMs + 1 }, "runAt"],
    [{ runAt: "tomorrow" }, "runAt"],
    [{ runAt: now + 1, delayMs: 1 }, "runAt"],
    [{ taskRunAt: [now] }, "taskRunAt"],
    [{ taskRunAt: "soon" }, "taskRunAt"],
    [{ taskRunAt: [now, now, Number.POSITIVE_INFINITY] }, "taskRunAt[2]"],
    [{ taskRunAt: [now, new Date(Number.NaN), now] }, "taskRunAt[1]"],
  ])("refuses %o, naming %s", async (request, field) => {
    expect((await refusal(request)).field).toBe(field);
  });

  it("the idempotency digest includes the times as asked, not the clock", async () => {
    const a = await plan({ idempotencyKey: "k", delayMs: 1000 });
    const again = await planSubmit(
      { queue: "q", tasks: [1, 2, 3], idempotencyKey: "k", delayMs: 1000 },
      1024 * 1024,
      now + 777,
    );
    expect(again.record.requestDigest).toBe(a.record.requestDigest);
    const other = await plan({ idempotencyKey: "k", delayMs: 2000 });
    const none = await plan({ idempotencyKey: "k" });
    expect(other.record.requestDigest).not.toBe(a.record.requestDigest);
    expect(() => assertSameRequest(a.record, other.record)).toThrow(IdempotencyConflict);
    expect(() => assertSameRequest(a.record, none.record)).toThrow(IdempotencyConflict);
    const perTask = await plan({ idempotencyKey: "k", taskRunAt: [now + 1, null, null] });
    expect(() => assertSameRequest(a.record, perTask.record)).toThrow(IdempotencyConflict);
  });
});

describe("the stall clock of a delayed job", () => {
  it("is held at now until the last due time, then starts from it (or from later progress)", () => {
    expect(stallClockFrom(100, undefined, 5000)).toBe(100);
    expect(stallClockFrom(100, 9000, 5000)).toBe(5000);
    expect(stallClockFrom(100, 9000, 20_000)).toBe(9000);
    expect(stallClockFrom(12_000, 9000, 20_000)).toBe(12_000);
  });
});
