/**
 * A handle `rt.flows.get("f1")` gave while A's submit of f1 was under way,
 * when A's record create then lands but its answer is lost
 * (`OperationTimeout`) and A's read-back fails too for longer than its
 * retries (~1.5 s): the submit rejects with the create's error, naming the
 * flow ("may have been made: rt.flows.get("f1") says"). The flow was made,
 * and B's sweep drives it to its end. d7bc53b made such a handle follow the
 * flow under its id when the submit lost to another runtime's; here, where
 * the flow under the id is A's own, the handle stays `failed` ("not
 * submitted: …") while the flow runs and succeeds, and its `done()` says
 * failed. (Its `cancel()` would still cancel the running flow: it reads
 * whatever is under the id.)
 *
 * Oracles: the flow record read raw, W's ledger.
 */
import { describe, expect, it } from "vitest";
import type { Broker } from "../../src/adapters/broker.ts";
import { OperationTimeout } from "../../src/kernel/errors.ts";
import { memoryFlowSide, natsFlowSide } from "../harness/flow-sides.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { gate, waitUntil, within } from "../harness/wait.ts";

describe.each([
  ["memory", memoryFlowSide],
  ["nats", natsFlowSide],
] as const)("a handle got during a submit whose write's outcome stays unknown, on %s", (_k, makeSide) => {
  it("reports the flow made under the id to its end, not failed", { timeout: 60_000 }, async () => {
    const side = await makeSide();
    const go = gate();
    let aWriting = false;
    let readsFailUntil = 0;
    const wrapA = (inner: Broker) =>
      spiedBroker(inner, (name, _n, args, call) => {
        if (name === "flows.getFlow" && args[0] === "f1" && Date.now() < readsFailUntil)
          return Promise.reject(
            new OperationTimeout({ message: "read timed out", operation: "getFlow", timeoutMs: 100 }),
          );
        if (name !== "flows.createFlow") return call();
        aWriting = true;
        // Held until the test has its handle; then stored, its answer lost, and reads deaf for 3 s.
        return go.opened.then(call).then(() => {
          readsFailUntil = Date.now() + 3000;
          throw new OperationTimeout({
            message: "create: outcome unknown",
            operation: "createFlow",
            timeoutMs: 100,
          });
        });
      }).broker;
    const a = await side.runtime("a", ["submitter", "supervisor"], wrapA);
    // B drives flows (its sweep finds the one made).
    await side.runtime("b", ["submitter", "supervisor"]);
    const w = await side.runtime("w", ["worker"]);
    const ran: string[] = [];
    w.workers.start<string, string>({
      queue: "q",
      handler: async (task) => {
        ran.push(task.payload);
        return task.payload;
      },
    });
    try {
      const submitted = a.flows.submit({ id: "f1", jobs: { mine: { queue: "q", tasks: ["a"] } } });
      await waitUntil(() => aWriting, { timeoutMs: 5000, message: "A's record write under way" });
      const early = await a.flows.get("f1");
      go.open();
      const refused = await submitted.catch((error: unknown) => error as Error);
      expect(refused).toBeInstanceOf(OperationTimeout);
      expect((refused as Error).message).toContain("may have been made");
      // The flow was made: B's sweep drives it; its job runs.
      await waitUntil(async () => (await side.storedFlow("f1"))?.status === "succeeded", {
        timeoutMs: 20_000,
        message: "the flow made under f1 succeeded (as stored)",
      });
      expect(ran).toEqual(["a"]);
      const seen = await within(early!.done(), 5000);
      expect(
        seen,
        `the early handle, while the flow under f1 succeeded: ${JSON.stringify(seen)}`,
      ).toMatchObject({
        id: "f1",
        status: "succeeded",
      });
    } finally {
      go.open();
      await side.dispose();
    }
  });
});
