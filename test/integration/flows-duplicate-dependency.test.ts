/**
 * A flow whose job names the same dependency twice (`dependsOn: ["a", "a"]`),
 * the one duplicate a flow request can hold (its jobs are an object's keys).
 * Every other bad graph (an unknown dependency, a job depending on itself, a
 * cycle) is an `InvalidArgument` naming the field, with nothing stored. This
 * one is accepted and stored as written (`checkGraph`,
 * src/kernel/flow-record.ts, checks each name, never that it comes once), and
 * the same graph written without the duplicate is then another flow: its
 * resubmit under the id is refused with `IdempotencyConflict` (the digest
 * sorts a job's dependencies, it does not dedupe them). Expected: an
 * `InvalidArgument` naming `jobs.b.dependsOn[1]`, and no flow stored.
 * Review test. Oracle: the flows bucket read raw from the memory server.
 */
import { expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";

it("a dependency named twice is refused naming the field, and nothing is stored", async () => {
  const server = createMemoryServer();
  const rt = await createTestRuntime({ name: "a", broker: createMemoryBroker({ server }) });
  try {
    const outcome = await rt.flows
      .submit({
        id: "dup",
        jobs: { a: { queue: "q", tasks: [1] }, b: { queue: "q", tasks: [1], dependsOn: ["a", "a"] } },
      })
      .then(
        (handle) => `resolved ${handle.id}`,
        (error: Error & { field?: string }) => `${error.name} ${error.field}`,
      );
    const stored = memoryServerState(server)
      .flows.live()
      .map((e) => e.key);
    expect({ outcome, stored }).toEqual({ outcome: "InvalidArgument jobs.b.dependsOn[1]", stored: [] });
  } finally {
    await rt.stop();
  }
});
