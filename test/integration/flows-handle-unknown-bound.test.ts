/**
 * A handle `rt.flows.get("f1")` gave while this runtime's submit of f1 was
 * under way, when the record's create fails without landing and the
 * read-back fails too (its ~1.5 s of retries): the submit rejects saying the
 * flow may have been made, and the handle looks for a flow under the id (the
 * create might still land). None ever appears: the handle must still end,
 * failed with the submit's reason, once `orphanMarkMs` (60 s, by the
 * runtime's clock, from the flow's `createdAt`) have passed, not before
 * (the create could land until then), and not never.
 *
 * Memory broker, a manual clock moved past the bound; the oracle is the
 * flows store read raw (no f1 ever) and the handle's `done()`.
 */
import { expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { orphanMarkMs } from "../../src/api/flow-write.ts";
import { OperationTimeout } from "../../src/kernel/errors.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime, ManualClock } from "../../src/testing.ts";
import { spiedBroker } from "../harness/spied-broker.ts";
import { delay, gate, waitUntil, within } from "../harness/wait.ts";

it("a handle of a submit whose outcome stays unknown ends failed once no flow came in time", {
  timeout: 30_000,
}, async () => {
  const server = createMemoryServer();
  const clock = new ManualClock(Date.now());
  const go = gate();
  let aWriting = false;
  let readsFailUntil = 0;
  const { broker } = spiedBroker(createMemoryBroker({ server }), (name, _n, args, call) => {
    if (name === "flows.getFlow" && args[0] === "f1" && Date.now() < readsFailUntil)
      return Promise.reject(
        new OperationTimeout({ message: "read timed out", operation: "getFlow", timeoutMs: 100 }),
      );
    if (name !== "flows.createFlow") return call();
    aWriting = true;
    // Held until the test has its handle; then it fails without landing, and reads are deaf for 2 s.
    return go.opened.then(() => {
      readsFailUntil = Date.now() + 2000;
      throw new OperationTimeout({
        message: "create: outcome unknown",
        operation: "createFlow",
        timeoutMs: 100,
      });
    });
  });
  const a = await createTestRuntime({ name: "a", roles: ["submitter", "supervisor"], broker, clock });
  const stored = () =>
    memoryServerState(server)
      .flows.live()
      .some((e) => e.key === "f1");
  try {
    const submitted = a.flows.submit({ id: "f1", jobs: { mine: { queue: "q", tasks: ["a"] } } });
    await waitUntil(() => aWriting, { timeoutMs: 5000, message: "A's record write under way" });
    const early = await a.flows.get("f1");
    go.open();
    const refused = (await submitted.catch((error: unknown) => error)) as Error;
    expect(refused).toBeInstanceOf(OperationTimeout);
    expect(refused.message).toContain("may have been made");
    // Reads answer again (nothing under f1): the handle still looks, the create might land.
    await delay(1500);
    expect(stored()).toBe(false);
    expect(early?.snapshot().status).toBe("running");
    expect(await within(early!.done(), 300)).toBe("never");
    // Past the bound: it ends, failed with the submit's reason.
    clock.advance(orphanMarkMs);
    const seen = await within(early!.done(), 3000);
    expect(seen).toMatchObject({ id: "f1", status: "failed", nodes: {} });
    expect((seen as { reason?: string }).reason).toBe(`not submitted: ${refused.message}`);
    expect(stored()).toBe(false);
    // And it is let go: asked again, nothing is under f1.
    expect(await a.flows.get("f1")).toBeUndefined();
  } finally {
    go.open();
    await a.stop();
  }
});
