/**
 * A flow cancelled while a node's submit is dead (its runtime died after the
 * job's record was written, before the job committed): the cancel ended only
 * once that submit passed its commit deadline and the reaper's grace, 40 s on
 * (review finding). Its lease run out (no runtime renews it: its submitter is
 * gone), the driver rolls it back at once: `cancel()` resolves within seconds,
 * the node cancelled as never run, and nothing of that submit runs afterwards,
 * not even once its deadline passed and a reaper looked at every record.
 * Oracles: the flow and job records read raw from the memory server, a
 * worker's ledger of the tasks it ran, and the time `cancel()` took.
 */
import { expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { partsOf } from "../../src/api/runtime.ts";
import { reapSubmits } from "../../src/effects/reap-submits.ts";
import { SubmitStep } from "../../src/effects/submit-job.ts";
import { aheadOfServer } from "../../src/kernel/clock.ts";
import { cancelledInSubmit } from "../../src/kernel/flow-record.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime, ManualClock } from "../../src/testing.ts";
import { rawEntry, rawNodes, submitAndDie } from "../harness/flows-dying-submitter.ts";
import { within } from "../harness/wait.ts";

/** Well under the 40 s the cancel waited, generous for a loaded 2-core machine. */
const promptMs = 10_000;

/**
 * Node a is a lane job (one task), b a job of its own (two tasks). Died after its record, neither
 * submit committed; after its tasks were published, b did not (it has no consumer), a did (its
 * task stored is its commit: it runs, and is cancelled, or ended, as any job of the flow running).
 */
it.each([SubmitStep.recordCreated, SubmitStep.tasksPublished])(
  "a flow cancelled while a node's submit died after %s ends at once; that submit never runs",
  async (step) => {
    const server = createMemoryServer();
    await submitAndDie(server, step, {
      id: "f1",
      jobs: { a: { queue: "q", tasks: ["a"] }, b: { queue: "q", tasks: ["b0", "b1"] } },
    });
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
    // Its clock stays where it is until the cancel ended: no commit deadline passes meanwhile.
    const clock = new ManualClock(Date.now());
    const s = await createTestRuntime({
      name: "s",
      roles: ["submitter"],
      clock,
      broker: createMemoryBroker({ server }),
    });
    const flow = await s.flows.get("f1");
    await partsOf(s).flows.driver.wake("f1");
    const bJob = rawNodes(server, "f1").b?.jobId as string;
    expect(rawEntry(server, "records", bJob)?.phase).toBe("submitting");

    const started = Date.now();
    const ended = await within(flow?.cancel("stop") as Promise<unknown>, promptMs);
    expect(ended, `cancel() had not resolved ${promptMs} ms on`).not.toBe("never");
    expect(Date.now() - started).toBeLessThan(promptMs);
    expect(ended).toMatchObject({ status: "cancelled" });
    expect(rawEntry(server, "flows", "f1")?.status).toBe("cancelled");
    const names = step === SubmitStep.recordCreated ? ["a", "b"] : ["b"];
    for (const name of names) {
      expect(rawNodes(server, "f1")[name]).toMatchObject({ status: "cancelled", reason: cancelledInSubmit });
      expect(rawEntry(server, "records", rawNodes(server, "f1")[name]?.jobId as string)?.phase).toBe(
        "rolledBack",
      );
    }

    // Past every deadline, a step of the flow and a reaper over every record find nothing to finish.
    clock.advance(60_000);
    await partsOf(s).flows.driver.wake("f1");
    const broker = partsOf(s).broker;
    const reaped = await reapSubmits(
      broker,
      () => clock.now(),
      10_000,
      () => aheadOfServer(clock, broker.leases.serverTime()),
    );
    expect(reaped).toEqual({ rolledBack: [], rolledForward: [] });
    // Nothing can run later: the tasks stream, read raw, has no consumer that reads b's tasks
    // (a task runs only once a consumer delivers it), and after recordCreated it holds no task.
    const tasks = memoryServerState(server).tasks;
    const bSubject = memoryServerState(server).names.tasksSubject("q", bJob);
    expect(tasks.consumers().map((c) => c.subject)).not.toContain(bSubject);
    if (step === SubmitStep.recordCreated) expect(tasks.subjects(), "tasks stored").toEqual([]);
    expect(ran.filter((task) => task.startsWith("b"))).toEqual([]);
    if (step === SubmitStep.recordCreated) expect(ran).toEqual([]);
    for (const name of names)
      expect(rawEntry(server, "records", rawNodes(server, "f1")[name]?.jobId as string)?.phase).toBe(
        "rolledBack",
      );
    await s.stop();
    await w.stop();
  },
  30_000,
);

it("a flow cancelled while a node's submit died ends once that submit's lease ran out by its TTL", async () => {
  const server = createMemoryServer();
  await submitAndDie(
    server,
    SubmitStep.recordCreated,
    { id: "f1", jobs: { b: { queue: "q", tasks: ["b0"] } } },
    {
      giveBack: false,
    },
  );
  const bJob = rawNodes(server, "f1").b?.jobId as string;
  // Not given back: its lease says the dead runtime holds it for 300 ms more.
  expect(rawEntry(server, "leases", bJob)?.until).toBeGreaterThan(0);
  const clock = new ManualClock(Date.now());
  const s = await createTestRuntime({
    name: "s",
    roles: ["submitter"],
    clock,
    broker: createMemoryBroker({ server }),
  });
  const flow = await s.flows.get("f1");
  await partsOf(s).flows.driver.wake("f1");
  const cancelled = flow?.cancel("stop") as Promise<unknown>;
  // The lease's TTL, not the commit deadline's 30 s, passes.
  clock.advance(1000);
  const ended = await within(cancelled, promptMs);
  expect(ended, `cancel() had not resolved ${promptMs} ms on`).not.toBe("never");
  expect(rawNodes(server, "f1").b).toMatchObject({ status: "cancelled", reason: cancelledInSubmit });
  expect(rawEntry(server, "records", bJob)?.phase).toBe("rolledBack");
  expect(rawEntry(server, "leases", bJob)).toBeUndefined();
  await s.stop();
}, 30_000);
