/**
 * decideOutcome at its edges: which backoff delay an attempt gets (the last
 * one repeats, none at all means 0), what counts as permanent (the error's
 * own `retry`, whatever its class; the worker's predicate), how errors that
 * are not Errors are worded, and deliveries past maxDeliver.
 */
import { describe, expect, it } from "vitest";
import { TargetUnavailable } from "../../src/kernel/errors.ts";
import { decideOutcome, type OutcomeContext, PermanentError } from "../../src/kernel/task-outcome.ts";

const context = (over: Partial<OutcomeContext> = {}): OutcomeContext => ({
  attempt: 1,
  maxDeliver: 10,
  backoffMs: [100, 200, 300],
  ...over,
});

describe("decideOutcome edges", () => {
  it("attempt n waits backoffMs[n-1]; past the end of the list the last delay repeats", () => {
    const delays = [1, 2, 3, 4, 9].map((attempt) => decideOutcome(new Error("x"), context({ attempt })));
    expect(delays.map((o) => (o.kind === "nak" ? o.delayMs : o.kind))).toEqual([100, 200, 300, 300, 300]);
  });

  it("an empty backoff list means no delay, for a nak and a failover", () => {
    expect(decideOutcome(new Error("x"), context({ backoffMs: [] }))).toEqual({
      kind: "nak",
      delayMs: 0,
      error: "x",
    });
    const down = new TargetUnavailable({ agentId: "a", target: "t", message: "t down" });
    expect(decideOutcome(down, context({ backoffMs: [], agentId: "a", attempt: 3 }))).toEqual({
      kind: "failover",
      agentId: "a",
      delayMs: 0,
      error: "t down",
    });
  });

  it("any error whose retry says permanent is termed, not only PermanentError", () => {
    const plain = Object.assign(new Error("bad input"), { retry: "permanent" });
    expect(decideOutcome(plain, context())).toEqual({ kind: "term", error: "bad input" });
    expect(decideOutcome({ retry: "transient", message: "m" }, context())).toMatchObject({ kind: "nak" });
    const permanent = new PermanentError("no");
    expect(permanent.name).toBe("PermanentError");
    expect(permanent).toBeInstanceOf(Error);
  });

  it("the worker's isPermanent decides for errors without a retry field, and false means retry", () => {
    const isPermanent = (e: unknown) => e instanceof RangeError;
    expect(decideOutcome(new RangeError("r"), context({ isPermanent }))).toEqual({
      kind: "term",
      error: "r",
    });
    expect(decideOutcome(new Error("e"), context({ isPermanent }))).toMatchObject({ kind: "nak" });
  });

  it("a thrown value that is not an Error is stated as text, null included", () => {
    expect(decideOutcome("oops", context())).toEqual({ kind: "nak", delayMs: 100, error: "oops" });
    expect(decideOutcome(null, context())).toEqual({ kind: "nak", delayMs: 100, error: "null" });
    expect(decideOutcome(42, context({ attempt: 10 }))).toEqual({
      kind: "dead",
      error: "42 (after 10 deliveries)",
    });
  });

  it("a delivery past maxDeliver is dead too; the one before it is not", () => {
    expect(decideOutcome(new Error("x"), context({ attempt: 11 }))).toMatchObject({ kind: "dead" });
    expect(decideOutcome(new Error("x"), context({ attempt: 9 }))).toMatchObject({ kind: "nak" });
  });

  it("a TargetUnavailable-shaped value counts by its tag; null and other tags do not fail over", () => {
    const tagged = { _tag: "TargetUnavailable", agentId: "a", message: "m" };
    expect(decideOutcome(tagged, context({ agentId: "a" }))).toMatchObject({
      kind: "failover",
      agentId: "a",
    });
    expect(decideOutcome({ _tag: "Other", agentId: "a" }, context({ agentId: "a" }))).toMatchObject({
      kind: "nak",
    });
    expect(decideOutcome(null, context({ agentId: "a" }))).toMatchObject({ kind: "nak" });
  });

  it("a worker bound to no agent never fails over, even for a tagged value naming none", () => {
    expect(decideOutcome({ _tag: "TargetUnavailable" }, context())).toMatchObject({ kind: "nak" });
  });
});
