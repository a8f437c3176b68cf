/**
 * Recurring jobs across processes (issue #19's target): three runtimes in
 * child processes fire a 1-second schedule (`* * * * * *`) for `durationMs`;
 * one kills itself with SIGKILL right after it logs that it fires its
 * `dieAtFiring`-th tick (mid-tick). The oracle is this process's own watch of
 * the jobs bucket (raw nats.js): each tick's committed job, when it was first
 * seen committed, and how many jobs each tick got.
 *
 *   ticks expected: the ticks in (upsert, end of the window]
 *   fired / duplicated / missed: ticks with one committed job / jobs beyond
 *     the first for a tick / expected ticks with none
 *   latency: tick → its job seen committed (p50, p99, max), ms
 */
import path from "node:path";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { createRuntime } from "../src/api/runtime.ts";
import { ticksBetween } from "../src/api/schedule-rule.ts";
import { silentLogger } from "../src/kernel/logger.ts";
import { scheduleOfKey } from "../src/kernel/schedule-record.ts";
import { type Child, startChild } from "../test/harness/child-processes.ts";
import { round, sleep } from "./lib/stats.ts";
import { uniqueName } from "./lib/tasks.ts";

const root = path.resolve(import.meta.dirname, "..");
const FIXTURE = path.join(root, "test/fixtures/scheduler-child.ts");

export interface SchedCronShape {
  /** How long the schedule runs. @defaultValue 60 s */
  readonly durationMs?: number;
  /** The victim dies at its n-th firing. @defaultValue 30 (mid-run) */
  readonly dieAtFiring?: number;
}

export interface SchedCronResult {
  readonly durationMs: number;
  readonly ticksExpected: number;
  readonly ticksFired: number;
  readonly ticksDuplicated: number;
  readonly ticksMissed: number;
  /** Whether the victim died (SIGKILL) during the run, and the tick it was firing. */
  readonly victimKilled: boolean;
  readonly victimTick?: string;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
  readonly latencyMaxMs: number;
}

const percentile = (sorted: readonly number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;

export async function measureSchedCron(url: string, shape: SchedCronShape = {}): Promise<SchedCronResult> {
  const durationMs = shape.durationMs ?? 60_000;
  const dieAt = shape.dieAtFiring ?? 30;
  const prefix = uniqueName("sc", "cron");
  const queue = "cron";
  const nc = await connect({ servers: url });
  const rt = await createRuntime({
    servers: url,
    prefix,
    name: "bench-sched",
    logger: silentLogger(),
    jobs: { scheduler: false, cleanupIntervalMs: 0, reapIntervalMs: 0 },
  });
  const children: Child[] = [];
  try {
    await rt.admin.provision([queue]);
    rt.workers.start({ queue, concurrency: 16, handler: () => null });
    // Jobs first seen committed, by tick: this process's clock, from its own watch of the bucket.
    const seen = new Map<string, { tick: number; at: number }>();
    const kv = await new Kvm(nc).open(`${prefix}_jobs`);
    const watch = await kv.watch();
    void (async () => {
      for await (const entry of watch) {
        if (entry.operation !== "PUT" || seen.has(entry.key)) continue;
        const record = entry.json<{ queue: string; phase: string; idempotencyKey?: string }>();
        const from = scheduleOfKey(record.idempotencyKey);
        if (record.queue === queue && record.phase === "committed" && from)
          seen.set(entry.key, { tick: from.tick, at: Date.now() });
      }
    })();
    for (const [n, die] of [
      [1, 0],
      [2, 0],
      [3, dieAt],
    ] as const)
      children.push(startChild(`scheduler-${n}`, root, FIXTURE, [url, `sched-${n}`, String(die), prefix]));
    await Promise.all(children.map((c) => c.waitFor((l) => l.event === "ready", "ready", 60_000)));
    const { since } = await rt.schedules.upsert({
      id: "cron",
      cron: "* * * * * *",
      job: { queue, tasks: [1] },
    });
    await sleep(durationMs);
    const end = Date.now();
    await rt.schedules.remove("cron");
    // The last ticks' submits (and a dead submit's rollback, 30 s + the reaper) settle.
    const expected = ticksBetween({ cron: "* * * * * *" }, since, end, 100_000);
    const deadline = Date.now() + 45_000;
    while (Date.now() < deadline) {
      const have = new Set([...seen.values()].map((s) => s.tick));
      if (expected.every((t) => have.has(t))) break;
      await sleep(200);
    }
    watch.stop();
    const victim = children[2]!;
    const victimKilled = victim.process.signalCode === "SIGKILL";
    const victimLine = victim.lines.filter((l) => l.msg === "firing tick").at(-1);
    const inWindow = [...seen.values()].filter((s) => s.tick > since && s.tick <= end);
    const perTick = new Map<number, number>();
    for (const s of inWindow) perTick.set(s.tick, (perTick.get(s.tick) ?? 0) + 1);
    const latencies = inWindow.map((s) => s.at - s.tick).sort((a, b) => a - b);
    return {
      durationMs,
      ticksExpected: expected.length,
      ticksFired: expected.filter((t) => perTick.has(t)).length,
      ticksDuplicated: [...perTick.values()].reduce((sum, n) => sum + n - 1, 0),
      ticksMissed: expected.filter((t) => !perTick.has(t)).length,
      victimKilled,
      ...(victimLine?.tick === undefined ? {} : { victimTick: String(victimLine.tick) }),
      latencyP50Ms: round(percentile(latencies, 0.5)),
      latencyP99Ms: round(percentile(latencies, 0.99)),
      latencyMaxMs: round(latencies.at(-1) ?? Number.NaN),
    };
  } finally {
    for (const child of children) await child.kill("SIGKILL");
    await rt.stop();
    await nc.close();
  }
}
