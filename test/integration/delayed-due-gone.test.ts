/**
 * The movers' consumer of a queue's delayed stream deleted under a runtime
 * that had set it up (by hand, or a tool): the runtime's next delayed job of
 * the queue still runs. Its mover's loop took the consumer for set up, and
 * each round failed to find it: the job's task stayed held until the job
 * stalled. The oracle: the consumer as the server lists it, and the job's
 * handler's ledger.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { brokerNames, dueConsumer } from "../../src/adapters/names.ts";
import type { Runtime } from "../../src/api/runtime.ts";
import type { NatsServerHandle } from "../harness/nats-server.ts";
import { useNatsRuntime } from "../harness/runtime.ts";
import { waitUntil, within } from "../harness/wait.ts";

const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const names = brokerNames("jetstate");

describe("a queue's delayed consumer deleted under a runtime", () => {
  let server: NatsServerHandle;
  let rt: Runtime;
  useNatsRuntime({ name: "mover", logger, jobs: { cleanupIntervalMs: 0 } }, (started) => {
    ({ server, rt } = started);
  });

  it("is set up again: the next delayed job's task is moved and runs", async () => {
    const ran: string[] = [];
    const worker = rt.workers.start<string, string>({
      queue: "later",
      handler: (task) => {
        ran.push(task.payload);
        return task.payload;
      },
    });
    const nc = await connect({ servers: server.url, name: "raw" });
    try {
      const first = await rt.jobs.submit<string, string>({ queue: "later", tasks: ["first"], delayMs: 200 });
      expect(await within(first.done(), 10_000)).toMatchObject({ status: "succeeded" });
      const jsm = await jetstreamManager(nc);
      await jsm.consumers.delete(names.delayedStream("later"), dueConsumer);
      const second = await rt.jobs.submit<string, string>({
        queue: "later",
        tasks: ["second"],
        delayMs: 200,
      });
      expect(await within(second.done(), 15_000)).toMatchObject({ status: "succeeded", done: 1 });
      expect(ran).toEqual(["first", "second"]);
      await waitUntil(
        async () => (await jsm.consumers.info(names.delayedStream("later"), dueConsumer)) !== undefined,
        {
          timeoutMs: 5000,
          message: "the consumer made again",
        },
      );
    } finally {
      await nc.close();
      await worker.stop();
    }
  }, 60_000);
});
