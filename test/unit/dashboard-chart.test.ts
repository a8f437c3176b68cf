/**
 * What the dashboard draws and who may act: the job machine's chart as the
 * page gets it (compared with a transcription of job.machine.ts made by
 * hand, not with XState's view of itself), and the token roles (`operate`
 * includes `read`; nothing else includes anything).
 */

import { describe, expect, it } from "vitest";
import { chartOf } from "../../src/adapters/http/dashboard-chart.ts";
import { parseScope, roleGrants } from "../../src/adapters/http/token-scopes.ts";
import { jobMachine } from "../../src/machines/job.machine.ts";

describe("the job machine's chart", () => {
  const chart = chartOf(jobMachine.root);
  const edges = new Set(chart.edges.map((e) => `${e.source} -[${e.event}]-> ${e.target}`));

  it("has the machine's states nested as in job.machine.ts", () => {
    const shape = (n: typeof chart.root): unknown =>
      n.children.length === 0 ? n.key : { [n.key]: n.children.map(shape) };
    expect(shape(chart.root)).toEqual({
      job: [
        { queuing: ["checking", "submitting"] },
        "running",
        "stalled",
        { succeeded: ["recording", "recorded"] },
        { failed: ["recording", "recorded"] },
      ],
    });
    expect(chart.root.initial).toBe("job.queuing");
  });

  it("has every transition that changes state, and none that does not", () => {
    expect([...edges].sort()).toEqual(
      [
        "job -[record.changed]-> job.succeeded.recorded",
        "job -[record.changed]-> job.failed.recorded",
        "job.queuing -[job.cancel]-> job.failed",
        "job.queuing.checking -[always]-> job.running",
        "job.queuing.checking -[always]-> job.stalled",
        "job.queuing.checking -[always]-> job.succeeded.recorded",
        "job.queuing.checking -[always]-> job.failed.recorded",
        "job.queuing.checking -[always]-> job.queuing.submitting",
        "job.queuing.submitting -[submit.committed]-> job.running",
        "job.queuing.submitting -[submit.failed]-> job.failed",
        "job.running -[clock.tick]-> job.stalled",
        "job.running -[job.cancel]-> job.failed",
        "job.running -[always]-> job.succeeded",
        "job.running -[always]-> job.failed",
        "job.stalled -[clock.tick]-> job.failed",
        "job.stalled -[job.cancel]-> job.failed",
        "job.stalled -[always]-> job.succeeded",
        "job.stalled -[always]-> job.failed",
        "job.stalled -[always]-> job.running",
        "job.succeeded.recording -[finalize.settled]-> job.succeeded.recorded",
        "job.failed.recording -[finalize.settled]-> job.failed.recorded",
        // An end refused for a redrive it had not counted: the job runs again.
        "job.succeeded.recording -[results.received]-> job.running",
        "job.failed.recording -[results.received]-> job.running",
      ].sort(),
    );
    const guards = chart.edges.filter((e) => e.source === "job.running" && e.event === "always");
    expect(guards.map((e) => e.guard)).toEqual(["and(allAnswered, withinTolerance)", "allAnswered"]);
  });
});

describe("token roles", () => {
  it("lets operate do what read does, and nothing include worker", () => {
    const roles = ["worker", "read", "operate"] as const;
    const grants = roles.flatMap((held) =>
      roles.filter((n) => roleGrants(held, n)).map((n) => `${held}>${n}`),
    );
    expect(grants).toEqual(["worker>worker", "read>read", "operate>read", "operate>operate"]);
  });

  it("accepts operate in the configuration and still refuses unknown roles", () => {
    expect(parseScope({ identity: "ops", role: "operate", queues: "*" }, 0).role).toBe("operate");
    expect(() => parseScope({ identity: "ops", role: "admin", queues: "*" }, 0)).toThrow(
      /role: must be "worker", "read" or "operate"/,
    );
  });
});
