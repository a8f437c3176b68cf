/**
 * Which source files one task passes through, from `submit()` to the last
 * of `results()`: V8's precise coverage (call counts) is reset just before
 * the submit and read just after the results, and every file under src/
 * with a function called in between is listed. One task, one native worker,
 * a real nats-server; a warm-up job first so that start-up code is not
 * counted. docs/architecture.md walks the same path by hand.
 *
 *     npx tsx bench/task-walk.ts
 */
import { Session } from "node:inspector/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startNatsServer } from "../test/harness/nats-server.ts";
import { createRuntime } from "./lib/jetstate.ts";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const session = new Session();
session.connect();
await session.post("Profiler.enable");
await session.post("Profiler.startPreciseCoverage", { callCount: true, detailed: true });

const server = await startNatsServer();
const rt = await createRuntime({ servers: server.url, prefix: "walk", logger: undefined });
const worker = rt.workers.start<number, number>({ queue: "walk", handler: (task) => task.payload * 2 });
const once = async () => {
  const job = await rt.jobs.submit({ queue: "walk", tasks: [21] });
  await job.done();
  const results = [];
  for await (const r of job.results()) results.push(r);
  return results;
};
await once(); // warm-up: start-up code and first-use set-ups are not the task's path
await session.post("Profiler.takePreciseCoverage"); // resets the counts
const results = await once();
const { result } = await session.post("Profiler.takePreciseCoverage");
await worker.stop();
await rt.stop();
await server.dispose();

const files = new Map<string, number>();
for (const script of result) {
  if (!script.url.startsWith("file://")) continue;
  const file = path.relative(root, fileURLToPath(script.url));
  if (!file.startsWith("src/")) continue;
  const called = script.functions.filter((f) => (f.ranges[0]?.count ?? 0) > 0).length;
  if (called > 0) files.set(file, called);
}
const sorted = [...files].sort(([a], [b]) => a.localeCompare(b));
const folders = new Set(sorted.map(([f]) => path.dirname(f)));
for (const [file, functions] of sorted) console.log(`${file.padEnd(48)} ${functions} functions`);
console.log(`\none task (result ${JSON.stringify(results.map((r) => (r.ok ? r.result : r.error)))}):`);
console.log(`${files.size} files in ${folders.size} folders: ${[...folders].sort().join(", ")}`);
process.exit(0);
