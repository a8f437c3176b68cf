/**
 * One schedule record this version cannot read (a newer version's, one
 * edited by hand) does not stop the others: the scheduler leaves it out and
 * says so once, and the readable schedule fires on. On both stores: the
 * record is written raw (the memory server's bucket; a raw KV put on NATS).
 * Oracle: the handlers' ledger of ticks handled.
 */
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryServerState } from "../../src/adapters/memory/memory-server.ts";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { createMemoryBroker, createMemoryServer, createTestRuntime } from "../../src/testing.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { delay, waitUntil } from "../harness/wait.ts";

const unreadable = JSON.stringify({ v: 2, id: "other" });

describe.each(["memory", "nats"] as const)("an unreadable schedule record (%s)", (kind) => {
  let nats: NatsServerHandle | undefined;
  let rt: Runtime;
  let writeRaw: () => Promise<void>;
  beforeAll(async () => {
    if (kind === "memory") {
      const server = createMemoryServer();
      rt = await createTestRuntime({ name: "s", broker: createMemoryBroker({ server }) });
      writeRaw = async () => void memoryServerState(server).schedules.put("test", "other", unreadable);
    } else {
      const server = await startNatsServer();
      nats = server;
      rt = await createRuntime({ servers: server.url, name: "s", logger: silentLogger() });
      writeRaw = async () => {
        const nc = await connect({ servers: server.url });
        await (await new Kvm(nc).open("jetstate_schedules")).put("other", unreadable);
        await nc.close();
      };
    }
  });
  afterAll(async () => {
    await rt?.stop();
    await nats?.dispose();
  });

  it("leaves the others firing", async () => {
    let fired = 0;
    rt.workers.start({
      queue: "s",
      concurrency: 4,
      handler: async () => {
        fired++;
        return 1;
      },
    });
    await rt.schedules.upsert({ id: "good", everyMs: 200, job: { queue: "s", tasks: [1] } });
    await waitUntil(() => fired >= 2, { timeoutMs: 5000, message: "the good schedule fires" });
    await writeRaw();
    const before = fired;
    await delay(2000);
    expect(fired - before).toBeGreaterThanOrEqual(5);
    // The API's own list still says the record is unreadable.
    await expect(rt.schedules.list()).rejects.toThrow(/other/);
  });
});
