/**
 * A/B of two source trees in one process, interleaved, against one server:
 *   npx tsx bench/compare.ts --base ../other-checkout [--this ../another] [--pairs 6] [--n 20000] [--raw]
 * Runs jetstate from `--base` (its src/index.ts) and from `--this` (default:
 * this checkout) in turn, `--pairs` times each (plus raw JetStream with
 * --raw), and prints the medians. On a busy machine this is steadier than
 * comparing two bench runs. A checkout needs its package.json (ESM) and
 * node_modules (a symlink will do).
 */
import { parseArgs } from "node:util";
import { startNatsServer } from "../test/harness/nats-server.ts";
import { runJetstate } from "./jetstate-e2e.ts";
import { loadCheckout } from "./lib/checkout.ts";
import { createRuntime } from "./lib/jetstate.ts";
import { serverCpuClock } from "./lib/server.ts";
import { median, round } from "./lib/stats.ts";
import type { ThroughputRun } from "./lib/throughput.ts";
import { runRaw } from "./raw-jetstream.ts";

const { values } = parseArgs({
  options: {
    base: { type: "string" },
    this: { type: "string" },
    pairs: { type: "string", default: "6" },
    n: { type: "string", default: "20000" },
    workers: { type: "string", default: "1" },
    concurrency: { type: "string", default: "50" },
    raw: { type: "boolean", default: false },
  },
});
if (!values.base) throw new Error("usage: compare.ts --base <checkout dir> [--pairs 6] [--n 20000] [--raw]");
const base = await loadCheckout(values.base);
const here = values.this ? await loadCheckout(values.this) : createRuntime;

const n = Number(values.n);
const shape = { workers: Number(values.workers), concurrency: Number(values.concurrency) };
const server = await startNatsServer();
const serverCpu = serverCpuClock(server);
const runs = new Map<string, ThroughputRun[]>();
const record = (name: string, run: ThroughputRun) => runs.set(name, [...(runs.get(name) ?? []), run]);
try {
  for (const create of [base, here])
    await runJetstate({ url: server.url, n: 2000, rep: -1, shape, createRuntime: create });
  for (let rep = 0; rep < Number(values.pairs); rep++) {
    if (values.raw) record("raw", await runRaw({ url: server.url, n, rep, serverCpu }));
    record("base", await runJetstate({ url: server.url, n, rep, shape, serverCpu, createRuntime: base }));
    record("this", await runJetstate({ url: server.url, n, rep, shape, serverCpu, createRuntime: here }));
  }
} finally {
  await server.dispose();
}
const m = (list: ThroughputRun[], pick: (r: ThroughputRun) => number) => round(median(list.map(pick)), 1);
for (const [name, list] of runs) {
  console.log(
    `${name.padEnd(5)} ${String(m(list, (r) => r.tasksPerSec)).padStart(7)} tasks/s, total ${m(list, (r) => r.seconds * 1000)} ms ` +
      `(publish/submit ${m(list, (r) => r.phasesMs.publish)}, tasks ${m(list, (r) => r.phasesMs.tasks)}), ` +
      `client ${m(list, (r) => r.cpuMicrosPerTask)} µs/task, server ${m(list, (r) => r.serverCpuMicrosPerTask ?? Number.NaN)} µs/task`,
  );
}
