import { describe, expect, it } from "vitest";
import { type AnswerContext, answerTask, type Delivery, planAnswer } from "../../src/effects/answer-task.ts";
import { decodeResults, encodeDone } from "../../src/kernel/result-wire.ts";
import { PermanentError } from "../../src/kernel/task-outcome.ts";

const context = (over: Partial<AnswerContext> = {}): AnswerContext => ({
  attempt: 1,
  maxDeliver: 3,
  backoffMs: [100, 500],
  maxBatchBytes: 1024,
  ...over,
});

describe("planAnswer", () => {
  it("a result that fits is acked with its entry as given", () => {
    const entry = encodeDone(4, { ok: "yes" });
    expect(planAnswer(4, { ok: true, entry }, context())).toEqual({ outcome: { kind: "ack" }, entry });
  });

  it("a result too large for a results message alone fails for good", () => {
    const entry = encodeDone(4, "x".repeat(2000));
    const plan = planAnswer(4, { ok: true, entry }, context({ attempt: 3 }));
    expect(plan.outcome).toEqual({
      kind: "term",
      error: `result of task 4 is too large for a results message (${entry.length} bytes; at most 1022)`,
    });
    expect(decodeResults(`[${plan.entry}]`)).toEqual([
      { i: 4, ok: false, e: plan.outcome.kind === "term" && plan.outcome.error },
    ]);
  });

  it("errors: permanent → failed entry, transient → retry without entry, last delivery → dead entry", () => {
    const term = planAnswer(1, { ok: false, error: new PermanentError("bad input") }, context());
    expect(term.outcome).toEqual({ kind: "term", error: "bad input" });
    expect(term.entry).toBe('{"i":1,"ok":false,"e":"bad input"}');
    const retry = planAnswer(1, { ok: false, error: new Error("busy") }, context({ attempt: 2 }));
    expect(retry).toEqual({ outcome: { kind: "nak", delayMs: 500, error: "busy" }, entry: undefined });
    const dead = planAnswer(1, { ok: false, error: new Error("busy") }, context({ attempt: 3 }));
    expect(dead.entry).toBe('{"i":1,"ok":false,"e":"busy (after 3 deliveries)","dead":true}');
  });

  it("`throw undefined` is a failure, not an answer without a result", () => {
    expect(planAnswer(0, { ok: false, error: undefined }, context()).outcome).toEqual({
      kind: "nak",
      delayMs: 100,
      error: "undefined",
    });
  });
});

/** A delivery and a batcher that write down what happens, in order. */
const recorder = () => {
  const calls: string[] = [];
  const delivery: Delivery = {
    stored: () => calls.push("stored"),
    lost: () => calls.push("lost"),
    retry: (delayMs) => calls.push(`retry ${delayMs}`),
    deadLetterLost: (error) => calls.push(`dead letter lost: ${(error as Error).message}`),
  };
  const results = { add: (jobId: string, entry: string) => void calls.push(`add ${jobId} ${entry}`) };
  return { calls, delivery, results };
};

describe("answerTask", () => {
  it("a dead task's letter is stored before its entry goes to a results message", async () => {
    const { calls, delivery, results } = recorder();
    const plan = planAnswer(2, { ok: false, error: new Error("busy") }, context({ attempt: 3 }));
    await answerTask("j", plan, delivery, results, async (error) => {
      calls.push(`dead letter: ${error}`);
    });
    expect(calls).toEqual([
      "dead letter: busy (after 3 deliveries)",
      'add j {"i":2,"ok":false,"e":"busy (after 3 deliveries)","dead":true}',
    ]);
  });

  it("a dead task's entry names its letter by the sequence the store answered", async () => {
    const { calls, delivery, results } = recorder();
    const plan = planAnswer(2, { ok: false, error: new Error("busy") }, context({ attempt: 3 }));
    await answerTask("j", plan, delivery, results, async () => 42);
    expect(calls).toEqual(['add j {"i":2,"ok":false,"e":"busy (after 3 deliveries)","dead":true,"l":42}']);
  });

  it("a dead letter not stored leaves the task unanswered: no entry", async () => {
    const { calls, delivery, results } = recorder();
    const plan = planAnswer(2, { ok: false, error: new Error("busy") }, context({ attempt: 3 }));
    await answerTask("j", plan, delivery, results, () => Promise.reject(new Error("store down")));
    expect(calls).toEqual(["dead letter lost: store down"]);
  });

  it("a retry is released after its backoff, nothing stored", async () => {
    const { calls, delivery, results } = recorder();
    const plan = planAnswer(2, { ok: false, error: new Error("busy") }, context());
    await answerTask("j", plan, delivery, results, () => Promise.reject(new Error("not called")));
    expect(calls).toEqual(["retry 100"]);
  });

  it("a result goes to the batcher; the delivery is settled by it", async () => {
    const { calls, delivery, results } = recorder();
    const plan = planAnswer(0, { ok: true, entry: encodeDone(0, 42) }, context());
    await answerTask("j", plan, delivery, results, () => Promise.reject(new Error("not called")));
    expect(calls).toEqual(['add j {"i":0,"ok":true,"r":42}']);
  });
});
