/**
 * A flow's driver that dies inside a node's job submit, after the job's
 * record was written `submitting` and before its tasks were published (found
 * by a review): the runtime that drives the flow next finishes that dead
 * submit itself once it is past its commit deadline and the reaper's grace,
 * then submits the node again. No runtime here has the admin role, so no
 * reaper runs. The clock of the runtime that finishes the flow is moved
 * forward instead of waiting out the deadline, and the server's with it (a
 * deadline is judged by the server's clock). Oracles: the flow and job
 * records read raw from the memory server, and the handlers' ledger.
 */
import { expect, it } from "vitest";
import { partsOf } from "../../src/api/runtime.ts";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import { realClock } from "../../src/kernel/clock.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime, ManualClock } from "../../src/testing.ts";
import { rawEntry, rawNodes, submitAndDie } from "../harness/flows-dying-submitter.ts";
import { waitUntil } from "../harness/wait.ts";

/** What the commit deadline (30 s and a little per task) and the reaper's default grace (10 s) add up to, and more. */
const pastDeadlineAndGraceMs = 45_000;

/**
 * After its record is written, the submit is rolled back and made again; after its tasks are
 * published, a lane job is committed (its task is stored), another job rolled back (it has no
 * consumer); after its consumer is made, it is rolled forward.
 */
it.each([SubmitStep.recordCreated, SubmitStep.tasksPublished, SubmitStep.consumerCreated])(
  "a node whose submit died after %s is finished, and submitted again if rolled back; each task runs once",
  async (step) => {
    // The server's clock too: a deadline is judged by the server's stamps and time, and a
    // runtime's clock moved alone is a clock ahead, not time gone by.
    const clock = new ManualClock(Date.now());
    const server = createMemoryServer({ clock });
    const raw = (bucket: "flows" | "records", key: string) => rawEntry(server, bucket, key);
    const flowNodes = () => rawNodes(server, "f1");

    // A submitter whose every job submit dies after the step: nothing rolled back,
    // and its flow driver dies with it (it writes nothing after: the failed submits are no
    // node's end, as they would be for a submit refused for good).
    // Node a is a lane job (one task), b a job of its own (two tasks).
    await submitAndDie(server, step, {
      id: "f1",
      jobs: { a: { queue: "q", tasks: ["a"] }, b: { queue: "q", tasks: ["b0", "b1"], lane: false } },
    });
    // Every submit died: b's at the step, a's (a lane job, no consumer of its own) there or after.
    for (const name of ["a", "b"]) {
      expect(flowNodes()[name]?.status).toBe("submitting");
      expect(raw("records", flowNodes()[name]?.jobId as string)?.phase).toBe("submitting");
    }

    const ran: string[] = [];
    const w = await createTestRuntime({
      name: "w",
      roles: ["worker"],
      broker: createMemoryBroker({ server }),
    });
    w.workers.start({
      queue: "q",
      concurrency: 4,
      handler: async (task) => {
        ran.push(String(task.payload));
        return 1;
      },
    });
    const b = await createTestRuntime({
      name: "b",
      roles: ["submitter", "supervisor"],
      clock,
      broker: createMemoryBroker({ server }),
    });
    const flow = await b.flows.get("f1");
    // Before the deadline the dead submits may still be alive: a step leaves them be.
    await partsOf(b).flows.driver.wake("f1");
    expect(raw("records", flowNodes().b?.jobId as string)?.phase).toBe("submitting");
    if (step === SubmitStep.recordCreated) expect(ran).toEqual([]);

    clock.advance(pastDeadlineAndGraceMs);
    await waitUntil(() => raw("flows", "f1")?.status !== "running", {
      timeoutMs: 15_000,
      message: "the flow never ended",
    });
    expect(raw("flows", "f1")?.status).toBe("succeeded");
    for (const name of ["a", "b"]) {
      const job = raw("records", flowNodes()[name]?.jobId as string);
      expect(job).toMatchObject({ phase: "committed", status: "succeeded" });
    }
    expect(ran.sort()).toEqual(["a", "b0", "b1"]);
    expect((await flow?.done())?.status).toBe("succeeded");
    await b.stop();
    await w.stop();
  },
  30_000,
);

it("a node whose submit a runtime ten minutes ahead left dead is finished once its window and the grace passed by the server's clock, not ten minutes on", async () => {
  const clock = new ManualClock(Date.now());
  const server = createMemoryServer({ clock });
  const raw = (bucket: "flows" | "records", key: string) => rawEntry(server, bucket, key);
  // Its submitter's clock ten minutes ahead of the server's: its records' deadlines ten minutes on.
  await submitAndDie(
    server,
    SubmitStep.recordCreated,
    { id: "f1", jobs: { b: { queue: "q", tasks: ["b0", "b1"], lane: false } } },
    { clock: { ...realClock, now: () => clock.now() + 600_000 } },
  );
  const jobId = rawNodes(server, "f1").b?.jobId as string;
  expect(raw("records", jobId)?.phase).toBe("submitting");
  const ran: string[] = [];
  const w = await createTestRuntime({ name: "w", roles: ["worker"], broker: createMemoryBroker({ server }) });
  w.workers.start({
    queue: "q",
    handler: async (task) => {
      ran.push(String(task.payload));
      return 1;
    },
  });
  const b = await createTestRuntime({
    name: "b",
    roles: ["submitter", "supervisor"],
    clock,
    broker: createMemoryBroker({ server }),
  });
  await b.flows.get("f1");
  await partsOf(b).flows.driver.wake("f1");
  expect(raw("records", jobId)?.phase).toBe("submitting");
  // The 30 s window and the 10 s grace from the server's stamp of its record: ten minutes short
  // of its deadline as written.
  clock.advance(pastDeadlineAndGraceMs);
  await waitUntil(() => raw("flows", "f1")?.status === "succeeded", {
    timeoutMs: 15_000,
    message: "the flow never succeeded",
  });
  expect(ran.sort()).toEqual(["b0", "b1"]);
  await b.stop();
  await w.stop();
}, 30_000);
