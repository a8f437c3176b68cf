/**
 * planSubmit checks a whole submit request before anything is written: each
 * bad field is an InvalidArgument naming it (and the task index), each
 * boundary is on the side the docs promise, and a good request becomes the
 * record and task bodies written out here by hand.
 */
import { describe, expect, it } from "vitest";
import { jobIdFor, maxTasksPerJob, planSubmit, type SubmitRequest } from "../../src/effects/plan-submit.ts";
import { InvalidArgument } from "../../src/kernel/errors.ts";
import { defineQueue } from "../../src/kernel/queue.ts";

const maxPayload = 1024 * 1024;

/** The InvalidArgument a request is refused with. */
const refusal = async (request: unknown, payload = maxPayload): Promise<InvalidArgument> => {
  try {
    await planSubmit(request as SubmitRequest, payload, 0);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidArgument);
    return error as InvalidArgument;
  }
  throw new Error(`accepted: ${JSON.stringify(request)}`);
};

const accepts = (request: Partial<SubmitRequest>, payload = maxPayload) =>
  planSubmit({ queue: "q", tasks: [1], ...request } as SubmitRequest, payload, 0);

describe("planSubmit: a good request", () => {
  it("becomes a queuing, submitting record with the defaults, and one body per task", async () => {
    const plan = await planSubmit({ queue: "images", tasks: [{ url: "a" }, "b", 3] }, maxPayload, 10_000);
    expect(plan.bodies).toEqual(['{"i":0,"p":{"url":"a"}}', '{"i":1,"p":"b"}', '{"i":2,"p":3}']);
    const { record } = plan;
    expect(record).toEqual({
      v: 1,
      id: record.id,
      queue: "images",
      status: "queuing",
      phase: "submitting",
      total: 3,
      submitId: record.submitId,
      settings: {
        maxFailures: 0,
        ackWaitMs: 30_000,
        maxDeliver: 5,
        backoffMs: [1000, 5000, 15_000],
        stallAfterMs: 60_000,
        stalledTimeoutMs: 0,
      },
      counts: { done: 0, failed: 0, dead: 0 },
      createdAt: 10_000,
      updatedAt: 10_000,
      // 30 s plus one ms per 5 tasks, rounded up.
      commitDeadline: 10_000 + 30_000 + 1,
    });
    expect(record.id).toMatch(/^j[0-9a-f]{32}$/);
    expect(record.submitId).toMatch(/^[0-9a-f]{8}$/);
    expect("idempotencyKey" in record).toBe(false);
  });

  it("keeps the settings it is given, and the idempotency key", async () => {
    const { record } = await accepts({
      idempotencyKey: "abc",
      maxFailures: 0.5,
      ackWaitMs: 100,
      maxDeliver: 1,
      backoff: [0],
      stallAfterMs: 1,
      stalledTimeoutMs: 0,
      tasks: new Array(10).fill(0),
    });
    expect(record.settings).toEqual({
      maxFailures: 0.5,
      ackWaitMs: 100,
      maxDeliver: 1,
      backoffMs: [0],
      stallAfterMs: 1,
      stalledTimeoutMs: 0,
    });
    expect(record.idempotencyKey).toBe("abc");
    // "k" + sha256("q\nabc") in base64url, first 32 characters: the key is scoped by its queue.
    expect(record.id).toBe("kyu6Hjbgf-4qTz_z3FwPlBZkO_nvAGmlm");
    expect(record.commitDeadline).toBe(30_000 + 2);
  });

  it("a queue made with defineQueue gives its name, and its schema checks every task", async () => {
    const queue = defineQueue<number>("nums", {
      schema: {
        task: (value: unknown) => {
          if (typeof value !== "number") throw new Error("not a number");
          return value * 10;
        },
      },
    });
    const plan = await planSubmit({ queue, tasks: [1, 2] }, maxPayload, 0);
    expect(plan.record.queue).toBe("nums");
    // The body holds what the schema returned.
    expect(plan.bodies).toEqual(['{"i":0,"p":10}', '{"i":1,"p":20}']);
    const error = await refusal({ queue, tasks: [1, "two"] });
    expect(error.field).toBe("tasks[1]");
    expect(error.message).toBe("tasks[1]: not a number");
  });

  it("lane: the runtime's default unless the request says; only a job that fits goes on it", async () => {
    const lanePlan = (request: Partial<SubmitRequest>, runtimeLane: boolean, laneMaxTasks?: number) =>
      planSubmit(
        { queue: "q", tasks: [1], ...request } as SubmitRequest,
        maxPayload,
        0,
        runtimeLane,
        laneMaxTasks,
      );
    expect((await lanePlan({}, true)).record.lane).toBe(true);
    expect((await lanePlan({}, false)).record.lane).toBeUndefined();
    expect((await lanePlan({ lane: false }, true)).record.lane).toBeUndefined();
    expect((await lanePlan({ lane: true }, false)).record.lane).toBe(true);
    // Up to laneMaxTasks tasks (100 unless the runtime says) fit; more, or a priority, do not.
    const tasks = (n: number) => Array.from({ length: n }, (_, i) => i);
    expect((await lanePlan({ tasks: tasks(100) }, true)).record.lane).toBe(true);
    expect((await lanePlan({ lane: true, tasks: tasks(101) }, true)).record.lane).toBeUndefined();
    expect((await lanePlan({ tasks: [1, 2] }, true, 2)).record.lane).toBe(true);
    expect((await lanePlan({ tasks: [1, 2, 3] }, true, 2)).record.lane).toBeUndefined();
    expect((await lanePlan({ tasks: [1, 2] }, true, 1)).record.lane).toBeUndefined();
    expect((await lanePlan({ lane: true, priority: 3 }, true)).record.lane).toBeUndefined();
    expect((await refusal({ queue: "q", tasks: [1], lane: "yes" })).field).toBe("lane");
  });

  it("jobIdFor: a random id without a key, the same id for the same key on the same queue", () => {
    expect(jobIdFor("q", undefined)).not.toBe(jobIdFor("q", undefined));
    expect(jobIdFor("q", "k")).toBe(jobIdFor("q", "k"));
    expect(jobIdFor("q", "k")).not.toBe(jobIdFor("q", "l"));
    expect(jobIdFor("q", "k")).not.toBe(jobIdFor("r", "k"));
  });
});

describe("planSubmit: what it refuses", () => {
  it("a request that is not an object, or has an unknown key", async () => {
    expect((await refusal(null)).field).toBe("request");
    expect((await refusal("q")).message).toBe("request: must be an object");
    const unknown = await refusal({ queue: "q", tasks: [1], retries: 3 });
    expect(unknown.field).toBe("retries");
  });

  it("a queue name that is not a subject token, or no queue at all", async () => {
    expect((await refusal({ queue: "a.b", tasks: [1] })).field).toBe("queue");
    expect((await refusal({ queue: { name: "a b" }, tasks: [1] })).field).toBe("queue");
    expect((await refusal({ queue: null, tasks: [1] })).field).toBe("queue");
    expect((await refusal({ tasks: [1] })).field).toBe("queue");
  });

  it("a queue object without a schema takes its tasks as they are", async () => {
    const plan = await planSubmit({ queue: defineQueue("plain"), tasks: [{ a: 1 }] }, maxPayload, 0);
    expect(plan.bodies).toEqual(['{"i":0,"p":{"a":1}}']);
  });

  it("exactly a million tasks is not too many: the count passes, and the first task is checked", async () => {
    // A sparse array: its first task is undefined, which is the error expected here, not the count.
    expect(await refusal({ queue: "q", tasks: new Array(maxTasksPerJob) })).toMatchObject({
      field: "tasks[0]",
    });
  });

  it("tasks that are not a non-empty array of at most a million", async () => {
    expect(await refusal({ queue: "q", tasks: "x" })).toMatchObject({
      field: "tasks",
      message: "tasks: must be an array",
    });
    expect(await refusal({ queue: "q", tasks: [] })).toMatchObject({
      field: "tasks",
      message: "tasks: a job needs at least one task",
    });
    expect(await refusal({ queue: "q", tasks: new Array(maxTasksPerJob + 1) })).toMatchObject({
      field: "tasks",
      message: "tasks: at most 1000000 tasks per job",
    });
  });

  it("an idempotency key that is not a string of 1–512 characters", async () => {
    const rule = "(1–512 characters, no control characters)";
    for (const [key, message] of [
      ["", `idempotencyKey: must not be empty ${rule}`],
      ["x".repeat(513), `idempotencyKey: is too long ${rule}`],
      [7, "idempotencyKey: expected string"],
    ] as const) {
      expect(await refusal({ queue: "q", tasks: [1], idempotencyKey: key })).toMatchObject({
        field: "idempotencyKey",
        message,
      });
    }
    await accepts({ idempotencyKey: "x" });
    await accepts({ idempotencyKey: "x".repeat(512) });
  });

  it("maxFailures outside 0..1 (both ends allowed)", async () => {
    for (const maxFailures of [-0.01, 1.01, Number.NaN]) {
      expect(await refusal({ queue: "q", tasks: [1], maxFailures })).toMatchObject({
        field: "maxFailures",
        message: "maxFailures: must be a number between 0 and 1",
      });
    }
    expect(await refusal({ queue: "q", tasks: [1], maxFailures: "0.5" })).toMatchObject({
      field: "maxFailures",
      message: "maxFailures: expected number",
    });
    expect((await accepts({ maxFailures: 0 })).record.settings.maxFailures).toBe(0);
    expect((await accepts({ maxFailures: 1 })).record.settings.maxFailures).toBe(1);
  });

  it("a backoff that is not a non-empty array of delays ≥ 0", async () => {
    const list = "must be a list of 1–100 delays in ms";
    const delay = "must be a number between 0 and 2147483647";
    for (const [backoff, field, message] of [
      [[], "backoff", list],
      [5, "backoff", list],
      [[-1], "backoff[0]", delay],
      [[Number.NaN], "backoff[0]", delay],
      [["5"], "backoff[0]", "expected number"],
      [[10, -1], "backoff[1]", delay],
    ] as const) {
      expect(await refusal({ queue: "q", tasks: [1], backoff })).toMatchObject({
        field,
        message: `${field}: ${message}`,
      });
    }
  });

  it("integer settings below their minimum, fractional or not numbers", async () => {
    const cases: [string, unknown, string][] = [
      ["ackWaitMs", 99, "must be an integer between 100 and 2147483647"],
      ["ackWaitMs", 150.5, "must be an integer between 100 and 2147483647"],
      ["ackWaitMs", "200", "expected number"],
      ["maxDeliver", 0, "must be an integer between 1 and 1000000"],
      ["stallAfterMs", 0, "must be an integer between 1 and 2147483647"],
      ["stalledTimeoutMs", -1, "must be an integer between 0 and 2147483647"],
    ];
    for (const [field, value, message] of cases) {
      expect(await refusal({ queue: "q", tasks: [1], [field]: value })).toMatchObject({
        field,
        message: `${field}: ${message}`,
      });
    }
  });

  it("a task that cannot be serialised, naming its index", async () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const cyclic = await refusal({ queue: "q", tasks: [1, circular] });
    expect(cyclic.field).toBe("tasks[1]");
    expect(cyclic.message).toMatch(/^tasks\[1\]: cannot be serialised to JSON \(.*circular.*\)$/is);

    const big = await refusal({ queue: "q", tasks: [10n] });
    expect(big.message).toMatch(/^tasks\[0\]: cannot be serialised to JSON \(.*BigInt.*\)$/);

    for (const task of [undefined, () => 1]) {
      expect(await refusal({ queue: "q", tasks: [1, 2, task] })).toMatchObject({
        field: "tasks[2]",
        message: "tasks[2]: cannot be serialised to JSON (undefined or a function)",
      });
    }
  });

  it("a task body over the server's max payload less its dead letter's room, counted in bytes", async () => {
    // Body `{"i":0,"p":"…"}` is 14 bytes plus the string; "é" is 2 bytes in UTF-8. A dead
    // letter needs 2078 bytes beside its payload (its submit included): with a max payload of 2122 the limit is 44.
    const exact = "é".repeat(15); // 14 + 30 = 44 bytes: exactly the limit
    expect((await accepts({ tasks: [exact] }, 2122)).bodies[0]).toBe(`{"i":0,"p":"${exact}"}`);
    expect(await refusal({ queue: "q", tasks: [`${exact}x`] }, 2122)).toMatchObject({
      field: "tasks[0]",
      message: "tasks[0]: is 45 bytes; the server's max payload allows 44",
    });
  });
});
