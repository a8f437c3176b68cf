/**
 * CPU profiles of jetstate's end-to-end run, whole or one phase:
 *   npx tsx bench/profile.ts [--window run|submit|tasks] [--n 20000] [--reps 3] [--out bench/profiles]
 *   npx tsx bench/top-frames.ts bench/profiles/<file>.cpuprofile
 * `run` covers submit() to done(); `submit` until the job is committed;
 * `tasks` from the commit to done(). One profile per repetition (the first,
 * cold one is usually the least representative). `--side raw` profiles the
 * raw JetStream baseline instead (`submit` is then its publishes, `tasks`
 * its consume and acks).
 * `--checkout <dir>` profiles another checkout's jetstate (see compare.ts).
 * For a whole-process profile use `node --import tsx --cpu-prof bench/profile.ts`.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { startNatsServer } from "../test/harness/nats-server.ts";
import { runJetstate } from "./jetstate-e2e.ts";
import { loadCheckout } from "./lib/checkout.ts";
import type { RunHooks } from "./lib/throughput.ts";
import { runRaw } from "./raw-jetstream.ts";
import { topFrames } from "./top-frames.ts";

const { values } = parseArgs({
  options: {
    side: { type: "string", default: "jetstate" },
    window: { type: "string", default: "run" },
    n: { type: "string", default: "20000" },
    reps: { type: "string", default: "3" },
    workers: { type: "string", default: "1" },
    concurrency: { type: "string", default: "50" },
    out: { type: "string", default: "bench/profiles" },
    checkout: { type: "string" },
  },
});
const window = values.window;
if (window !== "run" && window !== "submit" && window !== "tasks")
  throw new Error("--window run|submit|tasks");

const createRuntime = values.checkout ? await loadCheckout(values.checkout) : undefined;
const session = new Session();
session.connect();
await session.post("Profiler.enable");
await session.post("Profiler.setSamplingInterval", { interval: 100 });
const start = () => session.post("Profiler.start");
const stop = async (rep: number) => {
  const { profile } = await session.post("Profiler.stop");
  mkdirSync(values.out, { recursive: true });
  const file = path.join(values.out, `${values.side}-${window}-${Date.now()}-rep${rep}.cpuprofile`);
  writeFileSync(file, JSON.stringify(profile));
  const top = topFrames(profile as Parameters<typeof topFrames>[0], 12);
  console.log(
    `${file}\n${top.map((f) => `  ${String(f.selfPct).padStart(5)} %  ${f.name}  ${f.where}`).join("\n")}`,
  );
};

const server = await startNatsServer();
try {
  for (let rep = 0; rep < Number(values.reps); rep++) {
    const hooks: RunHooks = {
      started: window === "tasks" ? undefined : start,
      committed: window === "run" ? undefined : window === "submit" ? () => stop(rep) : start,
      ended: window === "submit" ? undefined : () => stop(rep),
    };
    const options = { url: server.url, n: Number(values.n), rep, hooks };
    const shape = { workers: Number(values.workers), concurrency: Number(values.concurrency) };
    const run =
      values.side === "raw"
        ? await runRaw(options)
        : await runJetstate({ ...options, shape, ...(createRuntime ? { createRuntime } : {}) });
    console.log(JSON.stringify(run));
  }
} finally {
  session.disconnect();
  await server.dispose();
}
