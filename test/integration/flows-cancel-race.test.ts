/**
 * A flow cancelled from another runtime while its driver is submitting one
 * of its jobs: the cancel's step finds no job for the node yet and writes it
 * cancelled, the flow settles; then the submit lands. The driver that
 * submitted it must cancel that job: nothing else looks at a settled flow.
 * Runtime A drives (its job record's create is held until B's cancel has
 * answered); runtime B cancels (its driver never submits). No worker: a job
 * left running would run forever; the oracle is the job's record as stored.
 */
import { describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { partsOf } from "../../src/api/runtime.ts";
import { decodeFlowRecord } from "../../src/kernel/flow-record.ts";
import type { JobRecord } from "../../src/kernel/job-record.ts";
import { decodeRecord } from "../../src/kernel/job-record-codec.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil } from "../harness/wait.ts";

describe("a flow cancelled while one of its jobs is being submitted", () => {
  /**
   * A drives, B cancels; `aStopsAtCancel`: A fails at its step's cancel (as
   * if it died after its submit landed): no step of A cancels the job, the
   * runtimes woken by its record must.
   */
  const race = async (aStopsAtCancel: boolean) => {
    const server = createMemoryServer();
    // x's record is created once B's cancel has answered: the submit lands after the cancel.
    const cancelAnswered = gate();
    const { broker } = spiedBroker(createMemoryBroker({ server }), (name, _n, args, call) => {
      if (name !== "createRecord" || (args[0] as JobRecord).queue !== "slow") return call();
      return cancelAnswered.opened.then(call);
    });
    const a = await createTestRuntime({ name: "a", broker });
    const b = await createTestRuntime({ name: "b", broker: createMemoryBroker({ server }) });
    if (aStopsAtCancel)
      partsOf(a).flows.driver.hook = (point) => {
        if (point === "cancel") throw new Error("A died after its submit landed");
      };
    partsOf(b).flows.driver.hook = (point) => {
      if (point === "submit") throw new Error("B submits nothing here");
    };
    const jobOf = (id: string) => {
      const stored = memoryServerState(server).records.get("test", id)?.value;
      return stored === undefined ? undefined : decodeRecord(stored);
    };
    const flowOf = () => {
      const stored = memoryServerState(server).flows.get("test", "f1")?.value;
      return stored === undefined ? undefined : decodeFlowRecord(stored as string);
    };
    try {
      // Not awaited: a submit returns once its first step (x's submit, held) is over.
      const submitted = a.flows.submit({ id: "f1", jobs: { x: { queue: "slow", tasks: [1] } } });
      await waitUntil(() => flowOf()?.nodes.x?.status === "submitting", {
        timeoutMs: 5000,
        message: "A submits x",
      });
      const cancelled = await (await b.flows.get("f1"))?.cancel("stop");
      expect(cancelled?.status).toBe("cancelled");
      cancelAnswered.open();
      await submitted.catch(() => undefined);
      const jobId = flowOf()?.nodes.x?.jobId as string;
      // A's submit lands after the cancel: the job must end, cancelled, as its record is stored.
      await waitUntil(() => jobOf(jobId) !== undefined, { timeoutMs: 5000, message: "x's job made" });
      await waitUntil(() => jobOf(jobId)?.status === "failed", {
        timeoutMs: 10_000,
        message: () => `x's job ended; stored: ${JSON.stringify(jobOf(jobId))}`,
      });
      expect(jobOf(jobId)?.reason).toContain("flow cancelled");
    } finally {
      cancelAnswered.open();
      await b.stop();
      await a.stop();
    }
  };

  it("has that job cancelled once it lands", { timeout: 20_000 }, () => race(false));

  it(
    "has that job cancelled by another runtime when its driver stops before its cancel",
    { timeout: 20_000 },
    () => race(true),
  );
});
