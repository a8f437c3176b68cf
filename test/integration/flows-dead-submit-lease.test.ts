/**
 * A node's submit that died (its runtime gone after the job's record and its
 * supervision lease were written, before its tasks) is rolled back by the
 * driver of the flow (flows-dead-submit.test.ts). Its lease goes with it, as
 * the reaper's pass removes the lease of a submit it rolls back: left, the
 * leases bucket (the index of the jobs not over) kept a job that never runs,
 * the dashboard listed it, and only a supervisor's takeover pass removed it
 * (review finding). A lease another runtime holds is left. No runtime here
 * has the supervisor role: no takeover pass removes a lease behind the
 * driver's back. Oracle: the leases bucket read raw from the memory server.
 */
import { expect, it } from "vitest";
import { partsOf } from "../../src/api/runtime.ts";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime, ManualClock } from "../../src/testing.ts";
import { rawEntry, rawNodes, submitAndDie } from "../harness/flows-dying-submitter.ts";
import { waitUntil } from "../harness/wait.ts";

/** What the commit deadline (30 s and a little per task) and the reaper's default grace (10 s) add up to, and more. */
const pastDeadlineAndGraceMs = 45_000;

/** A flow of a lane job (a) and a job of its own (b), whose submits died once their records were written. */
const deadFlow = async () => {
  // The server's clock too: a deadline is judged by the server's stamps and time, and a
  // runtime's clock moved alone is a clock ahead, not time gone by.
  const clock = new ManualClock(Date.now());
  const server = createMemoryServer({ clock });
  await submitAndDie(server, SubmitStep.recordCreated, {
    id: "f1",
    jobs: { a: { queue: "q", tasks: ["a"] }, b: { queue: "q", tasks: ["b0", "b1"] } },
  });
  const jobIds = ["a", "b"].map((name) => rawNodes(server, "f1")[name]?.jobId as string);
  // The dead submits' leases, written beside their records.
  for (const jobId of jobIds) expect(rawEntry(server, "leases", jobId)).toBeDefined();
  const s = await createTestRuntime({
    name: "s",
    roles: ["submitter"],
    clock,
    broker: createMemoryBroker({ server }),
  });
  const flow = await s.flows.get("f1");
  // Before the deadline the dead submits may still be alive: a step leaves them (and their leases) be.
  await partsOf(s).flows.driver.wake("f1");
  for (const jobId of jobIds) expect(rawEntry(server, "records", jobId)?.phase).toBe("submitting");
  return { server, clock, s, flow, jobIds };
};

it("a cancelled flow's node whose dead submit was rolled back keeps no lease", async () => {
  const { server, clock, s, flow, jobIds } = await deadFlow();
  clock.advance(pastDeadlineAndGraceMs);
  const ended = await flow?.cancel("stop");
  expect(ended?.status).toBe("cancelled");
  for (const jobId of jobIds) {
    expect(rawEntry(server, "records", jobId)?.phase).toBe("rolledBack");
    expect(rawEntry(server, "leases", jobId)).toBeUndefined();
  }
  await s.stop();
}, 20_000);

it("a node's dead submit rolled back keeps no lease until it is submitted again", async () => {
  const { server, clock, s, jobIds } = await deadFlow();
  // The driver dies after its rollback, before it submits the nodes again.
  partsOf(s).flows.driver.hook = (point) => {
    if (point === "submit") throw new Error("driver died before its resubmit");
  };
  clock.advance(pastDeadlineAndGraceMs);
  await partsOf(s).flows.driver.wake("f1");
  for (const jobId of jobIds) {
    expect(rawEntry(server, "records", jobId)?.phase).toBe("rolledBack");
    expect(rawEntry(server, "leases", jobId)).toBeUndefined();
  }
  // The next step submits them again: each a lease of its own, released at its end.
  partsOf(s).flows.driver.hook = undefined;
  const w = await createTestRuntime({ name: "w", roles: ["worker"], broker: createMemoryBroker({ server }) });
  w.workers.start({ queue: "q", handler: async () => 1 });
  await partsOf(s).flows.driver.wake("f1");
  await waitUntil(() => rawEntry(server, "flows", "f1")?.status === "succeeded", {
    timeoutMs: 10_000,
    message: "the flow never succeeded",
  });
  await waitUntil(() => jobIds.every((jobId) => rawEntry(server, "leases", jobId) === undefined), {
    timeoutMs: 5000,
    message: "the resubmitted jobs' leases were not released",
  });
  await w.stop();
  await s.stop();
}, 20_000);

it("a lease another runtime holds is left when the dead submit is rolled back", async () => {
  const { server, clock, s, flow, jobIds } = await deadFlow();
  // Another runtime holds b's lease now (as a resubmit's lease, taken beside its claim, would).
  const other = await createTestRuntime({
    name: "o",
    roles: ["submitter"],
    broker: createMemoryBroker({ server }),
  });
  const bJob = jobIds[1] as string;
  expect(await partsOf(other).broker.leases.acquire(bJob, 120_000)).toBe(true);
  const held = rawEntry(server, "leases", bJob);
  clock.advance(pastDeadlineAndGraceMs);
  await flow?.cancel("stop");
  expect(rawEntry(server, "records", bJob)?.phase).toBe("rolledBack");
  expect(rawEntry(server, "leases", bJob)).toEqual(held);
  // a's, run out with its dead runtime, goes.
  expect(rawEntry(server, "leases", jobIds[0] as string)).toBeUndefined();
  await other.stop();
  await s.stop();
}, 20_000);
