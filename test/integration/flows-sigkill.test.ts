/**
 * A flow whose only driver is SIGKILLed still finishes (NATS): a child
 * process submits a parent + 2 children flow and drives it alone; it freezes
 * just before its n-th write and is SIGKILLed there (a real death: no
 * give-back, no last write). The test's own runtime (all roles) then
 * finishes the flow. Oracles: the workers' ledger (each task ran exactly
 * once, the parent after both children ended), and the jobs and flows
 * buckets read raw (no node's job without its flow).
 */
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { flowNodeOfKey } from "../../src/kernel/flow-record.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { startChild } from "../harness/child-processes.ts";
import { liveEntries } from "../harness/kv-keys.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { waitUntil } from "../harness/wait.ts";

let nats: NatsServerHandle;
beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.dispose();
});

const keysWithValues = async (bucket: string) => {
  const nc = await connect({ servers: nats.url });
  try {
    // Records only: a flow's mark (`live.<id>`) is none.
    return (await liveEntries(nc, bucket))
      .filter(({ key }) => !key.startsWith("live."))
      .map(({ entry }) => entry.json<Record<string, unknown>>());
  } finally {
    await nc.close();
  }
};

describe("a flow's driver SIGKILLed", () => {
  // Before the record (nothing stored), before the nodes are marked, mid-children, before the parent's submit.
  for (const freezeAt of ["1", "2", "submit:child1", "submit:parent"]) {
    it(`at its write ${freezeAt}: another runtime finishes the flow, each task once`, {
      timeout: 30_000,
    }, async () => {
      const prefix = `kill${freezeAt.replace(/\W/g, "_")}`;
      const ledger: Array<{
        queue: string;
        jobId: string;
        index: number;
        startedAt: number;
        endedAt: number;
      }> = [];
      const runtimes: Runtime[] = [];
      const worker = await createRuntime({
        servers: nats.url,
        prefix,
        roles: ["worker"],
        logger: silentLogger(),
      });
      runtimes.push(worker);
      for (const queue of ["count", "sum"])
        worker.workers.start<{ ms?: number }, number>({
          queue,
          handler: async (task) => {
            const entry = { queue, jobId: task.jobId, index: task.index, startedAt: Date.now(), endedAt: 0 };
            ledger.push(entry);
            await new Promise((resolve) => setTimeout(resolve, task.payload.ms ?? 0));
            entry.endedAt = Date.now();
            return task.index;
          },
        });
      const child = startChild("flow-driver", process.cwd(), "test/fixtures/flow-driver.ts", [
        nats.url,
        prefix,
        "f1",
        freezeAt,
      ]);
      try {
        const frozen = await child.waitFor((l) => l.event === "frozen", "the driver frozen", 20_000);
        if (!/^\d+$/.test(freezeAt)) expect(frozen.at).toBe(freezeAt);
        await child.kill("SIGKILL");
        const flows = await keysWithValues(`${prefix}_flows`);
        const jobs = await keysWithValues(`${prefix}_jobs`);
        for (const job of jobs) {
          const node = flowNodeOfKey(job.idempotencyKey as string | undefined);
          expect(
            flows.map((f) => f.id),
            `job of ${node?.name} without its flow`,
          ).toContain(node?.flowId);
        }
        const rt = await createRuntime({
          servers: nats.url,
          prefix,
          logger: silentLogger(),
          jobs: { leaseMs: 1000 },
        });
        runtimes.push(rt);
        if (flows.length === 0) {
          expect(frozen.at).toBe("record");
          expect(jobs).toHaveLength(0);
          expect(await rt.flows.get("f1")).toBeUndefined();
          return;
        }
        // Nobody asks for the flow: the new runtime's driver finds it by itself (its sweep). Read raw.
        await waitUntil(
          async () => (await keysWithValues(`${prefix}_flows`)).some((f) => f.status === "succeeded"),
          { timeoutMs: 15_000, intervalMs: 200, message: "the flow's record says succeeded" },
        );
        const end = await (await rt.flows.get("f1"))?.done();
        expect(end?.status).toBe("succeeded");
        const ids = Object.values(end?.nodes ?? {}).map((n) => n.jobId);
        await waitUntil(() => ledger.length >= 4, { timeoutMs: 5000, message: "every task ran" });
        expect(ledger.map((e) => `${ids.indexOf(e.jobId)}.${e.index}`).sort()).toEqual([
          "0.0",
          "0.1",
          "1.0",
          "2.0",
        ]);
        const parent = ledger.find((e) => e.queue === "sum");
        expect(parent?.startedAt).toBeGreaterThanOrEqual(
          Math.max(...ledger.filter((e) => e.queue === "count").map((e) => e.endedAt)),
        );
      } finally {
        await child.kill("SIGKILL");
        for (const rt of runtimes) await rt.stop();
      }
    });
  }
});
