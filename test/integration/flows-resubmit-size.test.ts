/**
 * A flow stored by a version that checked its size less (or under a larger
 * max payload) is still that flow: submitted again with the same request it
 * answers its handle, not an `InvalidArgument` for a size it already has.
 * The broker tells the first submit a max payload of 1 MB and the second
 * 16 KiB; the flow's record, as stored, is the oracle that only one exists.
 */
import { expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createTestRuntime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";

it("a resubmit of a stored flow larger than the submit now accepts gets its handle", async () => {
  const server = createMemoryServer();
  let told = 1024 * 1024;
  const { broker } = spiedBroker(createMemoryBroker({ server }), (name, _n, _args, call) =>
    name === "maxPayload" ? Promise.resolve(told) : call(),
  );
  const rt = await createTestRuntime({ name: "a", broker, logger: silentLogger() });
  try {
    const request = {
      id: "big",
      jobs: {
        a: { queue: "unserved", tasks: ["x".repeat(9000)] },
        b: { queue: "unserved", tasks: ["y".repeat(7000)] },
      },
    };
    const first = await rt.flows.submit(request);
    told = 16 * 1024;
    const again = await rt.flows.submit(request);
    expect(again.id).toBe(first.id);
    expect(
      memoryServerState(server)
        .flows.live()
        .filter((e) => e.key === "big"),
    ).toHaveLength(1);
    // A new flow of that size is refused under the smaller max payload.
    await expect(rt.flows.submit({ ...request, id: "big2" })).rejects.toMatchObject({
      _tag: "InvalidArgument",
    });
    await first.cancel("done");
  } finally {
    await rt.stop();
  }
});
