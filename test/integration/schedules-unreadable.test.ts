/**
 * One schedule record this version cannot read (a newer version's, one
 * edited by hand), or whose rule it cannot compute (a bad cron or time zone,
 * a period of 0), does not stop the others: the scheduler leaves it out and
 * says so once, and the readable schedule fires on, whatever the order the
 * store lists them in. On both stores: the
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
import { waitUntil } from "../harness/wait.ts";

const unreadable = JSON.stringify({ v: 2, id: "other" });
/** Records of this version whose rule only the scheduler finds bad: written before the good one. */
const record = (id: string, rule: unknown) =>
  JSON.stringify({
    v: 1,
    id,
    rule,
    missed: "skip",
    job: { queue: "s", tasks: [1] },
    since: 0,
    createdAt: 0,
    updatedAt: 0,
  });
const badRules = {
  badcron: { cron: "not a cron" },
  badzone: { cron: "* * * * *", timezone: "Nowhere/Else" },
  // A rule whose ticks never end (x / 0): the scheduler must refuse it, not loop on it.
  zero: { everyMs: 0 },
};

describe.each(["memory", "nats"] as const)("an unreadable schedule record (%s)", (kind) => {
  let nats: NatsServerHandle | undefined;
  let rt: Runtime;
  let writeRaw: (key?: string, value?: string) => Promise<void>;
  beforeAll(async () => {
    if (kind === "memory") {
      const server = createMemoryServer();
      rt = await createTestRuntime({ name: "s", broker: createMemoryBroker({ server }) });
      writeRaw = async (key = "other", value = unreadable) =>
        void memoryServerState(server).schedules.put("test", key, value);
    } else {
      const server = await startNatsServer();
      nats = server;
      rt = await createRuntime({ servers: server.url, name: "s", logger: silentLogger() });
      writeRaw = async (key = "other", value = unreadable) => {
        const nc = await connect({ servers: server.url });
        await (await new Kvm(nc).open("jetstate_schedules")).put(key, value);
        await nc.close();
      };
    }
    // Listed before the good schedule (first written), so a pass meets them first. (An upsert
    // and its removal make the store.)
    await rt.schedules.upsert({ id: "first", everyMs: 60_000, job: { queue: "s", tasks: [1] } });
    await rt.schedules.remove("first");
    for (const [id, rule] of Object.entries(badRules)) await writeRaw(id, record(id, rule));
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
    // Five more ticks of the good schedule fire with the unreadable record beside it.
    await waitUntil(() => fired - before >= 5, {
      timeoutMs: 10_000,
      message: "the good schedule fires five more times past the unreadable record",
    });
    // The API's own list still says a record is unreadable (the first it meets: zero's period).
    await expect(rt.schedules.list()).rejects.toThrow(/schedule record (other|zero) is unreadable/);
  });
});
