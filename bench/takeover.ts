/**
 * Takeover with many finished jobs kept: `records` finished job records
 * written straight into the jobs bucket (prefix `jetstate`, as past jobs
 * leave them), then per repetition a job of 400 tasks submitted by a
 * supervisor in a child process (test/fixtures/job-supervisor.ts), SIGKILLed
 * a quarter of the way; another runtime (B, here) takes it over. Measured:
 * from the kill to B's first write of the job's lease (the server's time of
 * the write, from a KV watch), with `leaseMs` 1 s. The floor is the rest of
 * the dead supervisor's lease (up to `leaseMs`) plus up to half a lease
 * until B's next pass. Before that, what supervision costs while nothing
 * happens: CPU of this process (B, whose takeover passes run every half
 * lease, and an idle workers' runtime) and of nats-server, per second, over
 * 5 s with the records kept and no job running.
 */
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { encodeRecord } from "../src/kernel/job-record-codec.ts";
import { silentLogger } from "../src/kernel/logger.ts";
import { finishedRecord } from "../test/harness/finished-records.ts";
import { type Child, killAll, startChild } from "../test/harness/supervisor-child.ts";
import { waitUntil } from "../test/harness/wait.ts";
import { createRuntime } from "./lib/jetstate.ts";
import { median } from "./lib/stats.ts";

export interface TakeoverShape {
  readonly records: number;
  readonly leaseMs: number;
  readonly tasks: number;
}

export async function measureTakeover(
  url: string,
  shape: TakeoverShape,
  reps: number,
  log: (line: string) => void,
  serverCpu?: () => number,
) {
  const { records, leaseMs, tasks } = shape;
  const nc = await connect({ servers: url, name: "bench-takeover" });
  const children: Child[] = [];
  // Workers only: the one runtime that may take over is B.
  const workers = await createRuntime({
    servers: url,
    name: "bench-takeover-workers",
    logger: silentLogger(),
    jobs: { takeOver: false, leaseMs, cleanupIntervalMs: 0 },
  });
  const handled = new Map<string, Set<number>>();
  const worker = workers.workers.start<number, number>({
    queue: "takeover",
    concurrency: 2,
    handler: async (task) => {
      const seen = handled.get(task.jobId) ?? new Set();
      seen.add(task.index);
      handled.set(task.jobId, seen);
      await new Promise((r) => setTimeout(r, 20));
      return task.payload * 3;
    },
  });
  const firstWriteBy = new Map<string, number>();
  try {
    await workers.admin.provision(["takeover"]);
    const js = jetstream(nc);
    const at = Date.now() - 3600_000;
    const started = Date.now();
    for (let from = 0; from < records; from += 1000) {
      await Promise.all(
        Array.from({ length: Math.min(1000, records - from) }, (_, k) => {
          const r = finishedRecord(from + k, at, "takeover");
          return js.publish(`$KV.jetstate_jobs.${r.id}`, encodeRecord(r));
        }),
      );
    }
    log(`takeover: ${records} finished records written in ${Date.now() - started} ms`);
    const watch = await (await new Kvm(nc).open("jetstate_leases")).watch();
    void (async () => {
      for await (const e of watch) {
        if (e.operation !== "PUT") continue;
        const holder = e.json<{ holder: string }>().holder.split(".")[0];
        const key = `${e.key}/${holder}`;
        if (!firstWriteBy.has(key)) firstWriteBy.set(key, e.created.getTime());
      }
    })();

    const idle = await idleCost(url, leaseMs, serverCpu);
    log(
      `takeover: idle with ${records} records kept, CPU ms per second: this process ${idle.clientCpuMsPerSec}, ` +
        `nats-server ${idle.serverCpuMsPerSec ?? "?"}`,
    );
    const takeoverMs: number[] = [];
    for (let rep = 0; rep < reps; rep++) {
      const name = `bench-B${rep}`;
      const b = await createRuntime({
        servers: url,
        name,
        logger: silentLogger(),
        jobs: { leaseMs, cleanupIntervalMs: 0 },
      });
      try {
        await b.jobs.list({ queue: "none" }); // connected
        const a = startChild([url, `bench-A${rep}`, "submit", String(tasks), String(leaseMs)], children);
        const jobId = String((await a.waitFor((l) => l.event === "submitted", "submitted")).jobId);
        await waitUntil(() => (handled.get(jobId)?.size ?? 0) >= tasks / 4, {
          timeoutMs: 60_000,
          message: "a quarter of the job done",
        });
        const killedAt = Date.now();
        a.process.kill("SIGKILL");
        await a.exited;
        await waitUntil(() => firstWriteBy.has(`${jobId}/${name}`), {
          timeoutMs: 120_000,
          message: "B took the job over",
        });
        takeoverMs.push((firstWriteBy.get(`${jobId}/${name}`) ?? Number.NaN) - killedAt);
        const end = await (await b.jobs.get(jobId))?.done();
        if (end?.status !== "succeeded" || end.done !== tasks)
          throw new Error(`takeover: the job ended ${end?.status} with ${end?.done} of ${tasks}`);
        log(`takeover rep ${rep}: ${takeoverMs.at(-1)} ms from the kill to B's lease (leaseMs ${leaseMs})`);
      } finally {
        await b.stop();
      }
    }
    return { shape, idle, takeoverMs, medianMs: median(takeoverMs) };
  } finally {
    await killAll(children);
    await worker.stop();
    await workers.stop();
    await nc.close();
  }
}

/** CPU per second over 5 s with a supervising runtime up and no job running. */
const idleCost = async (url: string, leaseMs: number, serverCpu?: () => number) => {
  const b = await createRuntime({
    servers: url,
    name: "bench-idle",
    logger: silentLogger(),
    jobs: { leaseMs, cleanupIntervalMs: 0 },
  });
  try {
    await b.jobs.list({ queue: "none" }); // connected
    // Not the start: a runtime's record watch first reads every record kept (~1.1 s of CPU with
    // 100,000 here), once; what is measured is what supervision costs afterwards, every second.
    await new Promise((r) => setTimeout(r, 5000));
    const client = process.cpuUsage();
    const server = serverCpu?.();
    const started = performance.now();
    await new Promise((r) => setTimeout(r, 5000));
    const seconds = (performance.now() - started) / 1000;
    const used = process.cpuUsage(client);
    const perSec = (micros: number) => Math.round(micros / 1000 / seconds);
    return {
      clientCpuMsPerSec: perSec(used.user + used.system),
      serverCpuMsPerSec: server === undefined || !serverCpu ? null : perSec(serverCpu() - server),
    };
  } finally {
    await b.stop();
  }
};

export type TakeoverResult = Awaited<ReturnType<typeof measureTakeover>>;
