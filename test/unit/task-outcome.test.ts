import { describe, expect, it } from "vitest";
import { TargetUnavailable } from "../../src/kernel/errors.ts";
import { decideOutcome, type OutcomeContext, PermanentError } from "../../src/kernel/task-outcome.ts";

const context = (over: Partial<OutcomeContext> = {}): OutcomeContext => ({
  attempt: 1,
  maxDeliver: 5,
  backoffMs: [1000, 5000],
  ...over,
});

const down = (agentId = "detector") => new TargetUnavailable({ agentId, target: "A", message: "A is down" });

describe("decideOutcome", () => {
  it("maps success, permanent, transient and last-delivery errors", () => {
    expect(decideOutcome(undefined, context())).toEqual({ kind: "ack" });
    expect(decideOutcome(new PermanentError("gone"), context())).toEqual({ kind: "term", error: "gone" });
    expect(decideOutcome(new Error("blip"), context({ attempt: 2 }))).toEqual({
      kind: "nak",
      delayMs: 5000,
      error: "blip",
    });
    expect(decideOutcome(new Error("blip"), context({ attempt: 5 }))).toEqual({
      kind: "dead",
      error: "blip (after 5 deliveries)",
    });
  });

  it("a bound agent's TargetUnavailable fails over, carrying the backoff for when the agent cannot move", () => {
    expect(decideOutcome(down(), context({ agentId: "detector" }))).toEqual({
      kind: "failover",
      agentId: "detector",
      delayMs: 1000,
      error: "A is down",
    });
  });

  it("without the binding, or naming another agent, TargetUnavailable is an ordinary transient error", () => {
    expect(decideOutcome(down(), context())).toMatchObject({ kind: "nak", delayMs: 1000 });
    expect(decideOutcome(down("other"), context({ agentId: "detector" }))).toMatchObject({ kind: "nak" });
  });

  it("the last delivery is dead even for a failover, and isPermanent still wins", () => {
    expect(decideOutcome(down(), context({ agentId: "detector", attempt: 5 }))).toMatchObject({
      kind: "dead",
    });
    expect(
      decideOutcome(
        down(),
        context({ agentId: "detector", isPermanent: (e) => e instanceof TargetUnavailable }),
      ),
    ).toMatchObject({ kind: "term" });
  });

  it("an isPermanent that throws says nothing (retried), and an error that cannot be made text is named by its kind", () => {
    const throwing = (error: unknown) => (error as { response: { status: number } }).response.status === 404;
    expect(decideOutcome(new Error("blip"), context({ isPermanent: throwing }))).toEqual({
      kind: "nak",
      delayMs: 1000,
      error: "blip",
    });
    expect(decideOutcome(Object.create(null), context())).toMatchObject({
      kind: "nak",
      error: "[object Object]",
    });
    const noText = {
      toString: () => {
        throw new Error("no text");
      },
    };
    expect(decideOutcome(noText, context({ attempt: 5 }))).toMatchObject({
      kind: "dead",
      error: "[object Object] (after 5 deliveries)",
    });
  });
});
