/**
 * Each tick fires once across processes, one of them killed mid-tick (issue
 * #19 item 2): three runtimes in child processes fire a 1-second schedule
 * for ~12 s; the third kills itself with SIGKILL right after it logs that it
 * fires its 4th tick (it decided to fire; its submit had sent nothing). The
 * oracles are the test's own: the job records read raw with nats.js (one
 * committed job per tick, keyed by the tick) and the ledger of this
 * process's worker (each tick's job handled once). Fixture:
 * test/fixtures/scheduler-child.ts.
 */
import path from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "../../src/api/runtime.ts";
import { ticksBetween } from "../../src/api/schedule-rule.ts";
import { silentLogger } from "../../src/kernel/logger.ts";
import { scheduleOfKey } from "../../src/kernel/schedule-record.ts";
import { alive, type Child, startChild } from "../harness/child-processes.ts";
import { type NatsServerHandle, startNatsServer } from "../harness/nats-server.ts";
import { rawJobRecords } from "../harness/raw-job-records.ts";
import { waitUntil } from "../harness/wait.ts";

const root = path.resolve(import.meta.dirname, "../..");
const FIXTURE = path.join(root, "test/fixtures/scheduler-child.ts");
const queue = "cron1s";
const runMs = 12_000;

describe("a 1-second schedule over three processes, one SIGKILLed mid-tick", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  let rt: Runtime;
  const children: Child[] = [];
  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
    // This process only works and manages: it fires no tick.
    rt = await createRuntime({
      servers: server.url,
      name: "test",
      logger: silentLogger(),
      jobs: { scheduler: false, cleanupIntervalMs: 0, reapIntervalMs: 0 },
    });
  });
  afterAll(async () => {
    for (const child of children) await child.kill("SIGKILL");
    await rt?.stop();
    await nc?.close();
    await server?.dispose();
  });

  const records = async () => (await rawJobRecords(nc, "jetstate_jobs")).filter((r) => r.queue === queue);

  it("every tick in the window fired exactly once, by the raw records and the handlers' ledger", async () => {
    const handled: string[] = [];
    rt.workers.start<unknown, null>({
      queue,
      concurrency: 8,
      handler: (task) => {
        handled.push(task.jobId);
        return null;
      },
    });
    for (const [n, dieAt] of [
      [1, undefined],
      [2, undefined],
      [3, 4],
    ] as const)
      children.push(
        startChild(`scheduler-${n}`, root, FIXTURE, [
          server.url,
          `sched-${n}`,
          ...(dieAt ? [String(dieAt)] : []),
        ]),
      );
    await Promise.all(children.map((c) => c.waitFor((l) => l.event === "ready", "ready", 60_000)));
    const { since } = await rt.schedules.upsert({
      id: "every-second",
      cron: "* * * * * *",
      job: { queue, tasks: ["tick"] },
    });
    const victim = children[2]!;
    await victim.exited;
    expect(alive(victim.pid)).toBe(false);
    const last = victim.lines.filter((l) => l.msg === "firing tick").at(-1);
    expect(last?.key).toMatch(/^schedule:every-second:/);
    await waitUntil(() => Date.now() >= since + runMs, { timeoutMs: runMs + 5000, message: "the run" });
    const end = Date.now();
    const expected = ticksBetween({ cron: "* * * * * *" }, since, end, 100);
    await waitUntil(
      async () => {
        const ticks = new Set((await records()).map((r) => scheduleOfKey(r.idempotencyKey)?.tick));
        return expected.every((t) => ticks.has(t));
      },
      { timeoutMs: 15_000, message: "every tick of the window committed" },
    );
    await rt.schedules.remove("every-second");
    const jobs = (await records()).filter((r) => r.phase === "committed");
    await waitUntil(() => handled.length >= jobs.length, { timeoutMs: 15_000, message: "every job handled" });

    const ticks = jobs.map((r) => scheduleOfKey(r.idempotencyKey)!.tick).sort((a, b) => a - b);
    expect(expected.length).toBeGreaterThanOrEqual(11);
    // Each tick of the window once (none missing, none twice), consecutive after it up to the remove.
    expect(ticks.slice(0, expected.length)).toEqual(expected);
    expect(new Set(ticks).size).toBe(ticks.length);
    for (let n = 1; n < ticks.length; n++) expect(ticks[n]! - ticks[n - 1]!).toBe(1000);
    // The tick the victim died firing is among them, fired by another process.
    expect(ticks).toContain(scheduleOfKey(String(last!.key))!.tick);
    // Each job handled once, and only the ticks' jobs.
    expect([...handled].sort()).toEqual(jobs.map((r) => r.id).sort());
    // No submit left hanging: every record of the queue committed.
    expect((await records()).every((r) => r.phase === "committed")).toBe(true);
  }, 60_000);
});
