/**
 * The idempotency helpers of planSubmit: the legacy job id, which records an
 * older jetstate wrote still count as the key's job, the request digest and
 * when two submits of one key conflict. Hashes are written out here, worked
 * out once with node:crypto on the literal input, not with the code tested.
 */
import { describe, expect, it } from "vitest";
import {
  assertSameRequest,
  isLegacyJobFor,
  legacyJobIdFor,
  planSubmit,
  requestDigest,
  type SubmitRequest,
} from "../../src/effects/plan-submit.ts";
import { IdempotencyConflict, InvalidArgument } from "../../src/kernel/errors.ts";
import { record, settings } from "./fake-job-port.ts";

const refusal = async (request: unknown): Promise<InvalidArgument> => {
  try {
    await planSubmit(request as SubmitRequest, 1024 * 1024, 0);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidArgument);
    return error as InvalidArgument;
  }
  throw new Error(`accepted: ${JSON.stringify(request)}`);
};

describe("planSubmit: backoff list and queue", () => {
  it("takes 100 backoff delays, refuses 101", async () => {
    const plan = await planSubmit(
      { queue: "q", tasks: [1], backoff: new Array(100).fill(7) },
      1024 * 1024,
      0,
    );
    expect(plan.record.settings.backoffMs).toHaveLength(100);
    const error = await refusal({ queue: "q", tasks: [1], backoff: new Array(101).fill(7) });
    expect(error.message).toBe("backoff: must be a list of 1–100 delays in ms");
  });

  it("refuses a queue that is neither a name nor a queue, saying so", async () => {
    const error = await refusal({ queue: 5, tasks: [1] });
    expect(error.message).toBe("queue: must be a queue name or a queue made with defineQueue");
  });
});

describe("legacyJobIdFor", () => {
  it("is k and the first 32 characters of the key's sha256 in base64url, the queue left out", () => {
    expect(legacyJobIdFor("order-42")).toBe("kO_ixV8Qjju_lrkpm7Kgca4h9Tc7bWN1n");
  });
});

describe("isLegacyJobFor", () => {
  const wanted = record({ queue: "q", idempotencyKey: "order-42", requestDigest: "v1:new" });
  const legacy = record({
    queue: "q",
    idempotencyKey: "order-42",
    phase: "committed",
    requestDigest: undefined,
  });

  it("is true for a committed record without a digest, of the same queue and key", () => {
    expect(isLegacyJobFor(legacy, wanted)).toBe(true);
  });

  it("is false when any one of those differs", () => {
    expect(isLegacyJobFor(undefined, wanted)).toBe(false);
    expect(isLegacyJobFor({ ...legacy, requestDigest: "v1:old" }, wanted)).toBe(false);
    expect(isLegacyJobFor({ ...legacy, phase: "submitting" }, wanted)).toBe(false);
    expect(isLegacyJobFor({ ...legacy, phase: "rolledBack" }, wanted)).toBe(false);
    expect(isLegacyJobFor({ ...legacy, queue: "other" }, wanted)).toBe(false);
    expect(isLegacyJobFor({ ...legacy, idempotencyKey: "order-43" }, wanted)).toBe(false);
    // Neither has a key: a record with no key is no key's job.
    expect(
      isLegacyJobFor({ ...legacy, idempotencyKey: undefined }, { ...wanted, idempotencyKey: undefined }),
    ).toBe(false);
  });
});

describe("requestDigest", () => {
  it("is v1: and the sha256 of the settings' JSON and each body after a newline", () => {
    expect(requestDigest(settings, ["a", "b"])).toBe("v1:uUFphv0ZABCQmff0NFUBbGwL4zxaK4Kr_HidtONsR-U");
  });

  it("tells bodies split differently apart", () => {
    expect(requestDigest(settings, ["ab"])).not.toBe(requestDigest(settings, ["a", "b"]));
  });
});

describe("assertSameRequest", () => {
  const wanted = record({ id: "k1", queue: "q", idempotencyKey: "order-42", requestDigest: "v1:new" });
  const found = record({
    id: "k1",
    queue: "q",
    idempotencyKey: "order-42",
    phase: "committed",
    requestDigest: "v1:old",
  });

  it("throws IdempotencyConflict naming the key, the job and its queue when the digests differ", () => {
    let thrown: unknown;
    try {
      assertSameRequest(found, wanted);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(IdempotencyConflict);
    expect(thrown).toMatchObject({
      message:
        'idempotencyKey: "order-42" already names job k1 of queue q, submitted with other tasks or settings',
      idempotencyKey: "order-42",
      queue: "q",
      jobId: "k1",
    });
  });

  it("names an empty key when the wanted record has none", () => {
    expect(() => assertSameRequest(found, { ...wanted, idempotencyKey: undefined })).toThrow(
      expect.objectContaining({
        idempotencyKey: "",
        message: expect.stringContaining("idempotencyKey: undefined"),
      }),
    );
  });

  it("does not apply to no record, a rolled-back one, one without a digest, or the same digest", () => {
    expect(() => assertSameRequest(undefined, wanted)).not.toThrow();
    expect(() => assertSameRequest({ ...found, phase: "rolledBack" }, wanted)).not.toThrow();
    expect(() => assertSameRequest({ ...found, phase: "submitting" }, wanted)).toThrow(IdempotencyConflict);
    expect(() => assertSameRequest({ ...found, requestDigest: undefined }, wanted)).not.toThrow();
    expect(() => assertSameRequest({ ...found, requestDigest: "v1:new" }, wanted)).not.toThrow();
  });
});

describe("planSubmit: a lane job of several tasks names its submit in each task", () => {
  const request = { queue: "q", tasks: [{ n: 1 }, { n: 2 }], idempotencyKey: "order-7" };

  it("each task says its submit's id; two submits of one request keep one digest (a resubmit is the same request)", async () => {
    const a = await planSubmit(request, 1024 * 1024, 0, true);
    const b = await planSubmit(request, 1024 * 1024, 0, true);
    expect(a.record).toMatchObject({ lane: true, total: 2 });
    expect(a.record.submitId).not.toBe(b.record.submitId);
    expect(a.bodies).toEqual([
      `{"i":0,"s":"${a.record.submitId}","p":{"n":1}}`,
      `{"i":1,"s":"${a.record.submitId}","p":{"n":2}}`,
    ]);
    expect(b.record.requestDigest).toBe(a.record.requestDigest);
    // The digest is the one of the request's plain task messages, as before tasks named their submit.
    expect(a.record.requestDigest).toBe(
      requestDigest(a.record.settings, ['{"i":0,"p":{"n":1}}', '{"i":1,"p":{"n":2}}']),
    );
    expect(() => assertSameRequest(a.record, b.record)).not.toThrow();
  });

  it("a 1-task lane job's task names its submit; a job off the lane writes its tasks as before", async () => {
    const lane = await planSubmit({ queue: "q", tasks: [5] }, 1024 * 1024, 0, true);
    expect(lane.bodies).toEqual([`{"i":0,"s":"${lane.record.submitId}","p":5}`]);
    expect((await planSubmit(request, 1024 * 1024, 0, false)).bodies).toEqual([
      '{"i":0,"p":{"n":1}}',
      '{"i":1,"p":{"n":2}}',
    ]);
  });
});
