/**
 * A worker process for bench/sched-queues.ts:
 *
 *   node --import tsx bench/sched-queues-child.ts <natsUrl> <prefix> <queue,queue…> <concurrency>
 *
 * Each handler sleeps `payload.ms` and prints `{"e":"s"|"x","q","i","at"}`
 * when it starts and ends (`at`: `performance.timeOrigin + performance.now()`).
 * Prints `{"e":"ready"}` once started; stops on a line on stdin.
 */
import { createInterface } from "node:readline";
import { pino } from "pino";
import { createRuntime } from "./lib/jetstate.ts";

const [url, prefix, queues, concurrency] = process.argv.slice(2);
if (!url || !prefix || !queues || !concurrency)
  throw new Error("usage: sched-queues-child.ts <natsUrl> <prefix> <queues> <concurrency>");

const now = () => performance.timeOrigin + performance.now();
const print = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`);
const rt = await createRuntime({
  servers: url,
  prefix,
  name: `bench-queues-${process.pid}`,
  logger: pino({ level: "silent" }),
});
for (const q of queues.split(",")) {
  rt.workers.start<{ ms?: number }, null>({
    queue: q,
    concurrency: Number(concurrency),
    handler: async (task) => {
      print({ e: "s", q, i: task.index, at: now() });
      if (task.payload.ms) await new Promise((resolve) => setTimeout(resolve, task.payload.ms));
      print({ e: "x", q, i: task.index, at: now() });
      return null;
    },
  });
}
print({ e: "ready" });
createInterface({ input: process.stdin }).once("line", () => {
  void rt.stop().then(() => process.exit(0));
});
