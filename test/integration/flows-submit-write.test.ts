/**
 * `rt.flows.submit()` either rejects and nothing of the flow runs, or
 * resolves with its handle. Its writes are a mark, the record, and the mark
 * again; the record is the commit point. A failure after it (the second
 * mark, or a create whose answer was lost though it landed) must not be
 * reported as a failed submit while the flow runs anyway, under an id the
 * caller never learns. Oracle: the worker's ledger and the stored flow.
 */
import { describe, expect, it } from "vitest";
import { createTestRuntime } from "../../src/api/runtime.ts";
import { OperationTimeout, PermanentBrokerError } from "../../src/kernel/errors.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { waitUntil } from "../harness/wait.ts";

const cases = {
  "the second mark fails": (name: string, n: number) =>
    name === "flows.markLive" && n === 2
      ? new PermanentBrokerError({ operation: "flow.mark", message: "refused" })
      : undefined,
  "the create lands but its answer is lost": (name: string) =>
    name === "flows.createFlow"
      ? new OperationTimeout({ operation: "flow.create", message: "no answer", timeoutMs: 1 })
      : undefined,
};

describe.each(Object.entries(cases))("a flow submit where %s", (_name, failure) => {
  it("resolves with the flow it made, which runs once", { timeout: 15_000 }, async () => {
    const server = createMemoryServer();
    const { broker } = spiedBroker(createMemoryBroker({ server }), (name, n, _args, call) => {
      const error = failure(name, n);
      if (!error) return call();
      // The write happens; what the caller hears is the failure.
      return Promise.resolve(call()).then(() => Promise.reject(error));
    });
    const rt = await createTestRuntime({ name: "a", broker });
    const handled: number[] = [];
    rt.workers.start<number, number>({ queue: "q", handler: (task) => handled.push(task.payload) });
    try {
      const submitted = await rt.flows
        .submit({ jobs: { only: { queue: "q", tasks: [5] } } })
        .catch((error: unknown) => error);
      await waitUntil(() => handled.length > 0, { timeoutMs: 5000, message: "the flow's job ran" }).catch(
        () => undefined,
      );
      // Ran: then the submit must have said so, with the flow's handle.
      expect(handled).toContain(5);
      expect(submitted).not.toBeInstanceOf(Error);
      expect(await (submitted as Awaited<ReturnType<typeof rt.flows.submit>>).done()).toMatchObject({
        status: "succeeded",
      });
      // Once: the flow has ended (its job's tasks are gone with its end), nothing runs again.
      expect(handled).toEqual([5]);
    } finally {
      await rt.stop();
    }
  });
});
