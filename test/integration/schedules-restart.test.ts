/**
 * A schedule survives a restart of the server (SIGKILL, same store) and of
 * every runtime: the runtime that made it stops, the server is killed and
 * started again, and a runtime started afterwards, which never saw the
 * upsert, fires its next ticks. Oracles: the raw KV entry and the raw job
 * records read by the test's own client, and the handler's ledger of ticks.
 */
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scheduleOfKey } from "../../src/kernel/schedule-record.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { rawJobRecords } from "../harness/raw-job-records.ts";
import { natsPool, type RuntimePool } from "../harness/runtime-pools.ts";
import { waitUntil } from "../harness/wait.ts";

describe("schedules across a server restart (NATS)", () => {
  let server: NatsServerHandle;
  let runtimes: RuntimePool;
  const runtime = (name: string) => runtimes.runtime(name);
  beforeAll(async () => {
    server = await startNatsServer();
    runtimes = natsPool(server.url);
  });
  afterAll(async () => {
    await runtimes?.stop();
    await server?.dispose();
  });

  it("a runtime started after the server's restart fires the stored schedule's next ticks, each once", async () => {
    const before = await runtime("before");
    await before.admin.provision(["tick"]);
    await before.schedules.upsert({ id: "every400", everyMs: 400, job: { queue: "tick", tasks: [1] } });
    await before.stop();
    const stoppedAt = Date.now();

    await server.kill();
    await server.restart();

    const raw = await connect({ servers: server.url });
    try {
      const entry = await (await new Kvm(raw).open("jetstate_schedules")).get("every400");
      expect(entry?.json()).toMatchObject({ v: 1, id: "every400", rule: { everyMs: 400 } });

      const after = await runtime("after");
      const handled: number[] = [];
      after.workers.start({
        queue: "tick",
        handler: async (task) => {
          const from = scheduleOfKey((await after.jobs.record(task.jobId))?.idempotencyKey);
          if (from) handled.push(from.tick);
          return "ok";
        },
      });
      await waitUntil(() => handled.length >= 5, {
        timeoutMs: 15_000,
        message: "5 ticks handled after the restart",
      });
      const ticks = (await rawJobRecords(raw, "jetstate_jobs"))
        .map((r) => scheduleOfKey(r.idempotencyKey))
        .flatMap((from) => (from?.scheduleId === "every400" ? [from.tick] : []))
        .filter((tick) => tick > stoppedAt)
        .sort((a, b) => a - b);
      // Fired after the restart, on the rule's grid, none twice (a job per tick, whoever fired it).
      expect(ticks.length).toBeGreaterThanOrEqual(5);
      expect(new Set(ticks).size).toBe(ticks.length);
      for (const tick of ticks) expect(tick % 400).toBe(0);
      const handledAfter = handled.filter((t) => t > stoppedAt).sort((a, b) => a - b);
      expect(new Set(handledAfter).size).toBe(handledAfter.length);
    } finally {
      await raw.close();
    }
  });

  it("a runtime that listed the schedules before the server came back empty lists and fires the new ones", async () => {
    // A bucket of its own: the case above left a schedule and its ticks' writes in it.
    await server.restartEmpty();
    const rt = await runtime("kept");
    await rt.admin.provision(["tock"]);
    // A daily schedule (its record the bucket's first message), listed: its listing is kept.
    await rt.schedules.upsert({ id: "daily", cron: "0 3 * * *", job: { queue: "tock", tasks: [1] } });
    expect((await rt.schedules.list()).map((s) => s.id)).toEqual(["daily"]);
    await server.restartEmpty();
    await rt.admin.provision(["tock"]);
    // The new bucket's first message has the sequence the old one's listing was read at.
    await rt.schedules.upsert({ id: "often", everyMs: 300, job: { queue: "tock", tasks: [1] } });
    const raw = await connect({ servers: server.url });
    try {
      // The server holds only the new schedule (read raw).
      const kv = await new Kvm(raw).open("jetstate_schedules");
      expect((await kv.get("often"))?.operation).toBe("PUT");
      expect(await kv.get("daily")).toBeNull();
      expect((await rt.schedules.list()).map((s) => s.id)).toEqual(["often"]);
      const handled: string[] = [];
      rt.workers.start({
        queue: "tock",
        handler: (task) => {
          handled.push(task.jobId);
          return "ok";
        },
      });
      await waitUntil(() => handled.length >= 2, {
        timeoutMs: 10_000,
        message: "the new schedule's ticks run",
      });
      await rt.schedules.remove("often");
    } finally {
      await raw.close();
    }
  }, 30_000);
});
