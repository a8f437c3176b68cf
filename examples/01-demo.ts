/**
 * The main job, end to end: 400 "images" to run a model on, 4 workers, some
 * tasks failing transiently (retried), a few permanently (counted failed at
 * once), live progress, a summary. `npm run demo`: on NATS at NATS_URL, else
 * on a nats-server it starts, else in memory (same semantics, no server).
 */
import { pino } from "pino";
import { createRuntime, PermanentError } from "../src/index.ts";
import { findNats } from "./support/local-nats.ts";

const nats = await findNats();
console.log(
  nats
    ? `jetstate demo — broker: NATS JetStream at ${nats.url} (${nats.source})`
    : "jetstate demo — broker: in memory (no NATS_URL and no nats-server binary found)",
);
// The demo's handler fails on purpose, so its redeliveries (logged at warn) are expected:
// LOG_LEVEL=warn shows them, with the attempt of each.
const logger = pino({ level: process.env.LOG_LEVEL ?? "error" });
const rt = await createRuntime(nats ? { servers: nats.url, logger } : { broker: "memory", logger });

type Image = { url: string };
type Detection = { boxes: number };

const broken = new Set([17, 123, 250, 391]); // these URLs 404: retrying cannot help
const workers = Array.from({ length: 4 }, () =>
  rt.workers.start<Image, Detection>({
    queue: "detect",
    concurrency: 8,
    handler: async (task) => {
      await new Promise((r) => setTimeout(r, 30 + Math.random() * 60)); // the "model"
      if (broken.has(task.index)) throw new PermanentError(`404 for ${task.payload.url}`);
      if (task.attempt === 1 && Math.random() < 0.1) throw new Error("GPU busy, try again");
      return { boxes: task.index % 7 };
    },
  }),
);

const tasks = Array.from({ length: 400 }, (_, i) => ({ url: `https://example.invalid/img/${i}.jpg` }));
const job = await rt.jobs.submit<Image, Detection>({
  queue: "detect",
  tasks,
  maxFailures: 0.02,
  backoff: [50],
});
console.log(`submitted job ${job.id}: ${tasks.length} tasks`);

// Updates arrive at most 10 times a second.
const unsubscribe = job.subscribe((s) => {
  const eta = s.etaMs === null ? "?" : `${(s.etaMs / 1000).toFixed(1)} s`;
  console.log(
    `  ${s.status.padEnd(9)} done ${s.done}/${s.total}  failed ${s.failed}  dead ${s.dead}  ${s.throughput}/s  eta ${eta}`,
  );
});

const final = await job.done();
unsubscribe();
let boxes = 0;
for await (const r of job.results()) if (r.ok) boxes += r.result.boxes;
await Promise.all(workers.map((w) => w.stop()));
const retried = workers.reduce((n, w) => n + w.stats().released, 0);
console.log(
  `\n${final.status.toUpperCase()}: ${final.done} done, ${final.failed} failed permanently, ${final.dead} dead, ` +
    `${retried} transient failures retried; ${boxes} boxes detected` +
    (final.reason ? `\nreason: ${final.reason}` : ""),
);
await rt.stop();
await nats?.stop();
