/**
 * What a small job costs in record reads and writes, counted at the broker
 * port (the oracle: the calls the broker received, not the job's view of
 * itself). A job of one task is committed by its submit, which writes it
 * `running` with no answer counted: the job's own start must not read the
 * record again only to find nothing to write.
 */
import { describe, expect, it } from "vitest";
import { createTestRuntime, partsOf } from "../../src/api/runtime.ts";

describe("record calls of a one-task job on the memory broker", () => {
  it("are the submit's create and commit, and the end's read and write", async () => {
    const rt = await createTestRuntime();
    const { broker } = partsOf(rt);
    const calls: string[] = [];
    const counted = broker as unknown as Record<string, (...args: unknown[]) => unknown>;
    for (const name of ["createRecord", "getRecord", "updateRecord"]) {
      const call = counted[name]!.bind(broker);
      counted[name] = (...args: unknown[]) => {
        calls.push(name);
        return call(...args);
      };
    }
    const worker = rt.workers.start<number, number>({ queue: "q", handler: (t) => t.payload * 2 });
    const job = await rt.jobs.submit<number, number>({ queue: "q", tasks: [21] });
    expect(await job.done()).toMatchObject({ status: "succeeded", done: 1 });
    await worker.stop();
    await rt.stop();
    expect(calls).toEqual(["createRecord", "updateRecord", "getRecord", "updateRecord"]);
  });
});
