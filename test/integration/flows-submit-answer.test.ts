/**
 * A flow submit whose record's create was stored though its answer was lost
 * (a connection cut at that moment), and whose first read to find out failed
 * too (found by a review): the flow is made, so the submit answers with its
 * handle. It rejected, while the flow ran, and the caller, without its id,
 * could neither follow nor cancel it. The oracle: the flow record read raw
 * from the memory server, and the handlers' ledger.
 */
import { expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { TransientBrokerError } from "../../src/kernel/errors.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";

it("a flow whose record was stored, its answer and the next read lost, is submitted: its handle, one run", async () => {
  const server = createMemoryServer();
  const lost = (what: string) =>
    new TransientBrokerError({ message: `injected: ${what} lost`, operation: "flows" });
  const broker = spiedBroker(createMemoryBroker({ server }), (key, n, _args, call) => {
    // The create is stored, its answer lost; the first read after it fails as well.
    if (key === "flows.createFlow")
      return (call() as Promise<unknown>).then(() => Promise.reject(lost("answer")));
    if (key === "flows.getFlow" && n === 2) return Promise.reject(lost("read"));
    return call();
  }).broker;
  const rt = await createTestRuntime({ name: "submitter", broker });
  const ran: string[] = [];
  const worker = rt.workers.start({
    queue: "q",
    handler: (task) => {
      ran.push(String(task.payload));
      return 1;
    },
  });
  try {
    const flow = await rt.flows.submit({ jobs: { only: { queue: "q", tasks: ["once"] } } });
    expect((await flow.done()).status).toBe("succeeded");
    const stored = memoryServerState(server)
      .flows.live()
      .filter((e) => !e.key.startsWith("live."));
    expect(stored.map((e) => e.key)).toEqual([flow.id]);
    expect(ran).toEqual(["once"]);
  } finally {
    await worker.stop();
    await rt.stop();
  }
});
